//! One `segment_done` report: a failure ends the job; a result is collected, progress is
//! published, and the report that completes the set merges the job while the message is kept
//! alive. A redelivered report of a job left merging (its merger died) merges it again: the merge
//! writes to a temporary name and renames, so running it twice is harmless.

use crate::collect::{Collect, collect};
use crate::media::Media;
use crate::merge::MergeError;
use crate::reissue::{self, ReissueError};
use async_nats::jetstream::Message;
use ffleet_runtime::jobs::JobError;
use ffleet_runtime::messages::events::{Progress, SegmentOutcome};
use ffleet_runtime::messages::{CURRENT, CloudEvent, JobEvent, JobState};
use ffleet_runtime::nats::ack::{self, KeepAlive, Outcome};
use ffleet_runtime::nats::kv::KvError;
use ffleet_runtime::nats::{BoxError, NatsError, publish};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, jobs, telemetry};
use std::sync::Arc;
use std::time::Duration;

/// Deliveries of a report whose unit record reads older than the report, before it is let go.
const BEHIND_TRIES: i64 = 30;
/// How long a merge waits for the job record to read as new as the write that started it.
const BEHIND_PATIENCE: Duration = Duration::from_secs(10);

/// Why a report was not processed: it is delivered again.
#[derive(Debug, thiserror::Error)]
enum Unprocessed {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A collect's write, shared by the reports of one job that came together.
    #[error(transparent)]
    Collect(Arc<KvError>),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("merge slots closed")]
    Closed(#[from] tokio::sync::AcquireError),
    /// The merge could not finish for now (media storage unreachable).
    #[error(transparent)]
    Merge(BoxError),
    #[error(transparent)]
    Reissue(#[from] ReissueError),
}

/// The media work of merges and how many may run at once.
pub struct Merges {
    pub media: Arc<dyn Media>,
    pub slots: tokio::sync::Semaphore,
    /// Collects in flight, shared by the report loops so one job's reports share writes.
    pub collects: crate::group::Collects,
    /// When each job's last progress event went out from this merger.
    pub progress: crate::throttle::Throttle,
    /// Word that a job ended (cancelled): its merge stops.
    pub ended: ffleet_runtime::ended::EndedJobs,
}

pub async fn handle(ctx: &Ctx, media: &Merges, msg: Message) -> Outcome {
    let ev = serde_json::from_slice::<CloudEvent>(&msg.payload)
        .ok()
        .and_then(|ce| JobEvent::from_cloudevent(&ce).ok());
    let Some(JobEvent::SegmentDone(done)) = ev else {
        tracing::error!(subject = %msg.subject, "undecodable segment report dropped");
        return Outcome::permanent(Reason::Internal, "undecodable segment report");
    };
    let job = &done.job_id;
    telemetry::spans::job(job);
    let result = match &done.outcome {
        SegmentOutcome::Failed { failure } => {
            let f = Failure::new(
                failure.reason,
                format!(
                    "{} (node {}, attempt {})",
                    failure.message, done.node, done.attempt
                ),
            );
            jobs::fail(ctx, job, &f)
                .await
                .map(|_| ())
                .map_err(Unprocessed::from)
        }
        SegmentOutcome::Encoded { result_key, .. } => {
            match collect(
                ctx,
                &media.collects,
                job,
                done.unit,
                done.attempt,
                result_key,
            )
            .await
            {
                Err(e) => Err(Unprocessed::Collect(e)),
                Ok(Collect::Ignored) => resume_if_orphaned(ctx, media, job, &msg).await,
                Ok(Collect::Cancelled) => {
                    remove_leftover(ctx, job, result_key).await;
                    // The cancel's own follow-up may not have finished (its merger stopped):
                    // run again, idempotently.
                    if let Ok(Some((rec, _))) = ctx.jobs.get(job.as_str()).await {
                        crate::cancel::announce(ctx, &rec);
                    }
                    Ok(())
                }
                Ok(Collect::Behind) if ack::delivered(&msg) < BEHIND_TRIES => {
                    tracing::info!(job = %job, unit = %done.unit, attempt = done.attempt, "unit record read is older than its report, reading again");
                    return Outcome::retry_after(
                        "unit record read older than its report",
                        Duration::from_secs(1),
                    );
                }
                Ok(Collect::Behind) => {
                    // The scheduler's reconciler sends the report again once the record
                    // settles, so nothing is lost by letting this copy go.
                    tracing::warn!(job = %job, unit = %done.unit, attempt = done.attempt, "unit record still older than its report, report left to the reconciler");
                    Ok(())
                }
                Ok(Collect::Progress {
                    done: d,
                    total,
                    frames_done,
                    frames_total,
                }) => {
                    let due = media.progress.due(job, d, total);
                    publish_progress(ctx, due, job, d, total, frames_done, frames_total).await
                }
                Ok(Collect::Merge { at }) => run_merge(ctx, media, job, &msg, at).await,
            }
        }
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "segment report not processed, will retry");
            Outcome::transient(e)
        }
    }
}

/// Removes a result stored after its job was cancelled (and after the cancel's cleanup): only
/// a key of that job's own scratch, whatever the report says.
async fn remove_leftover(ctx: &Ctx, job: &JobId, key: &str) {
    if ffleet_runtime::storage::keys::job_of(key) != Some(job.as_str()) {
        tracing::warn!(job = %job, key, "report of a cancelled job names a key outside its scratch, left");
        return;
    }
    match ctx.storage.delete(key).await {
        Ok(()) => tracing::debug!(job = %job, key, "result of a cancelled job removed"),
        Err(e) => {
            tracing::warn!(job = %job, key, error = %e, "result of a cancelled job not removed")
        }
    }
}

async fn publish_progress(
    ctx: &Ctx,
    due: bool,
    job: &JobId,
    done: usize,
    total: usize,
    frames_done: u64,
    frames_total: u64,
) -> Result<(), Unprocessed> {
    if !due {
        return Ok(());
    }
    let percent = if frames_total > 0 {
        100.0 * frames_done as f64 / frames_total as f64
    } else {
        100.0 * done as f64 / total.max(1) as f64
    };
    let ev = JobEvent::Progress(Progress {
        version: CURRENT,
        job_id: job.clone(),
        units_done: done,
        units_total: total,
        frames_done,
        frames_total,
        percent,
    });
    publish::event(&ctx.js, ctx.retry, ctx.service, &ev).await?;
    Ok(())
}

/// A report that did not count may still be the redelivery of the one that started a merge
/// whose merger died; or the job may have ended without its event getting out.
async fn resume_if_orphaned(
    ctx: &Ctx,
    media: &Merges,
    job: &JobId,
    msg: &Message,
) -> Result<(), Unprocessed> {
    if ack::delivered(msg) <= 1 {
        return Ok(());
    }
    let read = ctx.jobs.get(job.as_str()).await?;
    let Some((rec, revision)) = read else {
        return Ok(());
    };
    match rec.state {
        JobState::Merging | JobState::Finalizing => run_merge(ctx, media, job, msg, revision).await,
        JobState::Cancelled => {
            crate::cancel::announce(ctx, &rec);
            Ok(())
        }
        s if s.is_terminal() => Ok(jobs::republish_terminal(ctx, &rec).await?),
        _ => Ok(()),
    }
}

/// Merges `job` if its record is `merging`. `at`: the revision of the write that moved it
/// there, when this caller made it: a read older than that (a stream leader catching up) is
/// read again rather than taken for a job that no longer needs merging.
async fn run_merge(
    ctx: &Ctx,
    media: &Merges,
    job: &JobId,
    msg: &Message,
    at: u64,
) -> Result<(), Unprocessed> {
    let _keep = KeepAlive::start(msg, ctx.config.streams.ack_wait() / 3);
    let read = ctx
        .jobs
        .get_at_least(job.as_str(), at, BEHIND_PATIENCE)
        .await;
    let Some((rec, _)) = read? else {
        return Ok(());
    };
    if !matches!(rec.state, JobState::Merging | JobState::Finalizing) {
        return Ok(());
    }
    tracing::info!(job = %job, units = rec.collected.len(), "merging");
    let _slot = media.slots.acquire().await?;
    let watched = media.ended.watch(job);
    // Waiting for a slot can take long: a job cancelled meanwhile is not merged at all.
    if let Ok(Some((now, _))) = ctx.jobs.get(job.as_str()).await
        && now.state.is_terminal()
    {
        tracing::info!(job = %job, state = now.state.name(), "job ended while it waited for a merge slot");
        return Ok(());
    }
    // A job cancelled while it merges stops merging (the merge's ffmpeg is killed). The word
    // is checked against the record: a cancelled job never reaches finalizing, so a merge
    // whose record says otherwise (a stale word, an id used again) goes on to its end.
    let merged = tokio::select! {
        m = media.media.merge(ctx, &rec) => m,
        _ = watched.cancelled(ctx) => Err(MergeError::Ended(JobState::Cancelled)),
    };
    match merged {
        Ok(merged) => {
            let out = &merged.output;
            match jobs::complete(ctx, job, out.clone()).await? {
                jobs::Completion::Completed => {
                    tracing::info!(job = %job, output = %out.uri, frames = out.frames, wall_secs = out.wall_secs, "job completed");
                }
                jobs::Completion::AlreadyCompleted => {}
                // Failed while its output went into place (a deadline): no output may be
                // left beside its `failed` event. (A cancel cannot get here: it is refused
                // once the job is finalizing.)
                jobs::Completion::Ended => {
                    tracing::info!(job = %job, "job ended while its output went into place, removing it");
                    media.media.withdraw(ctx, &rec, &merged).await;
                }
            }
            Ok(())
        }
        Err(MergeError::Ended(state)) => {
            tracing::info!(job = %job, state = state.name(), "merge stopped: the job ended meanwhile, nothing put in place");
            Ok(())
        }
        Err(MergeError::Fail(f)) => {
            jobs::fail(ctx, job, &f).await?;
            Ok(())
        }
        Err(MergeError::Retry(why)) => Err(Unprocessed::Merge(why)),
        Err(MergeError::Reissue(units)) => Ok(reissue::reissue(ctx, &rec, &units).await?),
    }
}
