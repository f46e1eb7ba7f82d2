//! The end of every JetStream message: a handler returns one `Outcome` (done, transient with
//! its cause, or permanent with a reason) and `finish` turns it into exactly one ack,
//! nak-with-delay or term, the only place that choice is made; plus a keep-alive that extends
//! AckWait while work is under way.

use super::BoxError;
use async_nats::jetstream::{AckKind, Message};
use ffleet_protocol::reason::Reason;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a message that met transient trouble waits before it is delivered again, unless its
/// handler says otherwise (`Outcome::retry_after`): long enough for a leader election to settle
/// or a write race to clear, short enough that a unit is not held up.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// How a handler's message ended.
#[derive(Debug)]
pub enum Outcome {
    /// Done (successfully, or a duplicate/stale message with nothing left to do): acked.
    Done,
    /// Transient trouble (a broker or storage fault, a read behind a write): delivered again
    /// after `after` (a nak with that delay). `source` says why.
    Transient { source: BoxError, after: Duration },
    /// The message can never succeed: terminated, never delivered again. Where it concerns a
    /// job, its failure was reported before this is returned.
    Permanent { reason: Reason, message: String },
}

impl Outcome {
    /// Transient trouble, delivered again after `RETRY_AFTER`.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self::retry_after(source, RETRY_AFTER)
    }

    /// Transient trouble, delivered again after `after`.
    pub fn retry_after(source: impl Into<BoxError>, after: Duration) -> Self {
        Outcome::Transient {
            source: source.into(),
            after,
        }
    }

    pub fn permanent(reason: Reason, message: impl Into<String>) -> Self {
        Outcome::Permanent {
            reason,
            message: message.into(),
        }
    }

    /// The acknowledgement that ends a message with this outcome. Transient trouble with no
    /// wait (work handed back for someone else to take at once) is a plain nak.
    pub fn ack_kind(&self) -> AckKind {
        match self {
            Outcome::Done => AckKind::Ack,
            Outcome::Transient { after, .. } if after.is_zero() => AckKind::Nak(None),
            Outcome::Transient { after, .. } => AckKind::Nak(Some(*after)),
            Outcome::Permanent { .. } => AckKind::Term,
        }
    }
}

/// Ends the message as `outcome` says. Failures are logged: the message will then be
/// redelivered after its AckWait, which every handler tolerates. Handlers log their outcome
/// where they know its context; here it is logged only at debug level.
pub async fn finish(msg: &Message, outcome: Outcome) {
    match &outcome {
        Outcome::Done => {}
        Outcome::Transient { source, after } => {
            tracing::debug!(subject = %msg.subject, error = %source, after_ms = after.as_millis() as u64, "message handed back")
        }
        Outcome::Permanent { reason, message } => {
            tracing::debug!(subject = %msg.subject, reason = %reason, message = %message, "message terminated")
        }
    }
    super::ops::count(super::ops::Op::Ack);
    if let Err(e) = msg.ack_with(outcome.ack_kind()).await {
        tracing::warn!(error = %e, subject = %msg.subject, ack = ?outcome.ack_kind(), "could not acknowledge message");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_ends_in_one_ack_nak_with_delay_or_term() {
        assert!(matches!(Outcome::Done.ack_kind(), AckKind::Ack));
        let t = Outcome::transient("store unreachable");
        assert!(matches!(t.ack_kind(), AckKind::Nak(Some(d)) if d == RETRY_AFTER));
        let t = Outcome::retry_after("read behind", Duration::from_secs(1));
        assert!(matches!(t.ack_kind(), AckKind::Nak(Some(d)) if d == Duration::from_secs(1)));
        let now = Outcome::retry_after("handed back", Duration::ZERO);
        assert!(matches!(now.ack_kind(), AckKind::Nak(None)));
        let p = Outcome::permanent(Reason::Internal, "undecodable");
        assert!(matches!(p.ack_kind(), AckKind::Term));
    }
}
