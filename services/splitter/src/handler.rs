//! One submit message, start to finish: parse, validate, record the job, probe, cut, plan,
//! publish tasks. Every outcome maps to one disposition of the message.
//!
//! Redelivery is safe at every step: the job record is created only once, a redelivered request
//! for a job still splitting resumes it, one already planned only republishes its tasks (which
//! the stream de-duplicates), and anything else is a duplicate and is dropped.

use crate::{inspect, split, validate};
use async_nats::jetstream::Message;
use ffleet_shared::messages::events::Accepted;
use ffleet_shared::messages::records::Plan;
use ffleet_shared::messages::{
    CURRENT, JobEvent, JobRecord, JobRequest, JobState, SegmentRecord, Task,
};
use ffleet_shared::nats::ack::{self, Disposition, KeepAlive};
use ffleet_shared::nats::kv::Change;
use ffleet_shared::nats::publish;
use ffleet_shared::reason::{Failure, Reason};
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{JobId, jobs, subjects, telemetry};
use std::time::Duration;

const RETRY: Disposition = Disposition::Retry(Duration::from_secs(2));

pub async fn handle(ctx: &Ctx, msg: Message) -> Disposition {
    let msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    let req = match JobRequest::parse(&msg.payload, msg_id.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(job = ?e.job_id, reason = %e.failure.reason, message = %e.failure.message, "request refused");
            let ev = JobEvent::failed(e.job_id, &e.failure);
            return match publish::event(&ctx.js, ctx.service, &ev).await {
                Ok(_) => Disposition::Term,
                Err(err) => {
                    tracing::warn!(error = %err, "could not publish failed event");
                    RETRY
                }
            };
        }
    };
    telemetry::spans::job(&req.job_id);
    let _keep = KeepAlive::start(&msg, ctx.config.streams.ack_wait() / 3);
    match process(ctx, &req, ack::delivered(&msg)).await {
        Ok(()) => Disposition::Ack,
        Err(Step::Retry(why)) => {
            tracing::warn!(job = %req.job_id, error = %why, "splitting interrupted, will retry");
            RETRY
        }
    }
}

/// Errors that leave the job where it is, to be retried on redelivery.
enum Step {
    Retry(String),
}

impl<E: std::fmt::Display> From<E> for Step {
    fn from(e: E) -> Self {
        Step::Retry(e.to_string())
    }
}

async fn process(ctx: &Ctx, req: &JobRequest, delivered: i64) -> Result<(), Step> {
    let job = &req.job_id;
    let valid = validate::validate(&ctx.config, req);
    let profile = valid
        .as_ref()
        .map(|v| v.profile.clone())
        .unwrap_or_else(|_| req.profile.clone().unwrap_or_default());
    let record = JobRecord::new(req.clone(), profile);
    if ctx.jobs.create(job.as_str(), &record).await?.is_none() {
        return existing(ctx, job, delivered).await;
    }
    let valid = match valid {
        Ok(v) => v,
        Err(failure) => return fail(ctx, job, &failure).await,
    };
    tracing::info!(job = %job, input = %valid.input.display(), profile = %valid.profile, "job accepted");
    telemetry::metrics::job_accepted();
    accept_and_split(ctx, req, &valid).await
}

/// Announces the job (again, after a crash: the stable message id makes a repeat a no-op) and
/// splits it.
async fn accept_and_split(
    ctx: &Ctx,
    req: &JobRequest,
    valid: &validate::Validated,
) -> Result<(), Step> {
    publish::event(
        &ctx.js,
        ctx.service,
        &JobEvent::Accepted(Accepted {
            version: CURRENT,
            job_id: req.job_id.clone(),
            input: req.input.clone(),
            output: req.output.clone(),
            profile: valid.profile.clone(),
            priority: req.priority,
        }),
    )
    .await?;
    split_and_plan(ctx, req, valid).await
}

/// A record exists: resume, republish, or drop a duplicate.
async fn existing(ctx: &Ctx, job: &JobId, delivered: i64) -> Result<(), Step> {
    let Some((rec, _)) = ctx.jobs.get(job.as_str()).await? else {
        return Ok(());
    };
    if delivered <= 1 {
        tracing::info!(job = %job, state = ?rec.state, "duplicate job request dropped");
        return Ok(());
    }
    match rec.state {
        JobState::Splitting => {
            tracing::info!(job = %job, "resuming split after redelivery");
            match validate::validate(&ctx.config, &rec.request) {
                Ok(v) => accept_and_split(ctx, &rec.request, &v).await,
                Err(f) => fail(ctx, job, &f).await,
            }
        }
        JobState::Encoding => publish_tasks(ctx, &rec).await,
        _ if rec.state.is_terminal() => Ok(jobs::republish_terminal(ctx, &rec).await?),
        _ => Ok(()),
    }
}

async fn fail(ctx: &Ctx, job: &JobId, failure: &Failure) -> Result<(), Step> {
    jobs::fail(ctx, job, failure).await?;
    Ok(())
}

async fn split_and_plan(
    ctx: &Ctx,
    req: &JobRequest,
    valid: &validate::Validated,
) -> Result<(), Step> {
    let job = &req.job_id;
    let src = match inspect::inspect(&ctx.config, &valid.input, valid.container).await {
        Ok(s) => s,
        Err(f) => return fail(ctx, job, &f).await,
    };
    if let Err(f) = convertible(ctx, &valid.profile, &src) {
        return fail(ctx, job, &f).await;
    }
    let secs = req
        .segment_seconds
        .unwrap_or(ctx.config.splitter.default_segment_secs);
    let segments = match split::split(ctx, job, &valid.input, &src.video_map, &src, secs).await {
        Ok(s) => s,
        Err(f) => return fail(ctx, job, &f).await,
    };
    tracing::info!(job = %job, frames = src.info.video.frames, segments = segments.len(), "split done");
    let mut warnings = src.tracks.warnings.clone();
    if src.tracks.tracks.is_empty() && src.extras {
        // The tracks unit carries chapters and metadata, and ffmpeg writes no file without a
        // stream: a video-only source's extras have nothing to travel in.
        warnings.push("chapters and container metadata of a source with no audio or subtitle track are not kept".into());
    }
    let plan = Plan {
        audio: !src.tracks.tracks.is_empty(),
        tracks: src.tracks.tracks.clone(),
        warnings,
        segments,
        container: valid.container,
        source_path: valid.input.display().to_string(),
        output_path: valid.output.display().to_string(),
    };
    for unit in plan.units() {
        let key = subjects::segment_key(job, unit);
        ctx.segments.create(&key, &SegmentRecord::planned()).await?;
    }
    let info = src.info;
    let rec = ctx
        .jobs
        .modify(job.as_str(), |r| match r {
            Some(r) if r.state == JobState::Splitting => {
                let mut r = r.clone();
                r.state = JobState::Encoding;
                r.source = Some(info.clone());
                r.plan = Some(plan.clone());
                r.touch();
                Change::Write(r.clone(), Some(r))
            }
            _ => Change::Keep(None),
        })
        .await?;
    match rec {
        Some(rec) => publish_tasks(ctx, &rec).await,
        None => Ok(()),
    }
}

/// Refuses at submit what no variant of the profile could encode, instead of failing every
/// attempt later: pictures too small to hold one chroma block of the output format.
fn convertible(ctx: &Ctx, profile: &str, src: &inspect::Inspected) -> Result<(), Failure> {
    let picture = src.info.video.picture();
    let Some(p) = ctx.config.profile(profile) else {
        return Ok(());
    };
    for (name, variant) in &p.variants {
        if picture.conversion(variant.pix_fmt()).is_none() {
            return Err(Failure::new(
                Reason::UnsupportedInput,
                format!(
                    "a {}x{} video cannot be encoded by profile {profile:?} ({name}: pixel format {})",
                    picture.width,
                    picture.height,
                    variant.pix_fmt().unwrap_or("of the source")
                ),
            ));
        }
    }
    Ok(())
}

/// Publishes the first attempt of every unit to the plan queue (de-duplicated by id).
async fn publish_tasks(ctx: &Ctx, rec: &JobRecord) -> Result<(), Step> {
    let tasks = Task::first_attempts(rec);
    for t in &tasks {
        publish::task(&ctx.js, subjects::TASKS_PLAN.into(), t, "plan").await?;
    }
    tracing::debug!(job = %rec.job_id, tasks = tasks.len(), "tasks published");
    Ok(())
}
