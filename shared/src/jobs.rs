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
use crate::subjects::{self, EventKind};
use crate::time::now_rfc3339;
use crate::{JobId, storage, telemetry};
use async_nats::jetstream::stream::LastRawMessageErrorKind;

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
        let storage = &ctx.config.storage;
        match (
            storage.keep_failed_scratch,
            storage.keep_failed_results_secs,
        ) {
            (true, _) => {}
            (false, 0) => clean_scratch(ctx, job).await,
            (false, _) => keep_for_retry(ctx, job).await,
        }
    }
    Ok(won)
}

/// What became of a `complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// This call completed the job.
    Completed,
    /// It had completed already (a merge run again after its merger stopped): the output that
    /// was put in place is that job's.
    AlreadyCompleted,
    /// The job ended otherwise (failed while finalizing, or gone): the output put in place is
    /// nobody's and must go.
    Ended,
}

/// Completes a job that is merging or finalizing.
pub async fn complete(ctx: &Ctx, job: &JobId, out: OutputInfo) -> Result<Completion, JobError> {
    let step = JobStep::Complete { output: &out };
    let segments = ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((n, _)) => {
                    let segments = n.plan.as_ref().map_or(0, |p| p.segments as usize);
                    let reuses = n.plan.as_ref().map(|p| p.reuses.clone());
                    Change::Write(n, Ok((segments, reuses.unwrap_or_default())))
                }
                Err(JobRefused::Terminal(JobState::Completed)) => {
                    let reuses = rec.and_then(|r| r.plan.as_ref()).map(|p| p.reuses.clone());
                    Change::Keep(Err((Completion::AlreadyCompleted, reuses)))
                }
                Err(_) => Change::Keep(Err((Completion::Ended, None))),
            }
        })
        .await?;
    let (segments, reuses) = match segments {
        Ok(s) => s,
        Err((not, reuses)) => {
            // Completed by an earlier run that may have stopped before its cleanup.
            if let Some(reuses) = reuses {
                clean_scratch(ctx, job).await;
                clean_reused(ctx, &reuses).await;
            }
            return Ok(not);
        }
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
    clean_reused(ctx, &reuses).await;
    Ok(Completion::Completed)
}

/// Whether a merge may put its verified output in place: `Ok(None)` once the job is
/// finalizing (this call moved it there, or an earlier run of the merge did), so a cancel can
/// no longer win; `Ok(Some(state))` when it is no longer merging (cancelled or failed
/// meanwhile, or completed by an earlier run): nothing may be placed.
pub async fn finalize(ctx: &Ctx, job: &JobId) -> Result<Option<JobState>, JobError> {
    let step = JobStep::Finalize;
    Ok(ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((n, _)) => Change::Write(n, None),
                Err(JobRefused::State(JobState::Finalizing)) => Change::Keep(None),
                Err(JobRefused::Terminal(s) | JobRefused::State(s)) => Change::Keep(Some(s)),
                Err(JobRefused::Missing | JobRefused::NoPlan) => {
                    Change::Keep(Some(JobState::Failed))
                }
            }
        })
        .await?)
}

/// What a cancel request found and did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// This call cancelled the job; its record now. `announce_cancelled` is still to run.
    Cancelled(Box<JobRecord>),
    /// The job had ended already (completed, failed, or cancelled before), or is putting its
    /// output in place (`finalizing`: it completes): its record, unchanged.
    Ended(Box<JobRecord>),
    /// No such job.
    Unknown,
}

/// Cancels `job` unless it ended or is finalizing: one revision-checked write. Only the call
/// that wins goes on to `announce_cancelled`.
pub async fn cancel(ctx: &Ctx, job: &JobId) -> Result<Cancel, JobError> {
    let step = JobStep::Cancel;
    Ok(ctx
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
        .await?)
}

/// Everything that follows a cancelled record, each step idempotent, so it is run again
/// whenever a cancelled job is met whose event may not be out (another cancel of it, a late
/// report): the tenant's slot, the one `cancelled` event (published only if the events stream
/// does not hold it: its duplicate window is two minutes, a repair may come later), the word to
/// every node that the job ended (`subjects::jobs_ended`; the scheduler says it again to nodes
/// still holding its units), and the scratch cleanup.
pub async fn announce_cancelled(ctx: &Ctx, rec: &JobRecord) -> Result<(), JobError> {
    let job = &rec.job_id;
    let during = rec.cancelled_during.unwrap_or(JobState::Splitting);
    crate::tenants::release(ctx, job).await;
    let drop = crate::messages::encode(&crate::messages::control::JobDrop::new(job.clone()));
    if let Err(e) = ctx.client.publish(subjects::jobs_ended(), drop).await {
        tracing::debug!(job = %job, error = %e, "ended job not announced to the nodes");
    }
    if !stored(ctx, job, EventKind::Cancelled).await? {
        tracing::info!(job = %job, during = during.name(), "job cancelled");
        telemetry::metrics::job_cancelled();
        publish::event(
            &ctx.js,
            ctx.retry,
            ctx.service,
            &JobEvent::Cancelled(Cancelled::of_record(rec, during)),
        )
        .await?;
    }
    clean_scratch(ctx, job).await;
    if let Some(plan) = &rec.plan {
        clean_reused(ctx, &plan.reuses).await;
    }
    Ok(())
}

/// Whether the events stream holds an event of `kind` for `job` (the newest on its subject).
async fn stored(ctx: &Ctx, job: &JobId, kind: EventKind) -> Result<bool, JobError> {
    let stream = ctx
        .js
        .get_stream_no_info(subjects::STREAM_EVENTS)
        .await
        .map_err(|e| NatsError::op("events stream", e))?;
    match stream
        .get_last_raw_message_by_subject(&subjects::event(Some(job), kind))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(NatsError::op("reading the events stream", e).into()),
    }
}

fn completed_event(job: &JobId, out: &OutputInfo, segments: usize) -> JobEvent {
    JobEvent::Completed(Completed::of_output(job, out, segments))
}

/// Re-publishes a completed or failed job's terminal event. The stable message id makes this a no-op when
/// the first publish got through; it repairs a crash between the state change and the publish.
pub async fn republish_terminal(ctx: &Ctx, rec: &JobRecord) -> Result<(), JobError> {
    let ev = match (&rec.state, &rec.output, &rec.failure) {
        (JobState::Completed, Some(out), _) => completed_event(
            &rec.job_id,
            out,
            rec.plan.as_ref().map_or(0, |p| p.segments as usize),
        ),
        (JobState::Failed, _, Some(f)) => JobEvent::failed(Some(rec.job_id.clone()), f),
        // A cancel's event is the mergers' alone, repaired by `announce_cancelled`.
        _ => return Ok(()),
    };
    publish::event(&ctx.js, ctx.retry, ctx.service, &ev).await?;
    Ok(())
}

/// Removes what a failed job keeps that no retry reuses (its cuts, copies of its source); its
/// encoded units and uploaded source stay for `ffleet retry` (a sweep removes them after
/// `storage.keep_failed_results_secs`).
async fn keep_for_retry(ctx: &Ctx, job: &JobId) {
    for prefix in [
        storage::keys::cuts_prefix(job),
        storage::keys::copies_prefix(job),
    ] {
        if let Err(e) = ctx.storage.delete_prefix(&prefix).await {
            tracing::warn!(job = %job, error = %e, "could not remove scratch media");
        }
    }
}

/// Removes the scratch of the earlier runs whose results a retry merged (`Plan::reuses`): the
/// retry ended, and a retry is made once per job, so nothing else will reuse them.
async fn clean_reused(ctx: &Ctx, reuses: &[JobId]) {
    for job in reuses {
        clean_scratch(ctx, job).await;
    }
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
