//! One submit message, start to finish: parse, validate, record the job, probe, cut, plan,
//! publish tasks. Every way it ends is one `Outcome` of the message.
//!
//! Redelivery is safe at every step: the job record is created only once, a redelivered request
//! for a job still splitting resumes it, one already planned only republishes its tasks (which
//! the stream de-duplicates), and anything else is a duplicate and is dropped.

use crate::config::SplitterConfig;
use crate::media::Media;
use crate::split::SplitError;
use crate::validate::{Input, Output};
use crate::{quota, reuse, sizing, validate};
use async_nats::jetstream::Message;
use ffleet_runtime::job_protocol::{self, JobRefused, JobStep};
use ffleet_runtime::media::cuts;
use ffleet_runtime::messages::events::Accepted;
use ffleet_runtime::messages::records::{Plan, SegmentPlan};
use ffleet_runtime::messages::{
    CURRENT, JobEvent, JobRecord, JobRequest, JobState, RecordCopy, RequestError, SegmentRecord,
    Task,
};
use ffleet_runtime::nats::ack::{self, KeepAlive, Outcome};
use ffleet_runtime::nats::kv::Change;
use ffleet_runtime::nats::{BoxError, at_cap, out_of_space, publish};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::{self, Local, Roots, StorageError, open_input_link};
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::unit_protocol::{self, Step};
use ffleet_runtime::{JobId, Tenant, Unit, jobs, subjects, telemetry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Deliveries of a request whose split keeps failing on transient errors (storage or JetStream
/// unreachable) before the job is failed. With the backoff of [`retry_delay`] this is about
/// eleven minutes: a cluster that lost quorum or a leader has long recovered by then, and a job
/// must end with an event rather than wait forever.
const SPLIT_TRIES: i64 = 25;

/// The wait before a request is delivered again after its `delivered`-th try failed: short at
/// first (a leader election takes seconds), doubling to half a minute.
fn retry_delay(delivered: i64) -> Duration {
    let doublings = delivered.saturating_sub(1).clamp(0, 4) as u32;
    Duration::from_secs((2u64 << doublings).min(30))
}

/// Tries at publishing a refusal before the request is dropped anyway (logged): a refused
/// request is never retried to exhaustion.
const REFUSAL_TRIES: i64 = 3;

/// How long a request whose job record exists waits for a read that shows it.
const EXISTING_PATIENCE: Duration = Duration::from_secs(10);

/// What one splitter works with beside the context: how it runs media, and its own last reading
/// of the pool's size (jobs split in a burst share it).
pub struct Splitter {
    pub media: Arc<dyn Media>,
    pub pool: sizing::PoolReading,
    pub settings: SplitterConfig,
    /// When each tenant's jobs in flight were last checked against their records.
    pub prunes: quota::Prunes,
    /// Word that a job ended (cancelled): its split stops.
    pub ended: ffleet_runtime::ended::EndedJobs,
}

pub async fn handle(ctx: &Ctx, sp: &Splitter, msg: Message) -> Outcome {
    let msg_id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    let privileged = msg.subject.as_str() == subjects::JOBS_SUBMIT_PRIVILEGED;
    // Only a tenant's credentials may publish on its subject, so the subject says whose it is.
    let tenant = subjects::tenant_of_submit(msg.subject.as_str());
    let delivered = ack::delivered(&msg);
    let sequence = msg.info().map_or(0, |i| i.stream_sequence);
    let parsed = JobRequest::parse(&msg.payload, msg_id.as_deref())
        .map(|r| scoped(r, tenant.as_ref()))
        .map_err(|e| RequestError {
            job_id: scope_id(e.job_id, tenant.as_ref()),
            ..e
        })
        .and_then(|r| {
            if privileged {
                return Ok(r);
            }
            let max = sp.settings.max_priority(tenant.as_ref());
            match (r.check_priority(max), &tenant) {
                (Ok(()), _) => Ok(r),
                // A tenant has no privileged subject to point to: its own cap is the answer.
                (Err(f), Some(t)) => Err(RequestError {
                    failure: Failure::new(
                        f.reason,
                        format!(
                            "priority {} is above {max}, the most tenant {t} may ask for \
                             (splitter.tenants.{t}.max_priority)",
                            r.priority
                        ),
                    ),
                    job_id: Some(r.job_id),
                }),
                (Err(failure), None) => Err(RequestError {
                    job_id: Some(r.job_id),
                    failure,
                }),
            }
        });
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return refuse(ctx, e, tenant.as_ref(), sequence, delivered).await,
    };
    let _keep = KeepAlive::start(&msg, ctx.config.streams.ack_wait() / 3);
    if let Some(t) = &tenant {
        let max = sp.settings.max_active_jobs(t);
        let refusal = match quota::admit(ctx, &sp.prunes, t, &req.job_id, max).await {
            Ok(refusal) => refusal,
            // Refused once the split's own budget of transient failures is spent: a request is
            // never retried forever.
            Err(e) if delivered >= SPLIT_TRIES => Some(Failure::new(
                Reason::SplitFailed,
                format!(
                    "the tenant's jobs in flight could not be read at each of {delivered} \
                     tries; the last: {e}"
                ),
            )),
            Err(e) => {
                tracing::warn!(job = %req.job_id, error = %e, "tenant's jobs in flight unreadable; will retry");
                return Outcome::retry_after(e, retry_delay(delivered));
            }
        };
        if let Some(failure) = refusal {
            let e = RequestError {
                job_id: Some(req.job_id),
                failure,
            };
            return refuse(ctx, e, tenant.as_ref(), sequence, delivered).await;
        }
    }
    telemetry::spans::job(&req.job_id);
    match process(ctx, sp, &req, delivered, sequence).await {
        Ok(()) => Outcome::Done,
        // A server or a disk without room is waited out however long: failing the job would not
        // make space, and the request is kept (nothing acknowledged is lost).
        Err(Retry(why)) if delivered >= SPLIT_TRIES && !out_of_space(&*why) => {
            give_up(ctx, &req.job_id, &why, delivered, sequence).await
        }
        Err(Retry(why)) => {
            tracing::warn!(job = %req.job_id, error = %why, tries = delivered, "splitting interrupted, will retry");
            Outcome::retry_after(why, retry_delay(delivered))
        }
    }
}

/// Fails a job whose split failed on transient errors at every try. The failure is told even
/// when the job record was never written (the cluster refused it each time), so whoever
/// submitted the job hears of it; while JetStream cannot take the event, the request stays.
async fn give_up(ctx: &Ctx, job: &JobId, why: &BoxError, delivered: i64, sequence: u64) -> Outcome {
    let failure = Failure::new(
        Reason::SplitFailed,
        format!(
            "splitting failed on transient errors at each of {delivered} tries; the last: {why}"
        ),
    );
    let told: Result<(), BoxError> = match jobs::fail(ctx, job, &failure).await {
        Ok(true) => Ok(()),
        Ok(false) => match ctx.jobs.get(job.as_str()).await {
            // Another delivery or service ended it meanwhile.
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                let id = subjects::msg_id::refusal(Some(job), sequence);
                let ev = JobEvent::failed(Some(job.clone()), &failure);
                publish::event_as(&ctx.js, ctx.retry, ctx.service, &ev, id)
                    .await
                    .map(|_| ())
                    .map_err(Into::into)
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    };
    match told {
        Ok(()) => Outcome::permanent(failure.reason, failure.message),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "could not fail a job that cannot be split; will retry");
            Outcome::retry_after(e, retry_delay(delivered))
        }
    }
}

/// A tenant's request names its job as the tenant sees it: inside the fleet the job is the
/// tenant's (`<tenant>=<id>`), so ids are unique per tenant.
fn scoped(mut req: JobRequest, tenant: Option<&Tenant>) -> JobRequest {
    if let Some(t) = tenant {
        req.job_id = JobId::scoped(t, &req.job_id);
        req.retry_of = req.retry_of.map(|of| JobId::scoped(t, &of));
    }
    req
}

fn scope_id(job: Option<JobId>, tenant: Option<&Tenant>) -> Option<JobId> {
    match (job, tenant) {
        (Some(j), Some(t)) => Some(JobId::scoped(t, &j)),
        (job, _) => job,
    }
}

/// Answers a request refused before any job record was made for it: one `failed` event under
/// the request's own message id, then the message is terminated. A request naming a job that
/// already exists speaks for no job: its refusal goes out unnamed, so the real job's events
/// (and whoever waits on them) are untouched.
async fn refuse(
    ctx: &Ctx,
    e: RequestError,
    tenant: Option<&Tenant>,
    sequence: u64,
    delivered: i64,
) -> Outcome {
    tracing::warn!(job = ?e.job_id, reason = %e.failure.reason, message = %e.failure.message, "request refused");
    let give_up = delivered >= REFUSAL_TRIES;
    let (owner, failure) = match &e.job_id {
        None => (None, e.failure.clone()),
        Some(job) => match ctx.jobs.get(job.as_str()).await {
            Ok(None) => (Some(job.clone()), e.failure.clone()),
            Ok(Some(_)) => (
                None,
                Failure::new(
                    e.failure.reason,
                    format!(
                        "a request reusing the id of job {} (which exists and is not \
                         affected) was refused: {}",
                        job.local(),
                        e.failure.message
                    ),
                ),
            ),
            Err(err) if !give_up => {
                tracing::warn!(job = %job, error = %err, "cannot read the job record to refuse a request");
                return Outcome::transient(err);
            }
            // Unknown: speaking for no job is the safe side.
            Err(_) => (None, e.failure.clone()),
        },
    };
    // A tenant's refusal stays among its own events even when it speaks for no job.
    let owner = owner.or_else(|| tenant.map(JobId::unnamed_of));
    let ev = JobEvent::failed(owner, &failure);
    let id = subjects::msg_id::refusal(e.job_id.as_ref(), sequence);
    match publish::event_as(&ctx.js, ctx.retry, ctx.service, &ev, id).await {
        Ok(_) => Outcome::permanent(failure.reason, failure.message),
        Err(err) if give_up => {
            tracing::error!(job = ?e.job_id, error = %err, "refusal not published; request dropped");
            Outcome::permanent(failure.reason, failure.message)
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not publish failed event");
            Outcome::transient(err)
        }
    }
}

/// Errors that leave the job where it is, to be retried on redelivery. Each site that may end
/// here says so (`transient`); what can never succeed fails the job instead (`fail`).
struct Retry(BoxError);

/// A transient error: the split is tried again on redelivery.
fn transient(e: impl Into<BoxError>) -> Retry {
    Retry(e.into())
}

async fn process(
    ctx: &Ctx,
    sp: &Splitter,
    req: &JobRequest,
    delivered: i64,
    sequence: u64,
) -> Result<(), Retry> {
    let job = &req.job_id;
    let valid = validate::validate(&ctx.config, req);
    let profile = valid
        .as_ref()
        .map(|v| v.profile.clone())
        .unwrap_or_else(|_| req.profile.clone().unwrap_or_default());
    let record = JobRecord::new(req.clone(), profile);
    let created = ctx.jobs.create(job.as_str(), &record).await;
    if created.map_err(transient)?.is_none() {
        return existing(ctx, sp, job, delivered, sequence).await;
    }
    let valid = match valid {
        Ok(v) => v,
        Err(failure) => return fail(ctx, job, &failure).await,
    };
    tracing::info!(job = %job, input = %valid.input.shown(), profile = %valid.profile, "job accepted");
    telemetry::metrics::job_accepted();
    accept_and_split(ctx, sp, req, &valid).await
}

/// Announces the job (again, after a crash: the stable message id makes a repeat a no-op) and
/// splits it. A job cancelled meanwhile is neither announced nor split, and one cancelled while
/// it is split stops being split (its ffmpeg killed, its cuts removed).
async fn accept_and_split(
    ctx: &Ctx,
    sp: &Splitter,
    req: &JobRequest,
    valid: &validate::Validated,
) -> Result<(), Retry> {
    let job = &req.job_id;
    // Watched before the record is read: a cancel is either read here or heard below.
    let watched = sp.ended.watch(job);
    if ffleet_runtime::ended::confirmed(ctx, job).await {
        return Ok(());
    }
    // Checked on every delivery: a request naming `retry_of` must be that job's retry.
    if let Err(failure) = reuse::check(ctx, req).await.map_err(transient)? {
        return fail(ctx, job, &failure).await;
    }
    publish::event(
        &ctx.js,
        ctx.retry,
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
    .await
    .map_err(transient)?;
    tokio::select! {
        r = split_and_plan(ctx, sp, req, valid) => r,
        _ = watched.cancelled(ctx) => {
            tracing::info!(job = %job, "job cancelled while it was split: split stopped, its cuts removed");
            jobs::clean_scratch(ctx, job).await;
            Ok(())
        }
    }
}

/// A record exists: resume, republish, or drop a duplicate.
async fn existing(
    ctx: &Ctx,
    sp: &Splitter,
    job: &JobId,
    delivered: i64,
    sequence: u64,
) -> Result<(), Retry> {
    // The create found the record, so a read without it is older than that create, not a
    // job that went away: read again rather than drop the request.
    let Some((rec, _)) = ctx
        .jobs
        .get_at_least(job.as_str(), 1, EXISTING_PATIENCE)
        .await
        .map_err(transient)?
    else {
        return Ok(());
    };
    // A tenant's request under the id of a job that has ended was admitted again on its way
    // here: it holds no slot.
    if rec.state.is_terminal() {
        ffleet_runtime::tenants::release(ctx, job).await;
    }
    if delivered <= 1 {
        // Another request under a taken id: answered, but unnamed and under its own message id,
        // so the job that owns the id keeps its events.
        tracing::info!(job = %job, state = ?rec.state, "duplicate job request dropped");
        let failure = Failure::new(
            Reason::DuplicateJob,
            format!(
                "job id {} is already taken; this request was dropped",
                job.local()
            ),
        );
        let id = subjects::msg_id::refusal(Some(job), sequence);
        // Speaking for no job, but a tenant's refusal stays among its own events.
        let owner = job.tenant().map(|t| JobId::unnamed_of(&t));
        // Best effort: a redelivered duplicate would look like a crashed split of the real job
        // and resume it, so the message is acked whether or not the answer went out.
        if let Err(e) = publish::event_as(
            &ctx.js,
            ctx.retry,
            ctx.service,
            &JobEvent::failed(owner, &failure),
            id,
        )
        .await
        {
            tracing::warn!(job = %job, error = %e, "could not answer a duplicate request");
        }
        return Ok(());
    }
    match rec.state {
        JobState::Splitting => {
            tracing::info!(job = %job, "resuming split after redelivery");
            match validate::validate(&ctx.config, &rec.request) {
                Ok(v) => accept_and_split(ctx, sp, &rec.request, &v).await,
                Err(f) => fail(ctx, job, &f).await,
            }
        }
        JobState::Encoding => publish_tasks(ctx, &rec, None).await,
        // Its event and cleanup are the mergers' (who cancelled it); whatever this split left
        // before it stopped goes.
        JobState::Cancelled => {
            jobs::clean_scratch(ctx, job).await;
            Ok(())
        }
        _ if rec.state.is_terminal() => {
            jobs::republish_terminal(ctx, &rec).await.map_err(transient)
        }
        _ => Ok(()),
    }
}

/// The input could not be linked into this splitter's work dir (its own disk): tried again.
#[derive(Debug, thiserror::Error)]
#[error("linking the input: {0}")]
struct Linking(#[source] std::io::Error);

/// Fetches an object-store source, refusing an oversize one before a byte moves, and one whose
/// digest is not the one its request names (`expect`: swapped after its submitter uploaded it).
async fn fetch_input(
    ctx: &Ctx,
    key: &str,
    expect: Option<&str>,
) -> Result<storage::Local, StorageError> {
    let size = ctx.storage.size(key).await?;
    let limit = ctx.config.limits.max_input_bytes;
    if size > limit {
        return Err(StorageError::TooLarge {
            what: format!("input object {key}"),
            bytes: size,
            limit,
        });
    }
    ctx.storage.fetch(key, expect).await
}

async fn fail(ctx: &Ctx, job: &JobId, failure: &Failure) -> Result<(), Retry> {
    jobs::fail(ctx, job, failure).await.map_err(transient)?;
    Ok(())
}

async fn split_and_plan(
    ctx: &Ctx,
    sp: &Splitter,
    req: &JobRequest,
    valid: &validate::Validated,
) -> Result<(), Retry> {
    let job = &req.job_id;
    // An object-store source is fetched into this splitter's work dir for probing and cutting;
    // the copy goes when `_fetched` drops.
    let (source, _fetched) = match open_source(ctx, req, valid).await {
        Ok(opened) => opened,
        Err(done) => return done,
    };
    let mut moved = _fetched.as_ref().map_or(0, |l| l.bytes_moved);
    let sizing = match reuse::sized_for(ctx, req).await {
        // A retry cuts as its first run did, so the units it finished are reused.
        Some(slots) => sizing::Sizing {
            slots,
            ..sizing_for(ctx, sp, req).await
        },
        None => sizing_for(ctx, sp, req).await,
    };
    let prepared = sp
        .media
        .prepare(ctx, job, &source, valid.container, &valid.profile, sizing)
        .await;
    let src = match prepared {
        Ok(s) => s,
        Err(SplitError::Fail(f)) => return fail(ctx, job, &f).await,
        Err(SplitError::Retry(why)) => return Err(transient(why)),
    };
    let segments = src.segments;
    moved += src.bytes_moved;
    let audio = !src.tracks.tracks.is_empty();
    // The object the splitter read is pinned by its digest: the tracks unit reads it later,
    // and only these bytes.
    let read_digest = _fetched.as_ref().and_then(|l| l.digest.clone());
    let (source_key, source_digest) =
        match store_source(ctx, job, valid, &source, audio, read_digest).await {
            Ok((key, digest, n)) => {
                moved += n;
                (key, digest)
            }
            Err(done) => return done,
        };
    tracing::info!(job = %job, frames = src.info.video.frames, segments = segments.len(), "split done");
    let mut warnings = src.tracks.warnings.clone();
    warnings.extend(crate::keeps::picture_warnings(
        &ctx.config,
        &valid.profile,
        &src.info.video,
    ));
    if src.tracks.tracks.is_empty() && src.extras {
        // The tracks unit carries chapters and metadata, and ffmpeg writes no file without a
        // stream: a video-only source's extras have nothing to travel in.
        warnings.push("chapters and container metadata of a source with no audio or subtitle track are not kept".into());
    }
    let (output_path, output_key) = match &valid.output {
        Output::File(p) => (p.display().to_string(), None),
        Output::Object(k) => (String::new(), Some(k.clone())),
    };
    let tracks = audio.then_some(src.tracks.tracks.as_slice());
    let reuse = reuse::find(ctx, req, &valid.profile, &src.info, &segments, tracks).await;
    let mut reuses = reuse.from.clone();
    if let Some(owner) = reuse::upload_owner(req)
        && !reuses.contains(&owner)
    {
        reuses.push(owner);
    }
    let plan = Plan {
        sized_for_slots: sizing.slots.max(1),
        reuses,
        audio,
        tracks: src.tracks.tracks.clone(),
        warnings,
        segments: segments.len() as u32,
        container: valid.container,
        source_path: valid.input.shown(),
        output_path,
        source_key,
        source_digest,
        output_key,
    };
    let written = match write_unit_records(ctx, job, &plan, segments, &reuse).await? {
        Ok(written) => written,
        Err(full) => return fail(ctx, job, &full).await,
    };
    let step = JobStep::Plan {
        source: &src.info,
        plan: &plan,
        media_bytes: moved,
    };
    let rec = ctx
        .jobs
        .modify(job.as_str(), |r| {
            match job_protocol::apply(r, &step, &now_rfc3339()) {
                Ok((n, _)) => Change::Write(n.clone(), Ok(n)),
                Err(why) => Change::Keep(Err(why)),
            }
        })
        .await
        .map_err(transient)?;
    match rec {
        Ok(rec) => publish_tasks(ctx, &rec, Some(&written)).await,
        // Cancelled while it was cut: what this split stored came after the cancel's cleanup.
        Err(JobRefused::Terminal(JobState::Cancelled)) => {
            tracing::info!(job = %job, "job cancelled during its split, removing its cuts");
            jobs::clean_scratch(ctx, job).await;
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

/// What ends a split early: the job failed (its event is out), or the message is retried.
type Ended = Result<(), Retry>;

/// The source to probe and cut: a file opened once, inside the roots, now (what was checked at
/// submit may have changed, and ffmpeg reads exactly the file opened here), or an object
/// fetched into this splitter's work dir. The `Local` holds the link or the copy.
async fn open_source(
    ctx: &Ctx,
    req: &JobRequest,
    valid: &validate::Validated,
) -> Result<(PathBuf, Option<Local>), Ended> {
    let job = &req.job_id;
    match &valid.input {
        Input::File(p) => {
            let roots = Roots::inputs(&ctx.config.storage.for_job(job));
            let file = match roots.open_input(&req.input) {
                Ok(f) => f,
                Err(e) => return Err(fail(ctx, job, &validate::path_failure(e, true)).await),
            };
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            match open_input_link(
                file,
                ctx.storage.work_dir(),
                name.as_deref().unwrap_or("source"),
            ) {
                Ok(l) => Ok((l.path().to_path_buf(), Some(l))),
                Err(e) => Err(Err(transient(Linking(e)))),
            }
        }
        Input::Object(key) => match fetch_input(ctx, key, req.input_digest.as_deref()).await {
            Ok(l) => Ok((l.path().to_path_buf(), Some(l))),
            Err(StorageError::Corrupt {
                expected, found, ..
            }) if req.input_digest.as_deref() == Some(expected.as_str()) => {
                let f = Failure::new(
                    Reason::InputUnreadable,
                    format!(
                        "input object {} is not what its request names (digest {found}, \
                         the request says {expected}): it changed after it was uploaded",
                        valid.input.shown()
                    ),
                );
                Err(fail(ctx, job, &f).await)
            }
            Err(StorageError::Missing(_)) => {
                let f = Failure::new(
                    Reason::InputMissing,
                    format!("input object {} does not exist", valid.input.shown()),
                );
                Err(fail(ctx, job, &f).await)
            }
            Err(e) if e.is_transient() => Err(Err(transient(e))),
            Err(e) => Err(fail(ctx, job, &e.failure("fetching the input")).await),
        },
    }
}

/// Where the tracks unit reads the source: nodes that share no files read it from the store,
/// so a file source with tracks is uploaded there. Returns its key and the bytes moved.
async fn store_source(
    ctx: &Ctx,
    job: &JobId,
    valid: &validate::Validated,
    source: &Path,
    audio: bool,
    read_digest: Option<String>,
) -> Result<(Option<String>, Option<String>, u64), Ended> {
    match &valid.input {
        _ if !audio || ctx.storage.is_shared() => Ok((None, None, 0)),
        Input::Object(key) => Ok((Some(key.clone()), read_digest, 0)),
        Input::File(p) => {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            // The fleet's own copy (`fleet_made`): kept apart from what clients can touch.
            let key = storage::keys::source_copy(job, name.as_deref().unwrap_or("source"));
            match ctx.storage.put_file(source, &key).await {
                Ok(stored) => Ok((Some(key), stored.digest, stored.bytes_moved)),
                Err(e) if e.is_transient() => Err(Err(transient(e))),
                Err(e) => Err(fail(ctx, job, &e.failure("storing the source")).await),
            }
        }
    }
}

/// Each cut goes into its unit's own record, so the job record stays small for any length.
/// While the job is splitting no task of it exists, so a record left by an interrupted split
/// (cut for another pool, perhaps) is this split's to replace. A record that any task touched
/// (claimed, or past its first attempt) says the job is past splitting, whatever the job record
/// read said (a read older than the split that finished): nothing is replaced, and the request
/// is retried, to find the job encoding. Returns each record as written, with its revision,
/// for the tasks to carry.
/// A bucket at its own cap (`Refusal::StreamLimit` or `StreamFull`) fails the job at once,
/// naming the cap: no retry makes room there, only finished jobs' records going.
async fn write_unit_records(
    ctx: &Ctx,
    job: &JobId,
    plan: &Plan,
    segments: Vec<SegmentPlan>,
    reuse: &reuse::Reuse,
) -> Result<Result<HashMap<Unit, (SegmentRecord, u64)>, Failure>, Retry> {
    let cuts = segments
        .into_iter()
        .map(Some)
        .chain(plan.audio.then_some(None));
    let mut written = HashMap::new();
    for (unit, cut) in plan.units().zip(cuts) {
        let key = subjects::segment_key(job, unit);
        let fresh = match reuse.units.get(&unit) {
            Some((done, from)) => SegmentRecord::reused(cut, done, from),
            None => SegmentRecord::planned(cut),
        };
        let created = match ctx.segments.create(&key, &fresh).await {
            Ok(created) => created,
            Err(e) if at_cap(&e) => return Ok(Err(records_full(job, &e))),
            Err(e) => return Err(transient(e)),
        };
        let (record, revision) = match created {
            Some(rev) => (fresh, Some(rev)),
            None => {
                let step = Step::Replan { fresh: &fresh };
                let (replanned, copy) = ctx
                    .segments
                    .modify_known(&key, None, |r| match r {
                        // Gone since the create found it: planned afresh.
                        None => Change::Write(fresh.clone(), Some(fresh.clone())),
                        Some(_) => match unit_protocol::apply(r, &step, &now_rfc3339()) {
                            Ok((n, _)) => Change::Write(n.clone(), Some(n)),
                            Err(_) => Change::Keep(None),
                        },
                    })
                    .await
                    .map_err(transient)?;
                let Some(record) = replanned else {
                    return Err(transient(format!(
                        "unit {unit} of job {job} is past planning: the job is past splitting"
                    )));
                };
                (record, copy.map(|(_, rev)| rev))
            }
        };
        if let Some(rev) = revision {
            written.insert(unit, (record, rev));
        }
    }
    Ok(Ok(written))
}

/// The job's failure when the unit-record bucket is at its cap.
fn records_full(job: &JobId, e: &dyn std::fmt::Display) -> Failure {
    Failure::new(
        Reason::StorageFull,
        format!(
            "the unit-record bucket {} is at its cap, so job {job}'s unit records cannot be \
             written ({e}): raise streams.max_msgs / streams.max_bytes, or lower \
             scheduler.keep_finished_records_secs (finished jobs' records are purged after it)",
            subjects::BUCKET_SEGMENTS
        ),
    )
}

/// The segment length for this job: the pool rule (`sizing`), capped by the request's
/// `segment_seconds` or the configured default. An unreadable pool counts as one slot: the job
/// is still cut, only more coarsely.
async fn sizing_for(ctx: &Ctx, sp: &Splitter, req: &JobRequest) -> sizing::Sizing {
    let cfg = &sp.settings;
    let rule = sizing::Rule {
        max_secs: req.segment_seconds.unwrap_or(cfg.default_segment_secs),
        min_secs: cfg.min_segment_secs,
    };
    let slots = sizing::live_slots(ctx, &sp.pool).await.unwrap_or_else(|e| {
        tracing::warn!(job = %req.job_id, error = %e, "cannot read the pool; sizing for one slot");
        0
    });
    let starts = if cfg.cut_anywhere {
        cuts::Starts::AnyFrame
    } else {
        cuts::Starts::SafePoints
    };
    sizing::Sizing {
        rule,
        slots,
        starts,
        scenes: (cfg.cut_anywhere && cfg.scene_cuts).then_some(cfg.scene_threshold),
    }
}

/// Publishes the first attempt of every unit to the plan queue (de-duplicated by id). Audio
/// goes first: it is one long task, so starting it early shortens the job. The cuts are the ones
/// just written (`written`), or (a redelivered request) read back from the unit records. Each
/// task carries its unit's record, so the scheduler's route starts from it instead of a read.
async fn publish_tasks(
    ctx: &Ctx,
    rec: &JobRecord,
    written: Option<&HashMap<Unit, (SegmentRecord, u64)>>,
) -> Result<(), Retry> {
    let Some(plan) = &rec.plan else {
        return Ok(());
    };
    let job = &rec.job_id;
    let (mut published, mut reused) = (0usize, 0usize);
    let units = plan
        .audio
        .then_some(Unit::Audio)
        .into_iter()
        .chain((0..plan.segments).map(Unit::Video));
    for unit in units {
        let known = match written.and_then(|w| w.get(&unit)) {
            Some(k) => Some(k.clone()),
            None => {
                let key = subjects::segment_key(job, unit);
                ctx.segments.get(&key).await.map_err(transient)?
            }
        };
        if let Some((rec, _)) = known.as_ref().filter(|(r, _)| reuse::is_reused(r)) {
            reuse::report(ctx, job, unit, rec)
                .await
                .map_err(transient)?;
            reused += 1;
            continue;
        }
        let cut = known.as_ref().and_then(|(r, _)| r.cut.as_ref());
        let Some(mut task) = Task::for_unit(rec, unit, cut, 1) else {
            return Err(transient(format!(
                "unit {unit} of job {job} has no cut recorded"
            )));
        };
        task.record = known.and_then(|(r, rev)| RecordCopy::of(r, rev));
        publish::plan(&ctx.js, ctx.retry, &task)
            .await
            .map_err(transient)?;
        published += 1;
    }
    tracing::debug!(job = %job, tasks = published, reused, "tasks published");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_half_a_minute_and_give_up_after_minutes() {
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(2), Duration::from_secs(4));
        assert_eq!(retry_delay(4), Duration::from_secs(16));
        assert_eq!(retry_delay(5), Duration::from_secs(30));
        assert_eq!(retry_delay(i64::MAX), Duration::from_secs(30));
        assert_eq!(retry_delay(0), Duration::from_secs(2));
        let patience: Duration = (1..SPLIT_TRIES).map(retry_delay).sum();
        // Long enough for any election or restart, short enough that a job still ends.
        assert!(patience > Duration::from_secs(300) && patience < Duration::from_secs(1200));
    }
}
