//! The fast path of failover: every fraction of the heartbeat TTL, nodes whose heartbeat went
//! silent are confirmed dead with a direct read of their key, and every unit their last
//! heartbeat listed is re-issued. This is what moves a dead node's work within seconds, long
//! before JetStream's AckWait would.

use crate::jobs_view::JobsView;
use crate::pool::{Dead, Pool};
use crate::ports::{Jobs, Outbox, Units, Workers};
use crate::reissue::reissue;
use ffleet_runtime::messages::SegmentState;
use ffleet_runtime::unit_protocol::Seen;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the sweep reads and writes.
pub trait Ports: Units + Jobs + Workers + Outbox {}
impl<T: Units + Jobs + Workers + Outbox> Ports for T {}

/// How often the pool is asked for nodes gone quiet: a fraction of the heartbeat TTL.
pub fn every(ttl: Duration) -> Duration {
    (ttl / 6).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

pub async fn run(ports: impl Ports, pool: Pool, jobs: JobsView, term: CancellationToken) {
    let every = every(pool.ttl());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = term.cancelled() => return,
        }
        for dead in pool.newly_dead() {
            hand_on(&ports, &pool, &jobs, dead).await;
        }
    }
}

async fn hand_on(ports: &impl Ports, pool: &Pool, jobs: &JobsView, dead: Dead) {
    let node = dead.heartbeat.node_id.clone();
    // The watch may lag (or this process may have been paused): only the key itself is proof.
    // A read older than the heartbeat the pool last saw says nothing about the node (revisions
    // only grow; a stream leader catching up after an election can answer with an old one).
    match ports.heartbeat(&node).await {
        Ok(Some((revision, _))) if revision < dead.revision => {
            tracing::debug!(node = %node, read_at = revision, seen_at = dead.revision, "silent node's key read older than its last heartbeat; judged again later");
            pool.revive_unread(&node);
            return;
        }
        Ok(Some((revision, Some(hb)))) if revision > dead.revision => {
            pool.revive(&node, hb, revision);
            return;
        }
        Ok(_) => {}
        Err(e) => {
            // Leave it to the reconciler, which checks owners against the pool again.
            tracing::warn!(node = %node, error = %e, "could not confirm a silent node");
            return;
        }
    }
    tracing::warn!(
        node = %node,
        silent_ms = dead.silent_for.as_millis() as u64,
        units = dead.heartbeat.holding.len(),
        "encoder node dead, handing its units on"
    );
    for held in &dead.heartbeat.holding {
        let job = match jobs.get(&held.job_id) {
            Some(j) => j,
            None => match ports.job(&held.job_id).await {
                Ok(Some(j)) => j,
                _ => continue,
            },
        };
        let seen = Seen {
            state: SegmentState::Running,
            owner: Some(&node),
        };
        let moved = reissue(ports, &job, held.unit, held.attempt, seen).await;
        match moved {
            Ok(Some(attempt)) => tracing::info!(
                node = %node,
                job = %held.job_id,
                unit = %held.unit,
                attempt,
                silent_ms = dead.silent_for.as_millis() as u64,
                "unit of a dead node re-issued"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                node = %node,
                job = %held.job_id,
                unit = %held.unit,
                error = %e,
                "re-issue failed; the reconciler will retry"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{self, Mem};
    use ffleet_runtime::messages::SegmentState;
    use ffleet_runtime::unit_protocol::Step;
    use ffleet_runtime::{Capability, NodeId, Unit};
    use std::time::Duration;
    use tokio::time::{Instant, sleep};

    const TTL: Duration = Duration::from_secs(3);

    /// A job of two units, unit 0 claimed by node `a` at attempt 1; the pool has seen `a`
    /// holding it (at revision 10) and node `b` holding nothing.
    async fn fleet() -> (Mem, Pool, ffleet_runtime::JobId) {
        let mem = Mem::default();
        let job = mem::encoding_job(&mem, "j1", 2).job_id;
        let key = ffleet_runtime::subjects::segment_key(&job, Unit::Video(0));
        let (cpu, a) = (Capability::cpu(), NodeId::new("a").unwrap());
        let route = Step::Route {
            attempt: 1,
            capability: &cpu,
        };
        let claim = Step::Claim {
            attempt: 1,
            node: &a,
            gpu_class: None,
        };
        mem.step(&key, &route).await.unwrap().unwrap();
        mem.step(&key, &claim).await.unwrap().unwrap();
        let pool = Pool::new(TTL);
        let hb = mem::heartbeat("a", &[(&job, Unit::Video(0), 1)]);
        mem.with(|s| s.workers.insert(a.clone(), (10, Some(hb.clone()))));
        pool.observe(a, Some(hb), 10, time::OffsetDateTime::now_utc());
        (mem, pool, job)
    }

    /// Node `b` beats every second from now until `until` (the watch keeps delivering, so a
    /// silent `a` counts as silent).
    fn beat_b(pool: &Pool, until: Duration) -> tokio::task::JoinHandle<()> {
        let pool = pool.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut rev = 100;
            while start.elapsed() < until {
                rev += 1;
                let hb = mem::heartbeat("b", &[]);
                let b = NodeId::new("b").unwrap();
                pool.observe(b, Some(hb), rev, time::OffsetDateTime::now_utc());
                sleep(Duration::from_secs(1)).await;
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_nodes_unit_is_reissued_once_a_ttl_after_its_last_heartbeat() {
        let (mem, pool, job) = fleet().await;
        let beats = beat_b(&pool, Duration::from_secs(20));
        let term = CancellationToken::new();
        let sweep = tokio::spawn(run(
            mem.clone(),
            pool.clone(),
            JobsView::default(),
            term.clone(),
        ));
        sleep(TTL - Duration::from_millis(100)).await;
        assert_eq!(
            mem.unit_of(&job, Unit::Video(0)).attempt,
            1,
            "not before the TTL"
        );
        sleep(Duration::from_millis(100) + every(TTL) * 2).await;
        let rec = mem.unit_of(&job, Unit::Video(0));
        assert_eq!((rec.attempt, rec.state), (2, SegmentState::Planned));
        assert_eq!(rec.owner, None);
        sleep(Duration::from_secs(10)).await;
        mem.with(|s| {
            assert_eq!(s.planned.len(), 1, "handed on once: {:?}", s.planned);
            assert_eq!(s.planned[0].attempt, 2);
        });
        assert_eq!(
            mem.unit_of(&job, Unit::Video(1)).attempt,
            1,
            "only what it held"
        );
        term.cancel();
        sweep.await.unwrap();
        beats.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_older_than_the_pools_view_proves_nothing_and_a_newer_heartbeat_revives() {
        let (mem, pool, job) = fleet().await;
        let a = NodeId::new("a").unwrap();
        // A lagging stream leader answers with a revision before the one the watch delivered.
        let stale = mem::heartbeat("a", &[]);
        mem.with(|s| s.workers.insert(a.clone(), (7, Some(stale))));
        let beats = beat_b(&pool, Duration::from_secs(30));
        let term = CancellationToken::new();
        let sweep = tokio::spawn(run(
            mem.clone(),
            pool.clone(),
            JobsView::default(),
            term.clone(),
        ));
        sleep(TTL * 3).await;
        assert_eq!(mem.unit_of(&job, Unit::Video(0)).attempt, 1);
        assert!(mem.with(|s| s.planned.is_empty()));
        // Now the key reads newer than the pool's view: the node lives, and is back in it.
        let alive = mem::heartbeat("a", &[(&job, Unit::Video(0), 1)]);
        mem.with(|s| s.workers.insert(a.clone(), (20, Some(alive))));
        sleep(every(TTL) * 2).await;
        assert!(pool.is_live(&a), "revived from its key");
        assert_eq!(mem.unit_of(&job, Unit::Video(0)).attempt, 1);
        // Once really silent (its key no newer than what the pool saw), it is dead after all.
        sleep(TTL * 2).await;
        assert_eq!(mem.unit_of(&job, Unit::Video(0)).attempt, 2);
        assert_eq!(mem.with(|s| s.planned.len()), 1);
        term.cancel();
        sweep.await.unwrap();
        beats.abort();
    }
}
