//! Following a retained stream (the events stream) by subject without a durable consumer: a
//! live view fed from a point in time on, through an ordered push consumer, which the server
//! forgets when the reader goes, so a reader leaves nothing behind and needs no write grant
//! (`security`'s `reader`).

use super::NatsError;
use super::retry::{self, Patience, Policy};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::{Context, Message};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

async fn open(
    js: &Context,
    policy: Policy,
    patience: Patience,
    stream: &str,
    filter: &str,
    from: DeliverPolicy,
) -> Result<Ordered, NatsError> {
    retry::retry(policy, "ordered consumer", stream, patience, |_| {
        // A fresh inbox each try: a try that timed out may still have made its consumer,
        // which would push into the old one.
        let inbox = js.client().new_inbox();
        async move {
            let s = js.get_stream_no_info(stream).await?;
            let consumer = s
                .create_consumer(OrderedConfig {
                    deliver_subject: inbox,
                    filter_subject: filter.to_owned(),
                    deliver_policy: from,
                    ..OrderedConfig::default()
                })
                .await?;
            Ok::<_, super::BoxError>(consumer.messages().await?)
        }
    })
    .await
}

/// Calls `apply` for every message of `stream` on `filter` stored from `since` on, until `shutdown`
/// fires. A consumer that fails or ends is rebuilt from the sequence after the last message
/// delivered, so none is missed or delivered twice; opening it waits for JetStream as long as
/// it takes, each try bounded by `policy`.
pub async fn follow(
    js: &Context,
    policy: Policy,
    stream: &'static str,
    filter: String,
    since: time::OffsetDateTime,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&Message) + Send + 'static,
) -> Result<(), NatsError> {
    let first = tokio::select! {
        o = open(js, policy, Patience::Forever, stream, &filter, DeliverPolicy::ByStartTime { start_time: since }) => o?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let js = js.clone();
    tokio::spawn(async move {
        let mut messages = first;
        let mut last = 0u64;
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => return,
            };
            let why = match next {
                Some(Ok(m)) => {
                    // A rebuilt consumer starts after the last delivered: anything at or
                    // before it (a consumer of an earlier try still pushing) was applied.
                    let seq = m.info().map_or(0, |i| i.stream_sequence);
                    if seq != 0 && seq <= last {
                        continue;
                    }
                    last = last.max(seq);
                    apply(&m);
                    continue;
                }
                Some(Err(e)) => e.to_string(),
                None => "ended".to_owned(),
            };
            tracing::warn!(stream, filter = %filter, error = %why, from_sequence = last + 1, "stream reader lost, rebuilding");
            tokio::time::sleep(retry::backoff(1)).await;
            let from = if last == 0 {
                DeliverPolicy::ByStartTime { start_time: since }
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                }
            };
            messages = tokio::select! {
                o = open(&js, policy, Patience::Forever, stream, &filter, from) => match o {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(stream, filter = %filter, error = %e, "stream reader not rebuilt: it stops");
                        return;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
        }
    });
    Ok(())
}
