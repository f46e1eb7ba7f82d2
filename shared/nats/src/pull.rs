//! One pull loop's pull requests, one message each, over one subscription it keeps.
//!
//! async-nats's `fetch()` and `batch()` subscribe to a fresh inbox for every pull and unsubscribe
//! after it: two more protocol operations, and two changes to the server's subscription table,
//! for every message a service takes. A loop that pulls one message at a time needs only one
//! subscription: its requests go out one after another, each with its own reply subject under
//! the loop's inbox. A message delivered there answers the pull in flight (JetStream delivers
//! it under its stream subject, so it names no request; a late one of an abandoned pull is as
//! good as any). The end of a request (none waiting, expired) names its reply subject, so the end
//! of an earlier, abandoned pull never ends the current one.
//!
//! A pull in flight when the connection moves to another server (its server died) is given up
//! at once rather than waited out: the consumer leader that held it may be gone too, and a
//! fresh request reaches whichever leader the cluster elects.

use super::durable::Durable;
use async_nats::jetstream::consumer::pull::{BatchConfig, BatchRequestError};
use async_nats::jetstream::{self};
use async_nats::{StatusCode, Subscriber};
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often a pull in flight looks whether its connection moved to another server.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

/// What became of one pull request.
pub enum Answer {
    Message(Box<jetstream::Message>),
    /// The server ended the request without a message: none waiting (no-wait pull) or the
    /// request expired.
    Empty,
    /// The server refused or ended the request with another status (consumer deleted, a
    /// leadership change, no responders, ...), or the request could not be sent.
    Refused(PullError),
    /// Nothing came back in time: the request or its answer was lost.
    Unanswered,
}

/// Why a pull request got no message.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("subscribing to a pull inbox: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error(transparent)]
    Request(#[from] BatchRequestError),
    #[error("no pull inbox")]
    NoInbox,
    #[error("the pull inbox subscription ended")]
    InboxEnded,
    /// The server ended the request with this status.
    #[error("{status}: {description}")]
    Status {
        status: StatusCode,
        description: String,
    },
}

/// One loop's puller of `consumer` (not shared: one request at a time).
pub struct Puller {
    consumer: Durable,
    /// Subscribed at the first pull, kept for the loop's life.
    sub: Option<(String, Subscriber)>,
    seq: u64,
}

impl Puller {
    pub fn new(consumer: Durable) -> Puller {
        Puller {
            consumer,
            sub: None,
            seq: 0,
        }
    }

    pub fn consumer(&self) -> &Durable {
        &self.consumer
    }

    /// Asks for one message: held by the server for up to `expires`, or answered at once when
    /// `expires` is `None`. Gives up (`Unanswered`) after `limit`.
    pub async fn pull(&mut self, expires: Option<Duration>, limit: Duration) -> Answer {
        let js = self.consumer.context();
        if self.sub.is_none() {
            let client = js.client();
            let inbox = client.new_inbox();
            match client.subscribe(format!("{inbox}.*")).await {
                Ok(sub) => self.sub = Some((inbox, sub)),
                Err(e) => return Answer::Refused(PullError::Subscribe(e)),
            }
        }
        let Some((inbox, sub)) = self.sub.as_mut() else {
            return Answer::Refused(PullError::NoInbox);
        };
        self.seq += 1;
        let reply = format!("{inbox}.{}", self.seq);
        let config = BatchConfig {
            batch: 1,
            expires,
            no_wait: expires.is_none(),
            ..Default::default()
        };
        let consumer = self.consumer.consumer();
        if let Err(e) = consumer.request_batch(config, reply.clone().into()).await {
            return Answer::Refused(e.into());
        }
        let deadline = tokio::time::Instant::now() + limit;
        let stats = js.client().statistics();
        let connects = stats.connects.load(Ordering::Relaxed);
        let mut check = tokio::time::interval(RECONNECT_CHECK);
        loop {
            // `None`: given up (unanswered in time, or the connection moved).
            let next = tokio::select! {
                m = tokio::time::timeout_at(deadline, sub.next()) => m.ok(),
                _ = check.tick() => {
                    if stats.connects.load(Ordering::Relaxed) == connects {
                        continue;
                    }
                    None
                }
            };
            let msg = match next {
                // The request or its end was lost (or its connection moved), and the server
                // may still hold it: a message it delivers later would wait unseen in this
                // subscription while the loop works. The next pull starts on a fresh inbox;
                // such a message returns after its AckWait.
                None => {
                    self.sub = None;
                    return Answer::Unanswered;
                }
                Some(None) => {
                    self.sub = None;
                    return Answer::Refused(PullError::InboxEnded);
                }
                Some(Some(m)) => m,
            };
            let status = match msg.status {
                None | Some(StatusCode::OK) => {
                    return Answer::Message(Box::new(jetstream::Message {
                        message: msg,
                        context: js.clone(),
                    }));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                // The end of an earlier pull this loop gave up on.
                Some(_) if msg.subject.as_str() != reply => continue,
                Some(s) => s,
            };
            return match status {
                StatusCode::NOT_FOUND | StatusCode::TIMEOUT => Answer::Empty,
                status => Answer::Refused(PullError::Status {
                    status,
                    description: msg
                        .description
                        .unwrap_or_else(|| "no description".to_owned()),
                }),
            };
        }
    }
}
