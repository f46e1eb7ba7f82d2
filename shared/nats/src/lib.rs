//! NATS plumbing shared by every service: connecting, provisioning streams/KV/consumers
//! idempotently (with the nats-server 2.9 workarounds), typed KV records with revision-checked
//! updates, publishing with stable message ids, and message acknowledgement through one handler
//! outcome (`ack`); all of it retried through the leader elections and lost servers of a
//! JetStream cluster (`retry`), with what a refusal means read from its JetStream error code
//! (`refusal`), and reading retained streams without a durable (`follow`). Also the process's health for healthchecks (`health`), who may do what on the
//! server (`security`), ffleet's request endpoints (`service`), and the `[nats]` and `[streams]` configuration sections (`config`).

pub mod ack;
pub mod config;
pub mod connect;
pub mod durable;
pub mod follow;
pub mod health;
pub mod kv;
pub mod ops;
pub mod provision;
pub mod publish;
pub mod pull;
pub mod retry;
pub mod security;
pub mod service;

pub use connect::connect;
pub use provision::{Buckets, provision};

/// Any error, kept with its chain of sources: what a broker call failed with, for the log and
/// for classification (`refusal`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors talking to NATS. Each keeps the client's own error as its source, so a caller can ask
/// what JetStream said (`refusal`) by error code instead of by the words of a message.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: BoxError,
    },
    #[error("nats {op}: {source}")]
    Op {
        op: &'static str,
        #[source]
        source: BoxError,
    },
    /// Refused for want of space (`Refusal::StoreFull`); only a client's request gets this (a
    /// service waits for space instead).
    #[error("nats {op}: {}", full_text(source))]
    StoreFull {
        op: &'static str,
        #[source]
        source: BoxError,
    },
}

impl NatsError {
    pub fn op(op: &'static str, e: impl Into<BoxError>) -> Self {
        NatsError::Op {
            op,
            source: e.into(),
        }
    }

    /// Whether the server refused for want of space.
    pub fn is_store_full(&self) -> bool {
        matches!(self, NatsError::StoreFull { .. })
    }
}

/// What a JetStream refusal means to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server has no room: its `max_file_store` (sized from the free disk when not set) or
    /// the account's storage limit reached, or the disk under it full. Unlike a stream's own
    /// cap, this clears when anyone frees space, so services wait for it; a client is told at
    /// once.
    StoreFull,
    /// The stream is at its own byte cap (`max_bytes`, discard new): what it holds must go
    /// before this fits (the media bucket: the job's media does not fit what the operator
    /// allowed).
    StreamFull,
    /// Another of the stream's limits (its message count) or a message larger than the stream or
    /// the server takes: sending it again as it is cannot help.
    StreamLimit,
}

/// What JetStream refused, if anything in `error`'s chain of sources is a JetStream API error
/// (classified by its error code) or a publish the client refused by kind.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(api) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return api_refusal(api);
        }
        if let Some(p) = e.downcast_ref::<PublishError>()
            && p.kind() == PublishErrorKind::MaxPayloadExceeded
        {
            return Some(Refusal::StreamLimit);
        }
        next = e.source();
    }
    None
}

/// Whether `error` says the stream is at one of its own caps or refuses the message itself
/// (`Refusal::StreamFull` or `StreamLimit`): sending it again cannot help, and the caller should
/// hear it at once.
pub fn at_cap(error: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        refusal(error),
        Some(Refusal::StreamFull | Refusal::StreamLimit)
    )
}

/// Whether `error` says the server has no room (`Refusal::StoreFull`).
pub fn is_store_full(error: &(dyn std::error::Error + 'static)) -> bool {
    refusal(error) == Some(Refusal::StoreFull)
}

/// Whether `error` is a want of space that clears when someone frees it: the server's store
/// (`is_store_full`), or a local disk this process writes to (ENOSPC anywhere in the chain: the
/// shared scratch directory, a work directory).
pub fn out_of_space(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28))
        {
            return true;
        }
        next = e.source();
    }
    is_store_full(error)
}

fn api_refusal(api: &async_nats::jetstream::Error) -> Option<Refusal> {
    use async_nats::jetstream::ErrorCode;
    match api.error_code() {
        ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED => Some(Refusal::StoreFull),
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => Some(Refusal::StreamLimit),
        ErrorCode::STREAM_STORE_FAILED => store_failed(&api.to_string()),
        _ => None,
    }
}

/// The one place ffleet reads a broker error's words. nats-server answers every message its
/// stream store refused with one code (10077, `JSStreamStoreFailedF`) whose description is the
/// store's own error: a stream at its cap ("maximum bytes exceeded", "maximum messages
/// exceeded", "maximum messages per subject exceeded") and a disk without space ("write ...:
/// no space left on device", "insufficient storage resources available") differ only there.
fn store_failed(description: &str) -> Option<Refusal> {
    let d = description.to_ascii_lowercase();
    if d.contains("maximum bytes") {
        Some(Refusal::StreamFull)
    } else if d.contains("maximum messages") {
        Some(Refusal::StreamLimit)
    } else if ["no space left", "insufficient", "resources exceeded"]
        .iter()
        .any(|m| d.contains(m))
    {
        Some(Refusal::StoreFull)
    } else {
        None
    }
}

/// What a user is told when the store is full: the cause, and what makes room.
pub fn full_text(error: &dyn std::fmt::Display) -> String {
    format!(
        "the jetstream store is full ({error}): free space on the NATS server (or raise its \
         jetstream max_file_store, or the account's storage limit) and try again"
    )
}

/// A JetStream API error as the server sends it, for tests of classification.
#[cfg(test)]
pub(crate) fn api_error(code: usize, err_code: u64, description: &str) -> BoxError {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    let api: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
        "code": code, "err_code": err_code, "description": description,
    }))
    .expect("an api error");
    Box::new(PublishError::with_source(PublishErrorKind::Other, api))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_full_local_disk_is_out_of_space_wherever_it_is_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("linking the input")]
        struct Wrapper(#[source] std::io::Error);
        let enospc = std::io::Error::from_raw_os_error(28);
        assert!(super::out_of_space(&Wrapper(enospc)));
        let other = std::io::Error::from_raw_os_error(2);
        assert!(!super::out_of_space(&Wrapper(other)));
        let kind = std::io::Error::new(std::io::ErrorKind::StorageFull, "full");
        assert!(super::out_of_space(&kind));
    }

    use super::*;
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};

    #[test]
    fn a_server_without_room_is_told_from_a_stream_at_its_cap() {
        for full in [
            api_error(503, 10023, "insufficient resources"),
            api_error(503, 10047, "insufficient storage resources available"),
            api_error(400, 10002, "resource limits exceeded for account"),
            api_error(
                500,
                10077,
                "write /data/jetstream/x/1.blk: no space left on device",
            ),
        ] {
            assert!(is_store_full(&*full), "{full}");
        }
        for other in [
            api_error(500, 10077, "maximum bytes exceeded"),
            Box::new(PublishError::new(PublishErrorKind::TimedOut)),
            Box::new(PublishError::new(PublishErrorKind::StreamNotFound)),
            api_error(400, 10071, "wrong last sequence: 4"),
            "insufficient resources".into(),
        ] {
            assert!(!is_store_full(&*other), "{other}");
        }
    }

    #[test]
    fn a_stream_at_its_cap_or_a_message_too_large_is_a_stream_limit() {
        assert_eq!(
            refusal(&*api_error(500, 10077, "maximum bytes exceeded")),
            Some(Refusal::StreamFull)
        );
        for limit in [
            api_error(500, 10077, "maximum messages exceeded"),
            api_error(400, 10054, "message size exceeds maximum allowed"),
            Box::new(PublishError::new(PublishErrorKind::MaxPayloadExceeded)),
        ] {
            assert_eq!(refusal(&*limit), Some(Refusal::StreamLimit), "{limit}");
        }
        assert_eq!(refusal(&*api_error(500, 10077, "store closed")), None);
    }

    #[test]
    fn only_the_store_failed_text_is_read() {
        assert_eq!(
            store_failed("maximum bytes exceeded"),
            Some(Refusal::StreamFull)
        );
        assert_eq!(
            store_failed("write x: no space left on device"),
            Some(Refusal::StoreFull)
        );
        assert_eq!(store_failed("stream store closed"), None);
    }
}
