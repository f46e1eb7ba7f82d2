//! The pull loop every service runs: `loops` independent workers, each asking for one message at
//! a time (so no message waits in a client buffer while its AckWait runs), handing it to the
//! handler and applying the outcome the handler returns. Each message is handled inside a
//! consumer span continuing the trace the message carries. Every pull reports whether the
//! consumer answered, so a consumer lost in a cluster is re-created (`Durable`) instead of
//! being waited on forever. Work that holds slots (the encoder) is pulled by `slots`, from the
//! same pulls.

pub mod slots;

use crate::nats::NatsError;
use crate::nats::ack::{self, Outcome};
use crate::nats::durable::Durable;
use crate::nats::provision::{ConsumerSpec, ensure_consumer};
use crate::nats::pull::{Answer, PullError, Puller};
use crate::runtime::Ctx;
use crate::telemetry;
use async_nats::jetstream::Message;
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
    F: Future<Output = Outcome> + Send,
{
    // Waits as long as it takes (for the stream, or a permission these credentials lack).
    let ensure = ensure_consumer(&ctx.js, ctx.retry, spec);
    let Some(consumer) = crate::shutdown::unless_stopped(&shutdown, ensure)
        .await
        .transpose()?
    else {
        return Ok(());
    };
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
    F: Future<Output = Outcome> + Send,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..loops.max(1) {
        let mut puller = Puller::new(consumer.clone());
        let shutdown = shutdown.clone();
        let handler = handler.clone();
        set.spawn(async move {
            while let Some(msg) = next(&mut puller, wait, &shutdown).await {
                let outcome = handler(msg.clone()).await;
                ack::finish(&msg, outcome).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Waits for the next message; `None` once shutdown fires.
pub async fn next(
    puller: &mut Puller,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Option<Message> {
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        if let Some(m) = try_next(puller, wait, shutdown).await {
            return Some(m);
        }
    }
}

/// One long poll of up to `wait`; `None` when nothing came (or on shutdown / a fetch error,
/// after a short pause).
pub async fn try_next(
    puller: &mut Puller,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Option<Message> {
    crate::nats::ops::count(crate::nats::ops::Op::Fetch);
    // The server ends an idle pull at `wait`; a pull nobody answered by a little later was lost.
    let answer = tokio::select! {
        a = puller.pull(Some(wait), wait + UNANSWERED_AFTER) => a,
        _ = shutdown.cancelled() => return None,
    };
    // A consumer that stops answering is re-created, which retries for up to
    // `nats.op_retry_secs` (each try refused, if these credentials may not): the stop does not
    // wait for it. A message that came is still returned (`biased`: settled first).
    let settled = tokio::select! {
        biased;
        s = settle(puller.consumer(), answer, "pull request unanswered") => s,
        _ = shutdown.cancelled() => return None,
    };
    match settled {
        Ok(m) => m,
        Err(why) => {
            // Once per outage, not twice a second per loop while a consumer has no leader.
            let consumer = puller.consumer();
            if consumer.failures() <= 1 {
                tracing::warn!(consumer = consumer.name(), error = %why, "fetch failed, retrying");
            } else {
                tracing::debug!(consumer = consumer.name(), failures = consumer.failures(), error = %why, "fetch failed, retrying");
            }
            pause(shutdown).await;
            None
        }
    }
}

/// Tells the consumer whether its pull was answered; the message, if one came, or the
/// refusal.
async fn settle(
    consumer: &Durable,
    answer: Answer,
    unanswered: &'static str,
) -> Result<Option<Message>, PullError> {
    match answer {
        Answer::Message(m) => {
            consumer.answered();
            Ok(Some(*m))
        }
        Answer::Empty => {
            consumer.answered();
            Ok(None)
        }
        Answer::Refused(why) => {
            consumer.failed(&why).await;
            Err(why)
        }
        Answer::Unanswered => {
            consumer.failed(&unanswered).await;
            Ok(None)
        }
    }
}

/// How long past its expiry a pull may stay unanswered before it counts as lost (a consumer
/// leader that died with it): the server answers an expired pull at once, so a second is room
/// for a loaded machine, and a lost pull costs a consumer no more than its wait and this.
const UNANSWERED_AFTER: Duration = Duration::from_secs(1);

/// One message if one is waiting right now; `None` at once otherwise (or on shutdown, as
/// `try_next`).
pub async fn try_now(puller: &mut Puller, shutdown: &CancellationToken) -> Option<Message> {
    crate::nats::ops::count(crate::nats::ops::Op::Fetch);
    let answer = puller.pull(None, FETCH_NOW_LIMIT).await;
    tokio::select! {
        biased;
        s = settle(puller.consumer(), answer, "fetch unanswered") => s.unwrap_or(None),
        _ = shutdown.cancelled() => None,
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
