//! The pull loops' puller against a real nats-server: one subscription for every pull request
//! of a loop, the end of each request told apart from the end of an earlier one, and a message
//! that answers a pull the loop gave up on taken by its next pull instead of lost.

mod common;

use anyhow::{Result, ensure};
use async_nats::jetstream::stream;
use common::{JobClient, TestFleet};
use ffleet_runtime::nats::provision::{ConsumerSpec, ensure_consumer};
use ffleet_runtime::nats::pull::{Answer, Puller};
use std::time::{Duration, Instant};

const STREAM: &str = "PULLTEST";

fn what(a: &Answer) -> String {
    match a {
        Answer::Message(m) => format!("message {:?}", m.payload),
        Answer::Empty => "empty".into(),
        Answer::Refused(why) => format!("refused: {why}"),
        Answer::Unanswered => "unanswered".into(),
    }
}

/// The next pull answers with the message `payload`, which is then acked.
async fn take(puller: &mut Puller, payload: &[u8]) -> Result<()> {
    let a = puller
        .pull(Some(Duration::from_secs(2)), Duration::from_secs(5))
        .await;
    let Answer::Message(m) = a else {
        anyhow::bail!("expected message {payload:?}, got {}", what(&a));
    };
    ensure!(m.payload.as_ref() == payload, "got {:?}", m.payload);
    m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test]
async fn a_loops_pulls_share_one_subscription_and_keep_their_answers_apart() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let js = &fleet.ctx().js;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["pulltest.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await?;
    let consumer = ensure_consumer(
        js,
        fleet.ctx().retry,
        ConsumerSpec {
            stream: STREAM,
            durable: "pulltest",
            filter: "pulltest.>".into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 100,
        },
    )
    .await?;
    let mut puller = Puller::new(consumer);
    let limit = Duration::from_secs(5);

    // Nothing waiting: a no-wait pull and an expiring one both end empty, from the server.
    let a = puller.pull(None, limit).await;
    ensure!(matches!(a, Answer::Empty), "no-wait pull: {}", what(&a));
    let started = Instant::now();
    let a = puller.pull(Some(Duration::from_millis(300)), limit).await;
    ensure!(matches!(a, Answer::Empty), "expiring pull: {}", what(&a));
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "the expiry was not told: {:?}",
        started.elapsed()
    );

    // A message waiting is taken.
    js.publish("pulltest.a", "one".into()).await?.await?;
    take(&mut puller, b"one").await?;

    // A pull given up on before its message came: the message, delivered later, is not lost;
    // the loop's next pull takes it, and the abandoned pull's own end (its expiry, which
    // arrives while the next pull waits) does not end the next one.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        puller.pull(Some(Duration::from_millis(800)), limit),
    )
    .await;
    ensure!(
        gave_up.is_err(),
        "the first pull should still have been waiting"
    );
    let started = Instant::now();
    let a = puller.pull(Some(Duration::from_secs(3)), limit).await;
    ensure!(
        matches!(a, Answer::Empty) && started.elapsed() >= Duration::from_secs(2),
        "the next pull ended early ({}, after {:?})",
        what(&a),
        started.elapsed()
    );
    let gave_up = tokio::time::timeout(
        Duration::from_millis(100),
        puller.pull(Some(Duration::from_secs(2)), limit),
    )
    .await;
    ensure!(gave_up.is_err(), "the pull should still have been waiting");
    js.publish("pulltest.b", "two".into()).await?.await?;
    take(&mut puller, b"two").await?;
    Ok(())
}
