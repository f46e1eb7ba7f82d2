//! Sending units back to encoding when their stored results cannot be merged (missing, or not
//! the bytes their encoder recorded). Each unit's ownership record moves to a new attempt first
//! (revision-checked, only from the attempt that was collected), then the job returns from
//! `merging` to `encoding` without those units, then the new attempts go to the plan queue.
//! A crash between the steps is repaired by a redelivered report (the merge runs again and finds
//! the same units) or by the scheduler's reconciler (a planned unit with no task).

use ffleet_runtime::job_protocol::{self, JobStep};
use ffleet_runtime::jobs::JobError;
use ffleet_runtime::messages::{JobRecord, SegmentState, Task};
use ffleet_runtime::nats::kv::{Change, KvError};
use ffleet_runtime::nats::{NatsError, publish};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::unit_protocol::{self, Step};
use ffleet_runtime::{JobId, Unit, jobs, subjects};

/// Why a repair stopped: each is tried again with the report's redelivery.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The merge's read of the unit was older than its collect: merged again, nothing changed.
    #[error("unit {unit} of job {job} reads done now; merge tried again")]
    ReadsDone { unit: Unit, job: JobId },
    #[error("unit {unit} of job {job} has no record")]
    NoRecord { unit: Unit, job: JobId },
}

/// `units`: each unit to send back, with the attempt whose stored result was refused (none: the
/// unit did not read done at the merge, and only its current attempt is sent again).
pub async fn reissue(
    ctx: &Ctx,
    rec: &JobRecord,
    units: &[(Unit, Option<u32>)],
) -> Result<(), ReissueError> {
    let job = &rec.job_id;
    // A merge run again after its merger stopped while finalizing found a result gone: the job
    // cannot go back to encoding from there (its output may already be in place), so it fails
    // and its merger removes what was placed.
    if rec.state == ffleet_runtime::messages::JobState::Finalizing {
        let f = Failure::new(
            Reason::MergeFailed,
            "a stored unit result was gone when the merge ran again while its output went into place",
        );
        jobs::fail(ctx, job, &f).await?;
        return Ok(());
    }
    let budget = ctx.config.fleet.max_attempts.max(1) * 2;
    let mut attempts = Vec::with_capacity(units.len());
    for &(unit, refused) in units {
        let key = subjects::segment_key(job, unit);
        // A collected unit's record is at the attempt that was collected, done, until this
        // repair moves it on.
        let collected = rec.collected.contains(unit);
        let moved = ctx
            .segments
            .modify(&key, |r| {
                // Only the refused attempt's result is refused: a record at another attempt
                // moved on (a previous try of this repair), and one not done at it was read
                // older than its collect; either keeps its current attempt, sent again.
                let applied = r
                    .filter(|r| collected && refused == Some(r.attempt))
                    .and_then(|_| unit_protocol::apply(r, &Step::Refuse, &now_rfc3339()).ok());
                match (applied, r) {
                    (Some((n, _)), _) => Change::Write(n.clone(), Ok(Some(n))),
                    // Done after all: the merge's read was older; merge again, change nothing.
                    (None, Some(r)) if refused.is_none() && r.state == SegmentState::Done => {
                        Change::Keep(Err(ReissueError::ReadsDone {
                            unit,
                            job: job.clone(),
                        }))
                    }
                    (None, Some(r)) => Change::Keep(Ok(Some(r.clone()))),
                    (None, None) => Change::Keep(Ok(None)),
                }
            })
            .await?;
        let Some(next) = moved? else {
            return Err(ReissueError::NoRecord {
                unit,
                job: job.clone(),
            });
        };
        let attempt = next.attempt;
        if attempt > budget {
            let f = Failure::new(
                Reason::MergeFailed,
                format!("the stored result of unit {unit} failed its check {attempt} times"),
            );
            jobs::fail(ctx, job, &f).await?;
            return Ok(());
        }
        attempts.push((unit, next));
    }
    let uncollect: Vec<(Unit, u64)> = attempts
        .iter()
        .map(|(u, next)| (*u, next.cut.as_ref().map_or(0, |c| c.frames)))
        .collect();
    let step = JobStep::Uncollect { units: &uncollect };
    let back = ctx
        .jobs
        .modify(job.as_str(), |r| {
            match job_protocol::apply(r, &step, &now_rfc3339()) {
                Ok((n, _)) => Change::Write(n.clone(), Some(n)),
                Err(_) => Change::Keep(None),
            }
        })
        .await?;
    let Some(back) = back else {
        return Ok(());
    };
    for (unit, next) in attempts {
        let attempt = next.attempt;
        tracing::warn!(job = %job, unit = %unit, attempt, "unit re-issued after its stored result was refused");
        if let Some(task) = Task::for_unit(&back, unit, next.cut.as_ref(), attempt) {
            publish::plan(&ctx.js, ctx.retry, &task).await?;
        }
    }
    Ok(())
}
