//! Releasing one routed task: check it is current, record the routing in the unit's ownership
//! record (revision-checked), publish it to the capability queue. The backlog acks its plan
//! message once this says the task went out or is no longer wanted.

use ffleet_shared::messages::{SegmentState, Task};
use ffleet_shared::nats::kv::Change;
use ffleet_shared::nats::publish;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{Capability, subjects, telemetry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Published to the capability queue.
    Published,
    /// Superseded, orphaned or already claimed: nothing to publish.
    Dropped,
    /// KV or JetStream trouble: keep the task and try again next round.
    Retry,
}

pub async fn release(ctx: &Ctx, task: &Task, cap: &Capability, slots: u32) -> Released {
    let key = subjects::segment_key(&task.job_id, task.unit);
    let attempt = task.attempt;
    let routed = ctx
        .segments
        .modify(&key, |rec| match rec {
            None => Change::Keep(None),
            Some(r) if r.attempt != attempt => Change::Keep(None),
            Some(r) => match r.state {
                SegmentState::Planned | SegmentState::Queued => {
                    let mut r = r.clone();
                    r.state = SegmentState::Queued;
                    r.capability = Some(cap.clone());
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
            Released::Retry
        }
        Ok(None) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, "stale or orphaned task dropped");
            Released::Dropped
        }
        Ok(Some(false)) => Released::Dropped,
        Ok(Some(true)) => {
            let task = Task {
                capability: Some(cap.clone()),
                slots,
                ..task.clone()
            };
            telemetry::spans::task(&task);
            // A later attempt is on its job's critical path: it goes ahead of the backlog.
            let subject = if task.attempt > 1 {
                subjects::tasks_retry(cap)
            } else {
                subjects::tasks_encode(cap)
            };
            match publish::task(&ctx.js, subject, &task, "encode").await {
                Ok(_) => {
                    tracing::debug!(job = %task.job_id, unit = %task.unit, capability = %cap, "task routed");
                    Released::Published
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing routed task failed");
                    Released::Retry
                }
            }
        }
    }
}
