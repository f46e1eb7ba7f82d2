//! The scheduler's lease value: who leads, and the size of the pool the leader sees, so that a
//! splitter sizes a job's segments with one read instead of walking every node's heartbeat.
//! Written on every renewal (a third of the lease TTL), so it is never older than that.
//!
//! Releases before this one wrote the holder's name alone; `SchedulerLease::read` takes both.

use super::{CURRENT, Versioned};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerLease {
    pub version: u32,
    /// The leading replica (host, process, random suffix), for operators.
    pub holder: String,
    /// Encode slots of the live pool, as the leader's watch of the heartbeats counts them
    /// (`heartbeat::offered_slots`); absent until its view has settled (one heartbeat TTL after
    /// it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_slots: Option<u32>,
}

impl SchedulerLease {
    pub fn new(holder: &str, pool_slots: Option<u32>) -> Self {
        Self {
            version: CURRENT,
            holder: holder.to_owned(),
            pool_slots,
        }
    }

    /// A lease value as any release wrote it: this message, or an earlier release's bare
    /// holder name (which says nothing of the pool).
    pub fn read(bytes: &[u8]) -> Self {
        match super::decode::<SchedulerLease>("scheduler lease", bytes) {
            Ok(l) => l,
            Err(_) => Self {
                version: CURRENT,
                holder: String::from_utf8_lossy(bytes).into_owned(),
                pool_slots: None,
            },
        }
    }
}

impl Versioned for SchedulerLease {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_release_and_a_bare_holder_name() {
        let l = SchedulerLease::new("host:1:abcd", Some(12));
        assert_eq!(SchedulerLease::read(&super::super::encode(&l)), l);
        let old = SchedulerLease::read(b"host:2:ef01");
        assert_eq!(old.holder, "host:2:ef01");
        assert_eq!(old.pool_slots, None);
        // A value of a later schema version is not taken for a holder name that knows the pool.
        let later = br#"{"version":99,"holder":"h","pool_slots":3}"#;
        assert_eq!(SchedulerLease::read(later).pool_slots, None);
    }
}
