//! Stopping the units of jobs that ended: when the leader sees a job cancelled, it tells every
//! service at once (`subjects::jobs_ended`), so no node takes the job's tasks still queued and
//! a split or merge under way stops; and it tells every live node whose heartbeat holds a unit
//! of an ended job (cancelled, or failed while other units ran) to drop it
//! (`messages::control::JobDrop` on the node's drop subject). The node kills its ffmpeg.
//! (Only cancels go to everyone: a job that fails while its output goes into place must let
//! its merger finish placing, so that the merger can remove it.)
//!
//! It looks when a job is seen to end (the jobs watch) and every `EVERY`, so a node is told
//! within moments of a cancel, and told again while its heartbeat still holds the unit: a
//! message lost on the way, or a task of the job claimed after the first word, costs one
//! more round, not a unit encoded for nothing. Core NATS, not JetStream: a drop is worth
//! nothing once the heartbeat no longer lists the unit.

use crate::jobs_view::JobsView;
use crate::pool::Pool;
use ffleet_runtime::messages::{self, control::JobDrop};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, NodeId, subjects};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the heartbeats are looked through besides when a job ends.
const EVERY: Duration = Duration::from_millis(250);
/// How long after telling a node it is told again if its heartbeat still holds the job.
const AGAIN: Duration = Duration::from_secs(1);

/// Tells nodes to drop ended jobs' units until `term` fires.
pub async fn run(ctx: Ctx, pool: Pool, jobs: JobsView, term: CancellationToken) {
    let mut told = Told::default();
    loop {
        tokio::select! {
            _ = jobs.job_ended() => {}
            _ = tokio::time::sleep(EVERY) => {}
            _ = term.cancelled() => return,
        }
        for job in jobs.take_unannounced() {
            let drop = messages::encode(&JobDrop::new(job.clone()));
            if let Err(e) = ctx.client.publish(subjects::jobs_ended(), drop).await {
                tracing::debug!(job = %job, error = %e, "ended job not announced; its holders are told");
            }
        }
        let due = told.due(pool.holding_ended(|j| jobs.has_ended(j)), Instant::now());
        for (node, job) in due {
            tracing::info!(node = %node, job = %job, "node holds units of an ended job, telling it to drop them");
            let drop = messages::encode(&JobDrop::new(job));
            if let Err(e) = ctx.client.publish(subjects::node_drop(&node), drop).await {
                tracing::debug!(node = %node, error = %e, "drop not sent; sent again next round");
            }
        }
    }
}

/// When each node was last told about each job.
#[derive(Default)]
struct Told(HashMap<(NodeId, JobId), Instant>);

impl Told {
    /// Of `holding` (node, ended job) pairs, those to tell now: not told within `AGAIN`.
    /// Pairs no longer held are forgotten.
    fn due(&mut self, holding: Vec<(NodeId, JobId)>, now: Instant) -> Vec<(NodeId, JobId)> {
        self.0.retain(|pair, _| holding.contains(pair));
        holding
            .into_iter()
            .filter(|pair| match self.0.get(pair) {
                Some(at) if now.duration_since(*at) < AGAIN => false,
                _ => {
                    self.0.insert(pair.clone(), now);
                    true
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_node_is_told_at_once_then_again_only_while_it_still_holds_the_job() {
        let a = NodeId::new("a").unwrap();
        let j = JobId::new("j").unwrap();
        let pair = vec![(a.clone(), j.clone())];
        let mut told = Told::default();
        assert_eq!(told.due(pair.clone(), Instant::now()), pair);
        assert!(told.due(pair.clone(), Instant::now()).is_empty());
        tokio::time::advance(AGAIN).await;
        assert_eq!(told.due(pair.clone(), Instant::now()), pair);
        // Let go of: forgotten, so a later hold of the same job is told at once.
        assert!(told.due(Vec::new(), Instant::now()).is_empty());
        assert_eq!(told.due(pair.clone(), Instant::now()), pair);
    }
}
