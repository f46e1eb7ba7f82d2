//! Reading a retained stream (the events stream) by subject without a durable consumer:
//! `follow` keeps a live view fed from a point in time on, and `read` takes what is stored now.
//! Both use ordered push consumers, which the server forgets when the reader goes, so a reader
//! leaves nothing behind and needs no write grant (`security`'s `reader`).

use super::NatsError;
use super::retry::{self, Patience, Policy};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::push::{Ordered, OrderedConfig};
use async_nats::jetstream::{Context, Message};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a reader starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The oldest message stored.
    Oldest,
    /// The first message stored at or after this time.
    At(time::OffsetDateTime),
}

async fn open(
    js: &Context,
    policy: Policy,
    patience: Patience,
    stream: &str,
    filter: &str,
    from: DeliverPolicy,
) -> Result<(Ordered, u64), NatsError> {
    let inbox = js.client().new_inbox();
    retry::retry(policy, "ordered consumer", stream, patience, |_| {
        let (inbox, from) = (inbox.clone(), from);
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
            // Matching messages stored when it was made: none, and nothing is coming to wait for.
            let pending = consumer.cached_info().num_pending;
            let messages = consumer.messages().await?;
            Ok::<_, super::BoxError>((messages, pending))
        }
    })
    .await
}

fn deliver_from(start: Start) -> DeliverPolicy {
    match start {
        Start::Oldest => DeliverPolicy::All,
        Start::At(t) => DeliverPolicy::ByStartTime { start_time: t },
    }
}

/// Calls `apply` for every message of `stream` on `filter` from `start` on, until `shutdown`
/// fires. A consumer that fails or ends is rebuilt from the sequence after the last message
/// delivered, so none is missed or delivered twice; opening it waits for JetStream as long as
/// it takes, each try bounded by `policy`.
pub async fn follow(
    js: &Context,
    policy: Policy,
    stream: &'static str,
    filter: String,
    start: Start,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&Message) + Send + 'static,
) -> Result<(), NatsError> {
    let first = tokio::select! {
        o = open(js, policy, Patience::Forever, stream, &filter, deliver_from(start)) => o?.0,
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
                    if let Ok(info) = m.info() {
                        last = last.max(info.stream_sequence);
                    }
                    apply(&m);
                    continue;
                }
                Some(Err(e)) => e.to_string(),
                None => "ended".to_owned(),
            };
            tracing::warn!(stream, filter = %filter, error = %why, from_sequence = last + 1, "stream reader lost, rebuilding");
            tokio::time::sleep(retry::backoff(1)).await;
            let from = if last == 0 {
                deliver_from(start)
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                }
            };
            messages = tokio::select! {
                o = open(&js, policy, Patience::Forever, stream, &filter, from) => match o {
                    Ok((m, _)) => m,
                    Err(_) => return,
                },
                _ = shutdown.cancelled() => return,
            };
        }
    });
    Ok(())
}

/// What `stream` holds on `filter` now, oldest first: at most `limit` messages, read for at most
/// `within` (what was read by then is returned). The newest are kept when there are more.
pub async fn read(
    js: &Context,
    policy: Policy,
    stream: &str,
    filter: &str,
    limit: usize,
    within: Duration,
) -> Result<Vec<Message>, NatsError> {
    let mut out: std::collections::VecDeque<Message> = std::collections::VecDeque::new();
    let reading = async {
        let (mut messages, stored) = open(
            js,
            policy,
            policy.window(),
            stream,
            filter,
            DeliverPolicy::All,
        )
        .await?;
        if stored == 0 {
            return Ok(());
        }
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| NatsError::op("reading a stream", e))?;
            let pending = m.info().map_or(0, |i| i.pending);
            out.push_back(m);
            if out.len() > limit {
                out.pop_front();
            }
            if pending == 0 {
                break;
            }
        }
        Ok::<(), NatsError>(())
    };
    match tokio::time::timeout(within, reading).await {
        Ok(r) => r?,
        Err(_) => tracing::debug!(stream, filter, read = out.len(), "stream read cut short"),
    }
    Ok(out.into())
}
