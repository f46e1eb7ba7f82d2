//! The live encoder pool, built from `watch_all()` on the heartbeats bucket.
//!
//! Expired keys send no watch event on nats-server 2.9, so liveness is judged by how long ago
//! each node's heartbeat last changed, on this process's monotonic clock. A replayed old entry
//! starts out as old as the server's timestamps say: how much older it is than the newest
//! heartbeat seen, both stamped by the servers, so no clock of this process or of the nodes
//! enters (a scheduler whose clock is a minute off once took every node for dead). A node whose
//! heartbeat went quiet for longer than the TTL is reported dead once, so its units are handed
//! on once.

use ffleet_runtime::messages::{self, Heartbeat};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::kv::{self, Typed};
use ffleet_runtime::{Capability, JobId, NodeId, Unit};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Seen {
    hb: Heartbeat,
    revision: u64,
    at: Instant,
    /// Already reported dead; reset by a newer heartbeat.
    reported: bool,
}

/// The view and what it knows of its own deliveries.
struct View {
    nodes: HashMap<NodeId, Seen>,
    /// The server timestamp of the newest heartbeat seen.
    newest: Option<time::OffsetDateTime>,
    /// When the watch last delivered anything, and when deliveries resumed after a gap.
    last_delivery: Option<Instant>,
    resumed: Instant,
}

/// Whether a node last heard from at `at` has gone quiet, as of `now`. Silence counts only
/// while the watch delivers other nodes' heartbeats (the last delivery within `ttl / 2`) and
/// only from when deliveries last resumed: a broker that takes no heartbeat writes, or a watch
/// rebuilt after an election, silences every node at once, and that says nothing about any of
/// them. Past `QUIET_CAP` TTLs of silence a node is quiet whatever the others do (every node
/// gone at once).
fn quiet(
    at: Instant,
    resumed: Instant,
    last_delivery: Option<Instant>,
    now: Instant,
    ttl: Duration,
) -> bool {
    let silent = now.saturating_duration_since(at);
    if silent > ttl * QUIET_CAP {
        return true;
    }
    let watching = last_delivery.is_some_and(|d| now.saturating_duration_since(d) <= ttl / 2);
    watching && now.saturating_duration_since(at.max(resumed)) > ttl
}

/// TTLs of silence after which a node is dead even when no other node is heard from either.
const QUIET_CAP: u32 = 4;

impl View {
    fn quiet(&self, s: &Seen, ttl: Duration) -> bool {
        quiet(s.at, self.resumed, self.last_delivery, Instant::now(), ttl)
    }
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Mutex<View>>,
    ttl: Duration,
    started: Instant,
    /// Fired when a node's room may have changed (joined, left, took or let go of a unit,
    /// started draining): the leader's backlog waits on it instead of polling.
    room_changed: Arc<tokio::sync::Notify>,
}

/// Whether heartbeat `b` can change the room a release round sees, compared with what the node
/// said before (`None`: not known, a node joining).
fn changes_room(old: Option<&Heartbeat>, b: &Heartbeat) -> bool {
    old.is_none_or(|a| {
        a.slots_total != b.slots_total
            || a.slots_busy != b.slots_busy
            || a.gpu_slots_total != b.gpu_slots_total
            || a.gpu_slots_busy != b.gpu_slots_busy
            || a.draining != b.draining
            || a.capabilities != b.capabilities
    })
}

/// A node whose heartbeat stopped: what it last said it held.
#[derive(Debug, Clone)]
pub struct Dead {
    pub heartbeat: Heartbeat,
    pub revision: u64,
    pub silent_for: Duration,
}

impl Pool {
    /// An empty view, judging silence by `ttl`; `watch` feeds it.
    pub fn new(ttl: Duration) -> Pool {
        Pool {
            inner: Arc::new(Mutex::new(View {
                nodes: HashMap::new(),
                newest: None,
                last_delivery: None,
                resumed: Instant::now(),
            })),
            ttl,
            started: Instant::now(),
            room_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Returns once a node's room may have changed since the last call returned (at once if it
    /// changed meanwhile). One waiter: the leader's backlog.
    pub async fn room_changed(&self) {
        self.room_changed.notified().await
    }

    /// Starts watching the bucket; the view fills as heartbeats arrive.
    pub async fn watch(
        workers: Typed<Heartbeat>,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> Result<Pool, NatsError> {
        let pool = Pool::new(ttl);
        let view = pool.clone();
        // Heartbeats arrive every second while any encoder lives: a watch quiet for a whole TTL is
        // rebuilt, in case it went silent in an election instead of failing.
        let policy = workers.policy();
        kv::follow(
            workers.store(),
            policy,
            shutdown,
            "workers",
            Some(ttl),
            move |e| view.apply(e),
        )
        .await?;
        Ok(pool)
    }

    fn apply(&self, e: &async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Ok(node) = NodeId::new(e.key.as_str()) else {
            return;
        };
        match e.operation {
            Operation::Put => match messages::decode::<Heartbeat>("heartbeat", &e.value) {
                Ok(hb) => self.observe(node, Some(hb), e.revision, e.created),
                Err(err) => {
                    self.observe_delivery();
                    tracing::warn!(node = %node, error = %err, "bad heartbeat ignored")
                }
            },
            // A clean stop: the node handed its units back itself.
            Operation::Delete | Operation::Purge => self.observe(node, None, e.revision, e.created),
        }
    }

    /// Notes that the watch delivered something now.
    fn observe_delivery(&self) {
        let mut view = self.inner.lock().expect("pool lock");
        Self::delivered(&mut view, self.ttl);
    }

    fn delivered(view: &mut View, ttl: Duration) {
        let now = Instant::now();
        if view
            .last_delivery
            .is_none_or(|d| now.saturating_duration_since(d) > ttl / 2)
        {
            view.resumed = now;
        }
        view.last_delivery = Some(now);
    }

    /// One change of a node's key, as the watch delivers it: its heartbeat (`None`: deleted by
    /// a clean stop), the entry's revision and the server's timestamp of it.
    pub fn observe(
        &self,
        node: NodeId,
        hb: Option<Heartbeat>,
        revision: u64,
        created: time::OffsetDateTime,
    ) {
        let mut view = self.inner.lock().expect("pool lock");
        Self::delivered(&mut view, self.ttl);
        let now = Instant::now();
        match hb {
            Some(hb) => {
                // A replayed entry is as much older than the newest heartbeat as the server's
                // timestamps say; a live one is the newest, new now.
                let newest = view.newest.map_or(created, |t| t.max(created));
                view.newest = Some(newest);
                let age = (newest - created)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
                    .min(self.ttl * 10);
                let at = now.checked_sub(age).unwrap_or(now);
                let old = view.nodes.get(&node);
                // A node back from silence is room again too.
                let moved = changes_room(old.map(|s| &s.hb), &hb)
                    || old.is_some_and(|s| view.quiet(s, self.ttl));
                view.nodes.insert(
                    node,
                    Seen {
                        hb,
                        revision,
                        at,
                        reported: false,
                    },
                );
                if moved {
                    self.room_changed.notify_one();
                }
            }
            None => {
                if view.nodes.remove(&node).is_some() {
                    self.room_changed.notify_one();
                }
            }
        }
    }

    /// Heartbeats of nodes that have not gone quiet.
    pub fn live(&self) -> Vec<Heartbeat> {
        let view = self.inner.lock().expect("pool lock");
        view.nodes
            .values()
            .filter(|s| !view.quiet(s, self.ttl))
            .map(|s| s.hb.clone())
            .collect()
    }

    /// Every node in the view, quiet or not, with its last heartbeat, how long ago that changed,
    /// and whether the node is live.
    pub fn nodes_with_ages(&self) -> Vec<(Heartbeat, Duration, bool)> {
        let view = self.inner.lock().expect("pool lock");
        let now = Instant::now();
        view.nodes
            .values()
            .map(|s| {
                let age = now.saturating_duration_since(s.at);
                (s.hb.clone(), age, !view.quiet(s, self.ttl))
            })
            .collect()
    }

    pub fn is_live(&self, node: &NodeId) -> bool {
        let view = self.inner.lock().expect("pool lock");
        view.nodes
            .get(node)
            .is_some_and(|s| !view.quiet(s, self.ttl))
    }

    /// Whether live node `node`'s last heartbeat lists `attempt` of `unit` of `job` among the
    /// units it is encoding; `None` when the node is not live.
    pub fn holds(&self, node: &NodeId, job: &JobId, unit: Unit, attempt: u32) -> Option<bool> {
        let view = self.inner.lock().expect("pool lock");
        let seen = view.nodes.get(node).filter(|s| !view.quiet(s, self.ttl))?;
        Some(
            seen.hb
                .holding
                .iter()
                .any(|h| &h.job_id == job && h.unit == unit && h.attempt == attempt),
        )
    }

    /// The jobs each live node's last heartbeat holds units of that `ended` says have ended:
    /// each (node, job) once.
    pub fn holding_ended(&self, ended: impl Fn(&JobId) -> bool) -> Vec<(NodeId, JobId)> {
        let view = self.inner.lock().expect("pool lock");
        let mut out: Vec<(NodeId, JobId)> = Vec::new();
        for (node, seen) in &view.nodes {
            if view.quiet(seen, self.ttl) {
                continue;
            }
            for h in &seen.hb.holding {
                let pair = (node.clone(), h.job_id.clone());
                if ended(&h.job_id) && !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        out
    }

    /// Whether any live node offers `cap`.
    pub fn has(&self, cap: &Capability) -> bool {
        self.live().iter().any(|hb| hb.capabilities.contains(cap))
    }

    /// The heartbeat TTL silence is judged by.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the view has been watched long enough that a node missing from it is gone.
    pub fn settled(&self) -> bool {
        self.started.elapsed() > self.ttl
    }

    /// Nodes gone quiet and not reported yet. Each is reported once; nodes silent for ten TTLs
    /// are forgotten.
    pub fn newly_dead(&self) -> Vec<Dead> {
        let mut view = self.inner.lock().expect("pool lock");
        let ttl = self.ttl;
        view.nodes.retain(|_, s| s.at.elapsed() <= ttl * 10);
        let (resumed, last) = (view.resumed, view.last_delivery);
        let now = Instant::now();
        view.nodes
            .values_mut()
            .filter(|s| !s.reported && quiet(s.at, resumed, last, now, ttl))
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
        if let Some(s) = self.inner.lock().expect("pool lock").nodes.get_mut(node) {
            s.reported = false;
        }
    }

    /// A dead report turned out wrong (the node wrote since): take the newer heartbeat.
    pub fn revive(&self, node: &NodeId, hb: Heartbeat, revision: u64) {
        let mut view = self.inner.lock().expect("pool lock");
        view.nodes.insert(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_while_other_heartbeats_arrive() {
        let ttl = Duration::from_secs(3);
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let at = t0;
        // Others heard from just now: four seconds of silence is a dead node.
        assert!(quiet(at, t0, Some(t0 + s(4)), t0 + s(4), ttl));
        assert!(!quiet(at, t0, Some(t0 + s(2)), t0 + s(2), ttl));
        // Nothing delivered for five seconds (the broker took no writes, the watch was
        // rebuilt): nobody is dead for it.
        assert!(!quiet(at, t0, Some(t0 + s(1)), t0 + s(6), ttl));
        // Deliveries resumed at 6 s: every node gets a whole TTL from then.
        assert!(!quiet(at, t0 + s(6), Some(t0 + s(8)), t0 + s(8), ttl));
        assert!(quiet(
            at,
            t0 + s(6),
            Some(t0 + s(9) + s(1) / 2),
            t0 + s(10),
            ttl
        ));
        // Past four TTLs, dead whatever the others do.
        assert!(quiet(at, t0, None, t0 + s(13), ttl));
    }
}
