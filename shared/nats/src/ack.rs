//! The end of every JetStream message: exactly one ack, nak-with-delay or term, chosen by the
//! handler and applied here; plus a keep-alive that extends AckWait while work is under way.

use async_nats::jetstream::{AckKind, Message};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How a handler wants its message finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (successfully, or a duplicate/stale message with nothing left to do).
    Ack,
    /// Transient trouble: redeliver after the delay.
    Retry(Duration),
    /// Never redeliver: the message can never succeed (its failure was reported elsewhere).
    Term,
}

/// Applies the disposition. Failures are logged: the message will then be redelivered after its
/// AckWait, which every handler tolerates.
pub async fn finish(msg: &Message, d: Disposition) {
    let kind = match d {
        Disposition::Ack => AckKind::Ack,
        Disposition::Retry(delay) => AckKind::Nak(Some(delay)),
        Disposition::Term => AckKind::Term,
    };
    super::ops::count(super::ops::Op::Ack);
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(error = %e, subject = %msg.subject, ?d, "could not acknowledge message");
    }
}

/// How many times this message has been delivered (1 on the first delivery).
pub fn delivered(msg: &Message) -> i64 {
    msg.info().map(|i| i.delivered).unwrap_or(1)
}

/// Sends in-progress acks every `every` until dropped, so long work does not hit AckWait.
pub struct KeepAlive(JoinHandle<()>);

impl KeepAlive {
    pub fn start(msg: &Message, every: Duration) -> Self {
        let msg = msg.clone();
        KeepAlive(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                super::ops::count(super::ops::Op::Progress);
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack failed");
                }
            }
        }))
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}
