//! The live encoder pool, built from `watch_all()` on the heartbeats bucket.
//!
//! Expired keys send no watch event on nats-server 2.9, so liveness is judged by how long ago
//! each node's heartbeat last changed, on this process's monotonic clock. A replayed old entry
//! starts out as old as the server's timestamps say: how much older it is than the newest
//! heartbeat seen, both stamped by the servers, so no clock of this process or of the nodes
//! enters (a scheduler whose clock is a minute off once took every node for dead). A node whose
//! heartbeat went quiet for longer than the TTL is reported dead once, so its units are handed
//! on once.

use ffleet_shared::messages::{self, Heartbeat};
use ffleet_shared::nats::NatsError;
use ffleet_shared::nats::kv::{self, Typed};
use ffleet_shared::{Capability, JobId, NodeId, Unit};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Seen {
    hb: Heartbeat,
    revision: u64,
    at: Instant,
    /// Already reported dead; reset by a newer heartbeat.
    reported: bool,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Mutex<HashMap<NodeId, Seen>>>,
    /// The server timestamp of the newest heartbeat seen.
    newest: Arc<Mutex<Option<time::OffsetDateTime>>>,
    ttl: Duration,
    started: Instant,
}

/// A node whose heartbeat stopped: what it last said it held.
#[derive(Debug, Clone)]
pub struct Dead {
    pub heartbeat: Heartbeat,
    pub revision: u64,
    pub silent_for: Duration,
}

impl Pool {
    /// Starts watching the bucket; the view fills as heartbeats arrive.
    pub async fn watch(
        workers: Typed<Heartbeat>,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> Result<Pool, NatsError> {
        let pool = Pool {
            inner: Arc::default(),
            newest: Arc::default(),
            ttl,
            started: Instant::now(),
        };
        let view = pool.clone();
        // Heartbeats arrive every second while any encoder lives: a watch quiet for a whole TTL is
        // rebuilt, in case it went silent in an election instead of failing.
        kv::follow(workers.store(), shutdown, "workers", Some(ttl), move |e| {
            view.apply(e)
        })
        .await?;
        Ok(pool)
    }

    fn apply(&self, e: &async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Ok(node) = NodeId::new(e.key.as_str()) else {
            return;
        };
        let mut map = self.inner.lock().expect("pool lock");
        match e.operation {
            Operation::Put => match messages::decode::<Heartbeat>("heartbeat", &e.value) {
                Ok(hb) => {
                    // A replayed entry is as much older than the newest heartbeat as the
                    // server's timestamps say; a live one is the newest, new now.
                    let newest = {
                        let mut n = self.newest.lock().expect("pool lock");
                        let newest = n.map_or(e.created, |t| t.max(e.created));
                        *n = Some(newest);
                        newest
                    };
                    let age = (newest - e.created)
                        .try_into()
                        .unwrap_or(Duration::ZERO)
                        .min(self.ttl * 10);
                    let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                    map.insert(
                        node,
                        Seen {
                            hb,
                            revision: e.revision,
                            at,
                            reported: false,
                        },
                    );
                }
                Err(err) => tracing::warn!(node = %node, error = %err, "bad heartbeat ignored"),
            },
            // A clean stop: the node handed its units back itself.
            Operation::Delete | Operation::Purge => {
                map.remove(&node);
            }
        }
    }

    /// Heartbeats of nodes seen within the TTL.
    pub fn live(&self) -> Vec<Heartbeat> {
        let map = self.inner.lock().expect("pool lock");
        map.values()
            .filter(|s| s.at.elapsed() <= self.ttl)
            .map(|s| s.hb.clone())
            .collect()
    }

    pub fn is_live(&self, node: &NodeId) -> bool {
        let map = self.inner.lock().expect("pool lock");
        map.get(node).is_some_and(|s| s.at.elapsed() <= self.ttl)
    }

    /// Whether live node `node`'s last heartbeat lists `attempt` of `unit` of `job` among the
    /// units it is encoding; `None` when the node is not live.
    pub fn holds(&self, node: &NodeId, job: &JobId, unit: Unit, attempt: u32) -> Option<bool> {
        let map = self.inner.lock().expect("pool lock");
        let seen = map.get(node).filter(|s| s.at.elapsed() <= self.ttl)?;
        Some(
            seen.hb
                .holding
                .iter()
                .any(|h| &h.job_id == job && h.unit == unit && h.attempt == attempt),
        )
    }

    /// Whether any live node offers `cap`.
    pub fn has(&self, cap: &Capability) -> bool {
        self.live().iter().any(|hb| hb.capabilities.contains(cap))
    }

    /// Whether the view has been watched long enough that a node missing from it is gone.
    pub fn settled(&self) -> bool {
        self.started.elapsed() > self.ttl
    }

    /// Nodes silent for longer than the TTL and not reported yet. Each is reported once; nodes
    /// silent for ten TTLs are forgotten.
    pub fn newly_dead(&self) -> Vec<Dead> {
        let mut map = self.inner.lock().expect("pool lock");
        map.retain(|_, s| s.at.elapsed() <= self.ttl * 10);
        map.values_mut()
            .filter(|s| !s.reported && s.at.elapsed() > self.ttl)
            .map(|s| {
                s.reported = true;
                Dead {
                    heartbeat: s.hb.clone(),
                    revision: s.revision,
                    silent_for: s.at.elapsed(),
                }
            })
            .collect()
    }

    /// A dead report could not be confirmed (its key read older than the pool's view): report
    /// the node again on the next sweep.
    pub fn revive_unread(&self, node: &NodeId) {
        if let Some(s) = self.inner.lock().expect("pool lock").get_mut(node) {
            s.reported = false;
        }
    }

    /// A dead report turned out wrong (the node wrote since): take the newer heartbeat.
    pub fn revive(&self, node: &NodeId, hb: Heartbeat, revision: u64) {
        let mut map = self.inner.lock().expect("pool lock");
        map.insert(
            node.clone(),
            Seen {
                hb,
                revision,
                at: Instant::now(),
                reported: false,
            },
        );
    }
}
