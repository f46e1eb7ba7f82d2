//! The pull loop every service runs: `loops` independent workers, each asking for one message at
//! a time (so no message waits in a client buffer while its AckWait runs), handing it to the
//! handler and applying the disposition the handler returns. Each message is handled inside a
//! consumer span continuing the trace the message carries. Every pull reports whether the
//! consumer answered, so a consumer lost in a cluster is re-created (`Durable`) instead of
//! being waited on forever.

use super::NatsError;
use super::ack::{self, Disposition};
use super::durable::Durable;
use super::provision::{ConsumerSpec, ensure_consumer};
use crate::runtime::Ctx;
use crate::telemetry;
use async_nats::jetstream::Message;
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long one pull waits for a message before asking again.
pub const POLL: Duration = Duration::from_secs(2);

/// Ensures the durable consumer `spec` and serves it with `loops` workers until `shutdown` fires
/// and every in-flight message is finished: the whole main loop of a service.
pub async fn serve<H, F>(
    ctx: &Ctx,
    spec: ConsumerSpec<'_>,
    loops: usize,
    shutdown: CancellationToken,
    handler: H,
) -> Result<(), NatsError>
where
    H: Fn(Ctx, Message) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Disposition> + Send,
{
    let consumer = ensure_consumer(&ctx.js, spec).await?;
    let ctx = ctx.clone();
    run(consumer, loops, POLL, shutdown, move |msg| {
        let span = telemetry::spans::consume(ctx.service, &msg);
        handler(ctx.clone(), msg).instrument(span)
    })
    .await;
    Ok(())
}

/// Runs until `shutdown` fires and every in-flight message is finished.
pub async fn run<H, F>(
    consumer: Durable,
    loops: usize,
    wait: Duration,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(Message) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Disposition> + Send,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..loops.max(1) {
        let consumer = consumer.clone();
        let shutdown = shutdown.clone();
        let handler = handler.clone();
        set.spawn(async move {
            while let Some(msg) = next(&consumer, wait, &shutdown).await {
                let d = handler(msg.clone()).await;
                ack::finish(&msg, d).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Waits for the next message; `None` once shutdown fires.
pub async fn next(
    consumer: &Durable,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Option<Message> {
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        if let Some(m) = try_next(consumer, wait, shutdown).await {
            return Some(m);
        }
    }
}

/// One long poll of up to `wait`; `None` when nothing came (or on shutdown / a fetch error,
/// after a short pause).
pub async fn try_next(
    consumer: &Durable,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Option<Message> {
    let started = std::time::Instant::now();
    let pull = consumer.consumer();
    super::ops::count(super::ops::Op::Fetch);
    let batch = tokio::select! {
        b = pull.batch().max_messages(1).expires(wait).messages() => b,
        _ = shutdown.cancelled() => return None,
    };
    let mut batch = match batch {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(consumer = consumer.name(), error = %e, "fetch failed, retrying");
            consumer.failed(&e.to_string()).await;
            pause(shutdown).await;
            return None;
        }
    };
    let item = tokio::select! {
        m = batch.next() => m,
        _ = shutdown.cancelled() => return None,
    };
    match item {
        Some(Ok(m)) => {
            consumer.answered();
            Some(m)
        }
        Some(Err(e)) => {
            consumer.failed(&e.to_string()).await;
            pause(shutdown).await;
            None
        }
        // The server ends an idle pull at `wait`; the client gives up a few seconds later,
        // when nobody answered at all.
        None if started.elapsed() >= wait + UNANSWERED_AFTER => {
            consumer.failed("pull request unanswered").await;
            None
        }
        None => {
            consumer.answered();
            None
        }
    }
}

/// How long past its expiry a pull may end before it counts as unanswered (async-nats gives
/// up 5 s after the expiry when the server never replied).
const UNANSWERED_AFTER: Duration = Duration::from_secs(3);

/// One message if one is waiting right now; `None` at once otherwise.
pub async fn try_now(consumer: &Durable) -> Option<Message> {
    let pull = consumer.consumer();
    super::ops::count(super::ops::Op::Fetch);
    let fetched = tokio::time::timeout(FETCH_NOW_LIMIT, async {
        let mut batch = pull.fetch().max_messages(1).messages().await?;
        batch.next().await.transpose()
    })
    .await;
    match fetched {
        Ok(Ok(m)) => {
            consumer.answered();
            m
        }
        Ok(Err(e)) => {
            consumer.failed(&e.to_string()).await;
            None
        }
        Err(_) => {
            consumer.failed("fetch unanswered").await;
            None
        }
    }
}

/// A no-wait fetch is answered at once by a live consumer.
const FETCH_NOW_LIMIT: Duration = Duration::from_secs(5);

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(500)) => {},
        _ = shutdown.cancelled() => {},
    }
}
