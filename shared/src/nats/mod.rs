//! NATS plumbing shared by every service: connecting, provisioning streams/KV/consumers
//! idempotently (with the nats-server 2.9 workarounds), typed KV records with revision-checked
//! updates, publishing with stable message ids, and message acknowledgement; all of it retried
//! through the leader elections and lost servers of a JetStream cluster (`retry`).

pub mod ack;
pub mod connect;
pub mod durable;
pub mod kv;
pub mod ops;
pub mod provision;
pub mod publish;
pub mod pull;
pub mod retry;
pub mod worker;

pub use connect::connect;
pub use provision::{Buckets, provision};

/// Errors talking to NATS. Kept as text: async-nats has one error type per call and callers only
/// ever log these or turn them into a delayed retry.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("nats {op}: {message}")]
    Op { op: &'static str, message: String },
}

impl NatsError {
    pub fn op(op: &'static str, e: impl std::fmt::Display) -> Self {
        NatsError::Op {
            op,
            message: e.to_string(),
        }
    }
}
