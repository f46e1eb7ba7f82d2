//! Counts of the JetStream and KV operations this process made, by kind: what the control-plane
//! benchmark reads to say where each segment's operations go. Relaxed atomic increments, cheap
//! enough to stay on in production builds.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// One kind of operation.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// A stored publish (stream message with an awaited ack).
    Publish,
    /// A core (non-JetStream) publish, e.g. live progress.
    CorePublish,
    /// A final ack, nak or term of a JetStream message.
    Ack,
    /// An in-progress ack (keep-alive).
    Progress,
    /// A pull request for messages (fetch, batch, long poll).
    Fetch,
    /// A KV read (get or entry).
    KvRead,
    /// A KV write (create, update, put, delete).
    KvWrite,
    /// An entry delivered to a KV watch.
    WatchDelivery,
    /// A JetStream API request outside these (consumer or stream info).
    Api,
    /// A KV read that came back older than a revision the reader knew of, and was read again.
    BehindRead,
    /// A try of a JetStream operation cut off by its own short timeout and sent again.
    TryTimedOut,
}

const KINDS: usize = 11;
static COUNTS: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];

/// Counts one operation of `op`.
pub fn count(op: Op) {
    COUNTS[op as usize].fetch_add(1, Ordering::Relaxed);
}

/// The counts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub publishes: u64,
    pub core_publishes: u64,
    pub acks: u64,
    pub progress_acks: u64,
    pub fetches: u64,
    pub kv_reads: u64,
    pub kv_writes: u64,
    pub watch_deliveries: u64,
    pub api: u64,
    #[serde(default)]
    pub behind_reads: u64,
    #[serde(default)]
    pub tries_timed_out: u64,
}

pub fn snapshot() -> Counts {
    let c = |op: Op| COUNTS[op as usize].load(Ordering::Relaxed);
    Counts {
        publishes: c(Op::Publish),
        core_publishes: c(Op::CorePublish),
        acks: c(Op::Ack),
        progress_acks: c(Op::Progress),
        fetches: c(Op::Fetch),
        kv_reads: c(Op::KvRead),
        kv_writes: c(Op::KvWrite),
        watch_deliveries: c(Op::WatchDelivery),
        api: c(Op::Api),
        behind_reads: c(Op::BehindRead),
        tries_timed_out: c(Op::TryTimedOut),
    }
}

impl Counts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            publishes: self.publishes - earlier.publishes,
            core_publishes: self.core_publishes - earlier.core_publishes,
            acks: self.acks - earlier.acks,
            progress_acks: self.progress_acks - earlier.progress_acks,
            fetches: self.fetches - earlier.fetches,
            kv_reads: self.kv_reads - earlier.kv_reads,
            kv_writes: self.kv_writes - earlier.kv_writes,
            watch_deliveries: self.watch_deliveries - earlier.watch_deliveries,
            api: self.api - earlier.api,
            behind_reads: self.behind_reads - earlier.behind_reads,
            tries_timed_out: self.tries_timed_out - earlier.tries_timed_out,
        }
    }

    pub fn add(&mut self, o: &Counts) {
        self.publishes += o.publishes;
        self.core_publishes += o.core_publishes;
        self.acks += o.acks;
        self.progress_acks += o.progress_acks;
        self.fetches += o.fetches;
        self.kv_reads += o.kv_reads;
        self.kv_writes += o.kv_writes;
        self.watch_deliveries += o.watch_deliveries;
        self.api += o.api;
        self.behind_reads += o.behind_reads;
        self.tries_timed_out += o.tries_timed_out;
    }
}
