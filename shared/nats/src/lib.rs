//! NATS plumbing shared by every service: connecting, provisioning streams/KV/consumers
//! idempotently (with the nats-server 2.9 workarounds), typed KV records with revision-checked
//! updates, publishing with stable message ids, and message acknowledgement; all of it retried
//! through the leader elections and lost servers of a JetStream cluster (`retry`).

pub mod ack;
pub mod config;
pub mod connect;
pub mod durable;
pub mod health;
pub mod kv;
pub mod ops;
pub mod provision;
pub mod publish;
pub mod pull;
pub mod retry;
pub mod security;

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
    /// Refused for want of space (`store_full`); only a client's request gets this (a service
    /// waits for space instead).
    #[error("nats {op}: {}", full_text(message))]
    StoreFull { op: &'static str, message: String },
}

impl NatsError {
    pub fn op(op: &'static str, e: impl std::fmt::Display) -> Self {
        NatsError::Op {
            op,
            message: e.to_string(),
        }
    }

    /// Whether the server refused for want of space.
    pub fn is_store_full(&self) -> bool {
        matches!(self, NatsError::StoreFull { .. })
    }
}

/// Whether a JetStream error says the server has no room: its `max_file_store` (sized from the
/// free disk when not set) or the account's storage limit reached, or the disk under it full.
/// Unlike a stream's own cap (`maximum bytes`), this clears when anyone frees space, so services
/// wait for it; a client is told at once.
pub fn store_full(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    [
        "insufficient resources",
        "insufficient storage",
        "resource limits exceeded",
        "resources exceeded",
        "no space left",
    ]
    .iter()
    .any(|m| e.contains(m))
}

/// What a user is told when the store is full: the cause, and what makes room.
pub fn full_text(error: &str) -> String {
    format!(
        "the jetstream store is full ({error}): free space on the NATS server (or raise its \
         jetstream max_file_store, or the account's storage limit) and try again"
    )
}

#[cfg(test)]
mod tests {
    use super::store_full;

    #[test]
    fn a_server_without_room_is_told_from_a_stream_at_its_cap() {
        for full in [
            "insufficient resources (code 503, error code 10023)",
            "insufficient storage resources available (code 503, error code 10047)",
            "resource limits exceeded for account (code 400, error code 10002)",
            "write /data/jetstream/x/1.blk: no space left on device",
        ] {
            assert!(store_full(full), "{full}");
        }
        for other in [
            "maximum bytes exceeded",
            "timed out",
            "no responders",
            "wrong last sequence: 4",
        ] {
            assert!(!store_full(other), "{other}");
        }
    }
}
