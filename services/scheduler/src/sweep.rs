//! The fast path of failover: every fraction of the heartbeat TTL, nodes whose heartbeat went
//! silent are confirmed dead with a direct read of their key, and every unit their last
//! heartbeat listed is re-issued. This is what moves a dead node's work within seconds, long
//! before JetStream's AckWait would.

use crate::jobs_view::JobsView;
use crate::pool::{Dead, Pool};
use crate::reissue::reissue;
use ffleet_runtime::messages::{self, SegmentState};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::unit_protocol::Seen;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Ctx, pool: Pool, jobs: JobsView, term: CancellationToken) {
    let every = (ctx.config.scheduler.heartbeat_ttl() / 6)
        .clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = term.cancelled() => return,
        }
        for dead in pool.newly_dead() {
            hand_on(&ctx, &pool, &jobs, dead).await;
        }
    }
}

async fn hand_on(ctx: &Ctx, pool: &Pool, jobs: &JobsView, dead: Dead) {
    let node = dead.heartbeat.node_id.clone();
    // The watch may lag (or this process may have been paused): only the key itself is proof.
    // A read older than the heartbeat the pool last saw says nothing about the node (revisions
    // only grow; a stream leader catching up after an election can answer with an old one).
    match ctx.workers.store().entry(node.as_str()).await {
        Ok(Some(e)) if e.revision < dead.revision => {
            tracing::debug!(node = %node, read_at = e.revision, seen_at = dead.revision, "silent node's key read older than its last heartbeat; judged again later");
            pool.revive_unread(&node);
            return;
        }
        Ok(Some(e))
            if e.revision > dead.revision
                && e.operation == async_nats::jetstream::kv::Operation::Put =>
        {
            if let Ok(hb) = messages::decode("heartbeat", &e.value) {
                pool.revive(&node, hb, e.revision);
                return;
            }
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
            None => match ctx.jobs.get(held.job_id.as_str()).await {
                Ok(Some((j, _))) => j,
                _ => continue,
            },
        };
        let seen = Seen {
            state: SegmentState::Running,
            owner: Some(&node),
        };
        let moved = reissue(ctx, &job, held.unit, held.attempt, seen).await;
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
