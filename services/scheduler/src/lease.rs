//! Leader election over a KV lease, so that several scheduler replicas can run and exactly one
//! routes, sweeps and reconciles at a time.
//!
//! The lease bucket keeps one revision per key and drops it after `lease_ttl`. A replica leads
//! once its `create` succeeds, renews with revision-checked `update`s every third of the TTL,
//! and stops leading the moment a renewal fails: whoever wrote in between holds the lease now.
//! The revision is the fencing token; the leader's work itself is revision-checked too, so a
//! leader that has not yet noticed its loss cannot corrupt records. A clean stop deletes the
//! lease so a follower takes over at once instead of after the TTL.

use crate::pool::Pool;
use async_nats::jetstream::kv::Store;
use ffleet_runtime::messages::{self, SchedulerLease, heartbeat::offered_slots};
use ffleet_runtime::nats::retry::{Patience, Policy};
use ffleet_runtime::nats::{NatsError, kv};
use ffleet_runtime::subjects;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the election needs of the lease bucket: the port through which it is tested with an
/// in-memory store and a paused clock. Each write is revision-checked; `None` means someone
/// else's write is there.
pub trait Leases: Clone + Send + Sync + 'static {
    fn create(
        &self,
        key: &str,
        holder: &str,
        patience: Patience,
    ) -> impl Future<Output = Result<Option<u64>, NatsError>> + Send;
    fn update(
        &self,
        key: &str,
        holder: &str,
        revision: u64,
        patience: Patience,
    ) -> impl Future<Output = Result<Option<u64>, NatsError>> + Send;
    /// Deletes the key if it is still at `revision`; fails harmlessly otherwise.
    fn delete(&self, key: &str, revision: u64) -> impl Future<Output = ()> + Send;
}

/// The lease bucket, and the retry policy its writes' tries are bounded by (the election
/// chooses each write's patience itself). Each write carries the holder and, once `pool` has
/// settled, the live pool's slots (`SchedulerLease`), which splitters size jobs by.
#[derive(Clone)]
pub struct Bucket {
    pub store: Store,
    pub policy: Policy,
    pub pool: Pool,
}

impl Bucket {
    fn value(&self, holder: &str) -> bytes::Bytes {
        let slots = (self.pool.settled()).then(|| offered_slots(&self.pool.live()));
        messages::encode(&SchedulerLease::new(holder, slots))
    }
}

impl Leases for Bucket {
    async fn create(
        &self,
        key: &str,
        holder: &str,
        patience: Patience,
    ) -> Result<Option<u64>, NatsError> {
        let value = self.value(holder);
        kv::create(&self.store, self.policy, key, value, patience).await
    }

    async fn update(
        &self,
        key: &str,
        holder: &str,
        revision: u64,
        patience: Patience,
    ) -> Result<Option<u64>, NatsError> {
        let value = self.value(holder);
        kv::update(&self.store, self.policy, key, value, revision, patience).await
    }

    async fn delete(&self, key: &str, revision: u64) {
        let _ = self.store.delete_expect_revision(key, Some(revision)).await;
    }
}

/// How often a follower tries to take the lease: often enough that takeover lands close to the
/// moment the old lease expires.
fn poll_every(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// Runs `lead` whenever this replica holds the lease, until `shutdown` fires. `lead` gets a
/// token that fires when leadership ends (lost or shutting down) and must return soon after.
pub async fn run<L, F, Fut>(
    leases: L,
    holder: String,
    ttl: Duration,
    shutdown: CancellationToken,
    mut lead: F,
) where
    L: Leases,
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let key = subjects::LEASE_SCHEDULER;
    let mut waiting_since = Instant::now();
    while !shutdown.is_cancelled() {
        // A create that timed out in an election but landed is recognised as ours.
        let tried = leases.create(key, &holder, Patience::For(poll_every(ttl)));
        let rev = match tried.await {
            Ok(Some(rev)) => rev,
            Ok(None) | Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(poll_every(ttl)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        tracing::info!(
            holder = %holder,
            waited_ms = waiting_since.elapsed().as_millis() as u64,
            "scheduler leadership acquired"
        );
        let term = shutdown.child_token();
        let renew = tokio::spawn(renew(
            leases.clone(),
            holder.clone(),
            rev,
            ttl,
            term.clone(),
        ));
        lead(term.clone()).await;
        term.cancel();
        let last = renew.await.ok().flatten();
        if shutdown.is_cancelled() {
            if let Some(rev) = last {
                // Hand over at once; fails harmlessly if someone else holds it by now.
                leases.delete(key, rev).await;
            }
            tracing::info!(holder = %holder, "scheduler leadership released");
        } else {
            tracing::warn!(holder = %holder, "scheduler leadership lost");
        }
        waiting_since = Instant::now();
    }
}

/// Renews until `term` fires (returns the last revision held) or a renewal fails (cancels
/// `term` and returns `None`).
async fn renew<L: Leases>(
    leases: L,
    holder: String,
    mut rev: u64,
    ttl: Duration,
    term: CancellationToken,
) -> Option<u64> {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    let started = Instant::now();
    let mut renewed = started;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.cancelled() => return Some(rev),
        }
        if renewed.elapsed() >= ttl {
            // This process was frozen past the TTL: another replica may have led meanwhile.
            tracing::warn!(holder = %holder, "lease renewal overdue, giving up leadership");
            term.cancel();
            return None;
        }
        // Retried through an election, but only while the lease would still be ours.
        let patience = Patience::For((ttl * 5 / 6).saturating_sub(renewed.elapsed()));
        let key = subjects::LEASE_SCHEDULER;
        match leases.update(key, &holder, rev, patience).await {
            Ok(Some(r)) => {
                rev = r;
                renewed = Instant::now();
            }
            Ok(None) => {
                tracing::warn!(holder = %holder, "lease taken over by another replica");
                term.cancel();
                return None;
            }
            Err(e) => {
                tracing::warn!(holder = %holder, error = %e, "lease renewal failed");
                term.cancel();
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// The lease bucket in memory: one key, its holder, revision and last write, dropped
    /// `ttl` after that write as the bucket's max age drops it. Each replica has its own
    /// handle, which can be cut off (every operation fails, as through a partition).
    /// The key's (holder, revision, written at), if any, and the last revision given.
    type Entry = (Option<(String, u64, Instant)>, u64);

    #[derive(Clone)]
    struct MemLeases {
        entry: Arc<Mutex<Entry>>,
        ttl: Duration,
        cut: Arc<AtomicBool>,
    }

    impl MemLeases {
        fn handle(&self) -> MemLeases {
            MemLeases {
                cut: Arc::new(AtomicBool::new(false)),
                ..self.clone()
            }
        }

        fn current(&self) -> Option<(String, u64)> {
            let mut e = self.entry.lock().unwrap();
            if e.0
                .as_ref()
                .is_some_and(|(_, _, at)| at.elapsed() >= self.ttl)
            {
                e.0 = None;
            }
            e.0.as_ref().map(|(h, r, _)| (h.clone(), *r))
        }

        /// Cut off, an operation fails as the real one does: after retrying for its whole
        /// patience (an election could have ended meanwhile).
        async fn refused(&self, patience: Patience) -> Result<(), NatsError> {
            if !self.cut.load(Ordering::SeqCst) {
                return Ok(());
            }
            if let Patience::For(d) = patience {
                tokio::time::sleep(d).await;
            }
            Err(NatsError::op("kv", "timed out (cut off)"))
        }
    }

    impl Leases for MemLeases {
        async fn create(
            &self,
            _key: &str,
            holder: &str,
            patience: Patience,
        ) -> Result<Option<u64>, NatsError> {
            self.refused(patience).await?;
            if self.current().is_some() {
                return Ok(None);
            }
            let mut e = self.entry.lock().unwrap();
            e.1 += 1;
            e.0 = Some((holder.to_owned(), e.1, Instant::now()));
            Ok(Some(e.1))
        }

        async fn update(
            &self,
            _key: &str,
            holder: &str,
            revision: u64,
            patience: Patience,
        ) -> Result<Option<u64>, NatsError> {
            self.refused(patience).await?;
            if self.current().map(|(_, r)| r) != Some(revision) {
                return Ok(None);
            }
            let mut e = self.entry.lock().unwrap();
            e.1 += 1;
            e.0 = Some((holder.to_owned(), e.1, Instant::now()));
            Ok(Some(e.1))
        }

        async fn delete(&self, _key: &str, revision: u64) {
            if !self.cut.load(Ordering::SeqCst) && self.current().map(|(_, r)| r) == Some(revision)
            {
                self.entry.lock().unwrap().0 = None;
            }
        }
    }

    const TTL: Duration = Duration::from_secs(3);

    /// A replica: its lease handle, its shutdown, and how many times it has led.
    struct Replica {
        leases: MemLeases,
        shutdown: CancellationToken,
        terms: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    /// Starts a replica whose leadership counts into `leading`, which must never pass 1.
    fn replica(store: &MemLeases, name: &str, leading: &Arc<AtomicUsize>) -> Replica {
        let leases = store.handle();
        let shutdown = CancellationToken::new();
        let terms = Arc::new(AtomicUsize::new(0));
        let (l, t) = (leading.clone(), terms.clone());
        let task = tokio::spawn(run(
            leases.clone(),
            name.to_owned(),
            TTL,
            shutdown.clone(),
            move |term| {
                let (l, t) = (l.clone(), t.clone());
                async move {
                    t.fetch_add(1, Ordering::SeqCst);
                    let now = l.fetch_add(1, Ordering::SeqCst) + 1;
                    assert_eq!(now, 1, "two replicas lead at once");
                    term.cancelled().await;
                    l.fetch_sub(1, Ordering::SeqCst);
                }
            },
        ));
        Replica {
            leases,
            shutdown,
            terms,
            task,
        }
    }

    /// Waits (virtual time) until `done`, failing the test past `limit`.
    async fn until(limit: Duration, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < limit, "not within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn store() -> MemLeases {
        MemLeases {
            entry: Arc::new(Mutex::new((None, 0))),
            ttl: TTL,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_replica_leads_and_a_clean_stop_hands_over_at_once() {
        let store = store();
        let leading = Arc::new(AtomicUsize::new(0));
        let a = replica(&store, "a", &leading);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let b = replica(&store, "b", &leading);
        // Well past many TTLs: the first keeps renewing, the second never leads.
        tokio::time::sleep(TTL * 10).await;
        assert_eq!(leading.load(Ordering::SeqCst), 1);
        assert_eq!(store.current().unwrap().0, "a");
        assert_eq!(b.terms.load(Ordering::SeqCst), 0);
        // A clean stop deletes the lease: the other leads within a poll, not a TTL.
        let stopped = Instant::now();
        a.shutdown.cancel();
        a.task.await.unwrap();
        until(TTL, || store.current().is_some_and(|(h, _)| h == "b")).await;
        assert!(stopped.elapsed() <= poll_every(TTL) + Duration::from_millis(20));
        assert_eq!(b.terms.load(Ordering::SeqCst), 1);
        b.shutdown.cancel();
        b.task.await.unwrap();
        assert_eq!(leading.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_cut_off_steps_down_before_another_takes_over_after_the_ttl() {
        let store = store();
        let leading = Arc::new(AtomicUsize::new(0));
        let a = replica(&store, "a", &leading);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let b = replica(&store, "b", &leading);
        tokio::time::sleep(TTL).await;
        let (_, last) = store.current().unwrap();
        // `a` can no longer reach the bucket: its renewals fail.
        a.leases.cut.store(true, Ordering::SeqCst);
        let cut = Instant::now();
        until(TTL * 3, || b.terms.load(Ordering::SeqCst) > 0).await;
        // `b` took over only once `a`'s last write had expired (the guard in `replica` saw
        // no overlap), and no later than a poll after that.
        let took = cut.elapsed();
        assert!(
            took <= TTL + poll_every(TTL) + Duration::from_millis(20),
            "{took:?}"
        );
        let (holder, rev) = store.current().unwrap();
        assert_eq!(holder, "b");
        assert!(rev > last);
        // Back on the network, `a` follows: it does not lead again while `b` renews.
        a.leases.cut.store(false, Ordering::SeqCst);
        tokio::time::sleep(TTL * 5).await;
        assert_eq!(a.terms.load(Ordering::SeqCst), 1);
        assert_eq!(store.current().unwrap().0, "b");
        for r in [a, b] {
            r.shutdown.cancel();
            r.task.await.unwrap();
        }
    }
}
