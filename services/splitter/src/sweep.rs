//! The media sweep: every `storage.sweep_interval_secs` a splitter removes what no job will
//! remove from the media bucket. Clients may write the bucket but not purge it, so without a
//! sweep their leftovers would stay for the bucket's week-long max age:
//! - chunks no object refers to, quiet for `storage.abandoned_after_secs` (uploads that died
//!   before their metadata, replaced objects' old chunks);
//! - a job's scratch untouched that long whose job has ended (a cleanup that failed), or has no
//!   record while no request waits undelivered in the queue (an upload no request claimed);
//! - a failed job's encoded units, kept for `ffleet retry`, once untouched for
//!   `storage.keep_failed_results_secs`;
//! - outputs kept past `storage.keep_outputs_secs` (their merger stopped before removing them).
//!
//! With a shared directory only the jobs' scratch is surveyed (its files' modification times).
//!
//! The splitter sweeps because it may both purge media and read job records. Several splitters
//! each sweep, at jittered times: removals are idempotent.

use ffleet_runtime::JobId;
use ffleet_runtime::messages::JobState;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::{Survey, keys};
use ffleet_runtime::subjects;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub orphan_chunk_sets: usize,
    pub abandoned_jobs: usize,
    pub expired_outputs: usize,
}

/// Sweeps until `shutdown` fires (nothing with a shared directory, or an interval of 0).
pub async fn run(ctx: Ctx, shutdown: CancellationToken) {
    let every = ctx.config.storage.sweep_interval_secs;
    if every == 0 {
        return;
    }
    loop {
        // Jittered, so splitters started together do not sweep together.
        let pause = Duration::from_secs(every).mul_f64(0.5 + rand_unit());
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        match once(&ctx).await {
            Ok(s) if s != Swept::default() => tracing::info!(
                orphan_chunk_sets = s.orphan_chunk_sets,
                abandoned_jobs = s.abandoned_jobs,
                expired_outputs = s.expired_outputs,
                "media swept"
            ),
            Ok(_) => tracing::debug!("media swept, nothing to remove"),
            Err(e) => tracing::warn!(error = %e, "media sweep failed, trying again later"),
        }
    }
}

/// A number in [0, 1) from the clock: jitter needs no better randomness.
fn rand_unit() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1000) / 1000.0
}

/// One sweep.
pub async fn once(ctx: &Ctx) -> Result<Swept, ffleet_runtime::storage::StorageError> {
    let cfg = &ctx.config.storage;
    let abandoned = Duration::from_secs(cfg.abandoned_after_secs);
    let keep_outputs = Duration::from_secs(cfg.keep_outputs_secs);
    let Survey {
        objects,
        orphans_removed,
    } = ctx.storage.survey(abandoned).await?;
    let mut swept = Swept {
        orphan_chunk_sets: orphans_removed,
        ..Swept::default()
    };
    let mut quiet_jobs = BTreeSet::new();
    let mut live_jobs = BTreeSet::new();
    // How long since each job's scratch was last written.
    let mut untouched: BTreeMap<String, Duration> = BTreeMap::new();
    for obj in &objects {
        if keys::kept_output_job(&obj.name).is_some() {
            if obj.age >= keep_outputs {
                match ctx.storage.delete(&obj.name).await {
                    Ok(()) => swept.expired_outputs += 1,
                    // A name that is no key (anyone may write one) must not stop the sweep.
                    Err(e) => {
                        tracing::warn!(name = obj.name, error = %e, "kept output not removed")
                    }
                }
            }
        } else if let Some(job) = keys::job_of(&obj.name) {
            untouched
                .entry(job.to_owned())
                .and_modify(|a| *a = (*a).min(obj.age))
                .or_insert(obj.age);
            // One recent object keeps the whole scratch while the job is at work.
            if obj.age >= abandoned {
                quiet_jobs.insert(job.to_owned());
            } else {
                live_jobs.insert(job.to_owned());
            }
        }
    }
    // A request not yet delivered to a splitter has no record yet: while any waits, media
    // without a record may be its upload, and stays. (A delivered one gets its record before
    // its input is read.)
    let waiting = requests_waiting(ctx).await;
    if waiting.is_none() {
        tracing::debug!("splitter queue not read: media without a record stays this time");
    }
    let queue_empty = waiting == Some(0);
    // An ended job's media goes whatever its age: the scheduler, which fails the jobs it cannot
    // place or that pass their deadline, has no grant to remove media itself.
    for job in quiet_jobs.union(&live_jobs) {
        let quiet = !live_jobs.contains(job);
        if !abandoned_job(ctx, job, quiet, queue_empty, &untouched).await {
            continue;
        }
        let Ok(id) = JobId::new(job.as_str()) else {
            continue;
        };
        // Every object the survey listed under the job (some may be missing from the job's
        // index: stored by other tools), then whatever the index still names.
        let under = keys::job_prefix(&id);
        let listed = objects
            .iter()
            .filter(|o| keys::job_of(&o.name) == Some(job.as_str()));
        let mut removed = Ok(());
        for obj in listed {
            if let Err(e) = ctx.storage.delete(&obj.name).await {
                removed = Err(e);
                break;
            }
        }
        if removed.is_ok() {
            removed = ctx.storage.delete_prefix(&under).await;
        }
        match removed {
            Ok(()) => {
                tracing::info!(job, "abandoned job media removed");
                swept.abandoned_jobs += 1;
            }
            Err(e) => tracing::warn!(job, error = %e, "abandoned job media not removed"),
        }
    }
    Ok(swept)
}

/// Retries in a chain followed at most: each is a job someone asked for by hand.
const MAX_CHAIN: usize = 32;

/// Whether a retry of failed job `rec` may still read its scratch (its kept results, its
/// upload): a retry down its chain (`retried_as`, then that job's) that is still running, or
/// that failed and keeps its own results (which may name this job's) for a retry of its own.
async fn retry_reads(
    ctx: &Ctx,
    rec: &ffleet_runtime::messages::JobRecord,
    untouched: &BTreeMap<String, Duration>,
    keep: Duration,
) -> bool {
    let mut next = rec.retried_as.clone();
    for _ in 0..MAX_CHAIN {
        let Some(id) = next else {
            return false;
        };
        let retry = match ctx.jobs.get(id.as_str()).await {
            Ok(Some((r, _))) => r,
            // Not taken in yet (or refused): nothing reads this job's media yet.
            Ok(None) => return false,
            Err(_) => return true,
        };
        match retry.state {
            JobState::Failed => {
                if untouched
                    .get(id.as_str())
                    .is_some_and(|since| *since < keep)
                {
                    return true;
                }
            }
            s if s.is_terminal() => return false,
            _ => return true,
        }
        next = retry.retried_as;
    }
    false
}

/// Requests not yet delivered to a splitter (every submit subject), or `None` when that cannot
/// be read.
async fn requests_waiting(ctx: &Ctx) -> Option<u64> {
    let stream = ctx
        .js
        .get_stream_no_info(subjects::STREAM_JOBS)
        .await
        .ok()?;
    let mut waiting = 0;
    for name in [
        subjects::CONSUMER_SPLITTER,
        subjects::CONSUMER_SPLITTER_PRIVILEGED,
        subjects::CONSUMER_SPLITTER_TENANTS,
    ] {
        waiting += stream.consumer_info(name).await.ok()?.num_pending;
    }
    Some(waiting)
}

/// Whether `job`'s scratch is nobody's: the job has no record (no request claimed the upload,
/// or its record is long gone), its media is `quiet` (untouched for `abandoned_after_secs`) and
/// no request waits undelivered in the queue (`queue_empty`); or it has ended (its cleanup did
/// not finish, or the service that ended it may not remove media), unless a failed job's
/// scratch is kept on purpose, or for a retry: written less than
/// `storage.keep_failed_results_secs` ago (`untouched`: each job's scratch, how long since its
/// last write), or still read by a retry (`retry_reads`). A record that cannot be read keeps
/// the media.
async fn abandoned_job(
    ctx: &Ctx,
    job: &str,
    quiet: bool,
    queue_empty: bool,
    untouched: &BTreeMap<String, Duration>,
) -> bool {
    let cfg = &ctx.config.storage;
    let keep = Duration::from_secs(cfg.keep_failed_results_secs);
    let since = untouched.get(job).copied().unwrap_or_default();
    match ctx.jobs.get(job).await {
        Ok(None) => quiet && queue_empty,
        Ok(Some((rec, _))) => match rec.state {
            JobState::Completed | JobState::Cancelled => true,
            JobState::Failed => {
                !cfg.keep_failed_scratch
                    && since >= keep
                    && !retry_reads(ctx, &rec, untouched, keep).await
            }
            _ => false,
        },
        Err(e) => {
            tracing::debug!(job, error = %e, "job record not read, its media stays");
            false
        }
    }
}
