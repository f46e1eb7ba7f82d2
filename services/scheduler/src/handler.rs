//! One planned task: check it is current, route it, record the routing in the unit's ownership
//! record (revision-checked), publish it to the capability queue, ack.

use crate::pool::Pool;
use crate::route::route;
use async_nats::jetstream::Message;
use ffleet_shared::messages::{self, SegmentState, Task};
use ffleet_shared::nats::ack::Disposition;
use ffleet_shared::nats::kv::Change;
use ffleet_shared::nats::publish;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{subjects, telemetry};
use std::time::Duration;

const RETRY: Disposition = Disposition::Retry(Duration::from_secs(1));

pub async fn handle(ctx: &Ctx, pool: &Pool, msg: Message) -> Disposition {
    let mut task: Task = match messages::decode("task", &msg.payload) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "undecodable task dropped");
            return Disposition::Term;
        }
    };
    telemetry::spans::task(&task);
    let Some(profile) = ctx.config.profile(&task.profile) else {
        // The splitter validated the profile against its own config; ours differs.
        tracing::error!(job = %task.job_id, profile = %task.profile, "profile unknown to this scheduler");
        return RETRY;
    };
    let Some(cap) = route(profile, |c| pool.has(c)) else {
        tracing::error!(job = %task.job_id, profile = %task.profile, "profile has no variants");
        return RETRY;
    };
    let key = subjects::segment_key(&task.job_id, task.unit);
    let attempt = task.attempt;
    let c = cap.clone();
    let routed = ctx
        .segments
        .modify(&key, |rec| match rec {
            None => Change::Keep(None),
            Some(r) if r.attempt != attempt => Change::Keep(None),
            Some(r) => match r.state {
                SegmentState::Planned | SegmentState::Queued => {
                    let mut r = r.clone();
                    r.state = SegmentState::Queued;
                    r.capability = Some(c.clone());
                    r.updated_at = ffleet_shared::time::now_rfc3339();
                    Change::Write(r, Some(true))
                }
                // Already claimed: this is a redelivery of a task that went out.
                _ => Change::Keep(Some(false)),
            },
        })
        .await;
    match routed {
        Err(e) => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "routing record update failed");
            RETRY
        }
        Ok(None) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, "stale or orphaned task dropped");
            Disposition::Ack
        }
        Ok(Some(false)) => Disposition::Ack,
        Ok(Some(true)) => {
            task.capability = Some(cap.clone());
            telemetry::spans::task(&task);
            // A later attempt is on its job's critical path: it goes ahead of the backlog.
            let subject = if task.attempt > 1 {
                subjects::tasks_retry(&cap)
            } else {
                subjects::tasks_encode(&cap)
            };
            match publish::task(&ctx.js, subject, &task, "encode").await {
                Ok(_) => {
                    tracing::debug!(job = %task.job_id, unit = %task.unit, capability = %cap, "task routed");
                    Disposition::Ack
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing routed task failed");
                    RETRY
                }
            }
        }
    }
}
