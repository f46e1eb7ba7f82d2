//! Terminal job transitions shared by the services that can end a job: a revision-checked move
//! to `failed`/`completed`/`cancelled` in the jobs bucket (`job_protocol`'s `Fail`, `Complete`
//! and `Cancel`), then exactly one terminal event, then scratch cleanup. Only the caller whose
//! update wins publishes, so a job never gets two terminal events.

use crate::job_protocol::{self, JobRefused, JobStep};
use crate::messages::events::{Cancelled, Completed};
use crate::messages::records::OutputInfo;
use crate::messages::{JobEvent, JobRecord, JobState};
use crate::nats::kv::{Change, KvError};
use crate::nats::{NatsError, publish};
use crate::reason::Failure;
use crate::runtime::Ctx;
use crate::time::now_rfc3339;
use crate::{JobId, storage, telemetry};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Fails the job unless it already ended. Returns whether this call failed it.
pub async fn fail(ctx: &Ctx, job: &JobId, failure: &Failure) -> Result<bool, JobError> {
    let step = JobStep::Fail { failure };
    let won = ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((n, _)) => Change::Write(n, true),
                Err(_) => Change::Keep(false),
            }
        })
        .await?;
    if won {
        // Before the event: whoever hears of the end may submit the next job at once.
        crate::tenants::release(ctx, job).await;
        tracing::warn!(job = %job, reason = %failure.reason, message = %failure.message, "job failed");
        telemetry::metrics::job_failed(failure.reason);
        telemetry::spans::fail(&tracing::Span::current(), failure);
        publish::event(
            &ctx.js,
            ctx.retry,
            ctx.service,
            &JobEvent::failed(Some(job.clone()), failure),
        )
        .await?;
        if !ctx.config.storage.keep_failed_scratch {
            clean_scratch(ctx, job).await;
        }
    }
    Ok(won)
}

/// What became of a `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// This call completed the job.
    Completed,
    /// The job was cancelled first: its output must go.
    Cancelled,
    /// Anything else (ended before, gone): nothing changed.
    Refused,
}

/// Completes a job that is merging.
pub async fn complete(ctx: &Ctx, job: &JobId, out: OutputInfo) -> Result<Completion, JobError> {
    let step = JobStep::Complete { output: &out };
    let segments = ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((n, _)) => {
                    let segments = n.plan.as_ref().map_or(0, |p| p.segments as usize);
                    Change::Write(n, Ok(segments))
                }
                Err(JobRefused::Terminal(JobState::Cancelled)) => {
                    Change::Keep(Err(Completion::Cancelled))
                }
                Err(_) => Change::Keep(Err(Completion::Refused)),
            }
        })
        .await?;
    let segments = match segments {
        Ok(s) => s,
        Err(not) => return Ok(not),
    };
    crate::tenants::release(ctx, job).await;
    telemetry::metrics::job_completed();
    publish::event(
        &ctx.js,
        ctx.retry,
        ctx.service,
        &completed_event(job, &out, segments),
    )
    .await?;
    clean_scratch(ctx, job).await;
    Ok(Completion::Completed)
}

/// What a cancel request found and did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// This call cancelled the job; its record now.
    Cancelled(Box<JobRecord>),
    /// The job had ended already (completed, failed, or cancelled before): its record, as it
    /// is, unchanged.
    Ended(Box<JobRecord>),
    /// No such job.
    Unknown,
}

/// Cancels `job` unless it already ended: one revision-checked write, then (only for the call
/// whose write wins) the tenant's slot, the `cancelled` event and the scratch cleanup. Units
/// still running are dropped by their nodes when the scheduler sees the job end; a merge under
/// way finds its `complete` refused and removes its output.
pub async fn cancel(ctx: &Ctx, job: &JobId) -> Result<Cancel, JobError> {
    let step = JobStep::Cancel;
    let outcome = ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((n, _)) => Change::Write(n.clone(), Cancel::Cancelled(Box::new(n))),
                Err(JobRefused::Missing) => Change::Keep(Cancel::Unknown),
                Err(_) => Change::Keep(match rec {
                    Some(r) => Cancel::Ended(Box::new(r.clone())),
                    None => Cancel::Unknown,
                }),
            }
        })
        .await?;
    if let Cancel::Cancelled(rec) = &outcome {
        let during = rec.cancelled_during.unwrap_or(JobState::Splitting);
        crate::tenants::release(ctx, job).await;
        tracing::info!(job = %job, during = during.name(), "job cancelled");
        telemetry::metrics::job_cancelled();
        publish::event(
            &ctx.js,
            ctx.retry,
            ctx.service,
            &JobEvent::Cancelled(Cancelled::of_record(rec, during)),
        )
        .await?;
        clean_scratch(ctx, job).await;
    }
    Ok(outcome)
}

fn completed_event(job: &JobId, out: &OutputInfo, segments: usize) -> JobEvent {
    JobEvent::Completed(Completed::of_output(job, out, segments))
}

/// Re-publishes a finished job's terminal event. The stable message id makes this a no-op when
/// the first publish got through; it repairs a crash between the state change and the publish.
pub async fn republish_terminal(ctx: &Ctx, rec: &JobRecord) -> Result<(), JobError> {
    let ev = match (&rec.state, &rec.output, &rec.failure) {
        (JobState::Completed, Some(out), _) => completed_event(
            &rec.job_id,
            out,
            rec.plan.as_ref().map_or(0, |p| p.segments as usize),
        ),
        (JobState::Failed, _, Some(f)) => JobEvent::failed(Some(rec.job_id.clone()), f),
        (JobState::Cancelled, _, _) => JobEvent::Cancelled(Cancelled::of_record(
            rec,
            rec.cancelled_during.unwrap_or(JobState::Splitting),
        )),
        _ => return Ok(()),
    };
    publish::event(&ctx.js, ctx.retry, ctx.service, &ev).await?;
    Ok(())
}

/// Removes what the fleet keeps of `job` in its media storage (cuts, encoded units, copied
/// source): what a service that ended the job, or found it ended, leaves behind.
pub async fn clean_scratch(ctx: &Ctx, job: &JobId) {
    if let Err(e) = ctx
        .storage
        .delete_prefix(&storage::keys::job_prefix(job))
        .await
    {
        tracing::warn!(job = %job, error = %e, "could not remove scratch media");
    }
}
