//! Releasing one routed task: check it is current, record the routing in the unit's ownership
//! record (revision-checked), publish it to the capability queue. The backlog acks its plan
//! message once this says the task went out or is no longer wanted.

use ffleet_runtime::messages::heartbeat::GpuClass;
use ffleet_runtime::messages::{RecordCopy, Task};
use ffleet_runtime::nats::kv::Change;
use ffleet_runtime::nats::publish;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::unit_protocol::{self, Refused, Step};
use ffleet_runtime::{Capability, subjects, telemetry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Published to the capability queue.
    Published,
    /// Superseded, orphaned or already claimed: nothing to publish.
    Dropped,
    /// KV or JetStream trouble: keep the task and try again next round.
    Retry,
}

/// What the unit record said to a route.
enum Route {
    /// Routed; the GPU class the attempt prefers.
    Routed(Option<GpuClass>),
    /// Claimed or finished already: a redelivery of a task that went out.
    Claimed,
    /// The unit moved on, or its job is gone.
    Stale,
    /// The record read is older than the task's attempt.
    Lagging,
}

/// The GPU class a re-issued accelerator attempt should prefer: the class of the node that ran
/// the unit before, if a live node of that class offers the capability (otherwise preferring
/// it would only delay the task). First attempts and CPU work prefer nothing: x264 gives the
/// same bytes on every node.
pub fn preferred_class(
    last: Option<&GpuClass>,
    attempt: u32,
    cap: &Capability,
    live: &[GpuClass],
) -> Option<GpuClass> {
    let last = last?;
    (attempt > 1 && cap.is_gpu() && live.contains(last)).then(|| last.clone())
}

/// `live_classes`: GPU classes of the live nodes that offer `cap`.
pub async fn release(
    ctx: &Ctx,
    task: &Task,
    cap: &Capability,
    slots: u32,
    live_classes: &[GpuClass],
) -> Released {
    let key = subjects::segment_key(&task.job_id, task.unit);
    let attempt = task.attempt;
    let step = Step::Route {
        attempt,
        capability: cap,
    };
    // The plan message carries the record as the splitter wrote it: when nothing wrote since,
    // the route costs no read.
    let routed = ctx
        .segments
        .modify_known(&key, task.known_record(), |rec| {
            match unit_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((r, _)) => {
                    let class = preferred_class(r.gpu_class.as_ref(), attempt, cap, live_classes);
                    Change::Write(r, Route::Routed(class))
                }
                // Already claimed: this is a redelivery of a task that went out.
                Err(Refused::State(_) | Refused::Finished(_)) => Change::Keep(Route::Claimed),
                // The record read is older than the re-issue that made this task (a server
                // catching up): kept for the next round instead of lost.
                Err(why) if why.predates(attempt) => Change::Keep(Route::Lagging),
                Err(_) => Change::Keep(Route::Stale),
            }
        })
        .await
        .map(|(route, written)| (route, written.and_then(|(r, rev)| RecordCopy::of(r, rev))));
    match routed {
        Err(e) => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "routing record update failed");
            Released::Retry
        }
        Ok((Route::Stale, _)) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, "stale or orphaned task dropped");
            Released::Dropped
        }
        Ok((Route::Lagging, _)) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, attempt, "unit record read older than the task, kept");
            Released::Retry
        }
        Ok((Route::Claimed, _)) => Released::Dropped,
        Ok((Route::Routed(prefer_class), copy)) => {
            let task = Task {
                capability: Some(cap.clone()),
                slots,
                prefer_class,
                // The encoder's claim starts from the record this route wrote.
                record: copy,
                ..task.clone()
            };
            telemetry::spans::task(&task);
            // A later attempt is on its job's critical path: it goes ahead of the backlog.
            let subject = if task.attempt > 1 {
                subjects::tasks_retry(cap)
            } else {
                subjects::tasks_encode(cap)
            };
            match publish::task(&ctx.js, ctx.retry, subject, &task, "encode").await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reissued_gpu_attempt_prefers_the_class_that_ran_it_when_one_is_live() {
        let class = |m: &str| GpuClass {
            model: m.into(),
            driver: "550.54.15".into(),
        };
        let (nvenc, cpu) = (Capability::new("nvenc").unwrap(), Capability::cpu());
        let l4 = class("NVIDIA L4");
        let live = [class("NVIDIA T4"), l4.clone()];
        assert_eq!(
            preferred_class(Some(&l4), 2, &nvenc, &live),
            Some(l4.clone())
        );
        // First attempts, CPU work, no record of a class, or no such node alive: no preference.
        assert_eq!(preferred_class(Some(&l4), 1, &nvenc, &live), None);
        assert_eq!(preferred_class(Some(&l4), 2, &cpu, &live), None);
        assert_eq!(preferred_class(None, 2, &nvenc, &live), None);
        assert_eq!(preferred_class(Some(&l4), 2, &nvenc, &live[..1]), None);
        // The same model on another driver is another class.
        let newer = GpuClass {
            driver: "570.86.15".into(),
            ..l4.clone()
        };
        assert_eq!(preferred_class(Some(&newer), 2, &nvenc, &live), None);
    }
}
