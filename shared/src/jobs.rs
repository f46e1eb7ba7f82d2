//! Terminal job transitions shared by the services that can end a job: a revision-checked move
//! to `failed`/`completed` in the jobs bucket (`job_protocol`'s `Fail` and `Complete`), then
//! exactly one terminal event, then scratch cleanup. Only the caller whose update wins publishes, so a job never gets two terminal events.

use crate::job_protocol::{self, JobStep};
use crate::messages::events::Completed;
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

/// Completes a job that is merging. Returns whether this call completed it.
pub async fn complete(ctx: &Ctx, job: &JobId, out: OutputInfo) -> Result<bool, JobError> {
    let step = JobStep::Complete { output: &out };
    let segments = ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((n, _)) => {
                    let segments = n.plan.as_ref().map_or(0, |p| p.segments as usize);
                    Change::Write(n, Some(segments))
                }
                Err(_) => Change::Keep(None),
            }
        })
        .await?;
    let Some(segments) = segments else {
        return Ok(false);
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
    Ok(true)
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
        _ => return Ok(()),
    };
    publish::event(&ctx.js, ctx.retry, ctx.service, &ev).await?;
    Ok(())
}

async fn clean_scratch(ctx: &Ctx, job: &JobId) {
    if let Err(e) = ctx
        .storage
        .delete_prefix(&storage::keys::job_prefix(job))
        .await
    {
        tracing::warn!(job = %job, error = %e, "could not remove scratch media");
    }
}
