//! What a retry (`retry_of`) takes from the job it runs again. Its request is checked against
//! that job first: only the retry the old record names (`retried_as`), with the old request's
//! media and settings, may reuse anything. Then each unit whose result is still stored and
//! whose cut comes out the same (the same source, probed the same, cut at the same frames, for
//! the same profile) is written done at once with that result, and never encoded again.
//!
//! Results are reused in place, under the old job's scratch (kept past its failure for
//! `storage.keep_failed_results_secs`): the retry's plan names the jobs it reuses (`reuses`),
//! and their media goes when the retry completes or is cancelled.

use ffleet_runtime::messages::events::{SegmentDone, SegmentOutcome};
use ffleet_runtime::messages::records::{SegmentPlan, SourceInfo};
use ffleet_runtime::messages::{
    CURRENT, JobEvent, JobRecord, JobRequest, SegmentRecord, SegmentState,
};
use ffleet_runtime::nats::kv::KvError;
use ffleet_runtime::nats::{NatsError, publish};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::keys;
use ffleet_runtime::{JobId, NodeId, Unit, subjects};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};

/// Unit records read at once.
const READS: usize = 16;

/// Results a retry takes over: each reused unit's record in the old job, and the jobs whose
/// scratch holds them.
#[derive(Debug, Default)]
pub struct Reuse {
    pub units: HashMap<Unit, (SegmentRecord, JobId)>,
    pub from: Vec<JobId>,
}

/// Whether `req`, a request naming `retry_of`, is the retry its old job names, with that job's
/// media and settings: `Ok(Err)` fails the job (a request forged or mistaken). A request
/// without `retry_of` passes.
pub async fn check(ctx: &Ctx, req: &JobRequest) -> Result<Result<(), Failure>, KvError> {
    let Some(of) = &req.retry_of else {
        return Ok(Ok(()));
    };
    let old = ctx.jobs.get(of.as_str()).await?.map(|(r, _)| r);
    Ok(judge(req, of, old.as_ref()))
}

fn judge(req: &JobRequest, of: &JobId, old: Option<&JobRecord>) -> Result<(), Failure> {
    let refused = |why: String| {
        Failure::new(
            Reason::InvalidRequest,
            format!(
                "retry_of names job {}, {why}: a job is run again with `ffleet retry` (or a \
                 request on ffleet.api.retry), not by naming it in a submit",
                of.local()
            ),
        )
    };
    let Some(old) = old else {
        return Err(refused("which does not exist".into()));
    };
    if old.retried_as.as_ref() != Some(&req.job_id) {
        return Err(refused(format!(
            "which was not retried as {}",
            req.job_id.local()
        )));
    }
    if !same_work(&old.request, req) {
        return Err(refused(
            "whose request names other media or settings".into(),
        ));
    }
    Ok(())
}

/// Whether two requests ask for the same output from the same media: all but id, retry link
/// and priority.
fn same_work(a: &JobRequest, b: &JobRequest) -> bool {
    a.input == b.input
        && a.output == b.output
        && a.profile == b.profile
        && a.overrides == b.overrides
        && a.segment_seconds == b.segment_seconds
        && a.prefer == b.prefer
        && a.require == b.require
        && a.input_digest == b.input_digest
}

/// The units of the new plan (`segments`, and the tracks unit when `tracks` is `Some`) whose
/// results the job that `req` retries can give, for the source `info` probed now and
/// `profile`. Anything unreadable is encoded again: reuse only ever saves work.
pub async fn find(
    ctx: &Ctx,
    req: &JobRequest,
    profile: &str,
    info: &SourceInfo,
    segments: &[SegmentPlan],
    tracks: Option<&[ffleet_runtime::media::tracks::TrackPlan]>,
) -> Reuse {
    let Some(of) = &req.retry_of else {
        return Reuse::default();
    };
    let old = match ctx.jobs.get(of.as_str()).await {
        Ok(Some((old, _))) => old,
        Ok(None) => return Reuse::default(),
        Err(e) => {
            tracing::warn!(job = %req.job_id, retry_of = %of, error = %e, "retried job's record unreadable; nothing reused");
            return Reuse::default();
        }
    };
    let Some(plan) = old.plan.as_ref() else {
        return Reuse::default();
    };
    if judge(req, of, Some(&old)).is_err()
        || old.profile != profile
        || old.source.as_ref() != Some(info)
    {
        tracing::info!(job = %req.job_id, retry_of = %of, "source or profile changed since the retried job: nothing reused");
        return Reuse::default();
    }
    let plan_reuses = &plan.reuses;
    // Owned, so the reads' futures borrow nothing of the caller's but `ctx`.
    let mut wanted: Vec<(Unit, Option<SegmentPlan>)> = segments
        .iter()
        .filter(|c| c.index < plan.segments)
        .map(|c| (Unit::Video(c.index), Some(c.clone())))
        .collect();
    if tracks.is_some_and(|t| plan.audio && plan.tracks == t) {
        wanted.push((Unit::Audio, None));
    }
    let found: Vec<_> = futures::stream::iter(wanted)
        .map(|(unit, cut)| async move {
            let key = subjects::segment_key(of, unit);
            let rec = match ctx.segments.get(&key).await {
                Ok(Some((rec, _))) => rec,
                _ => return None,
            };
            if !reusable(&rec, cut.as_ref()) {
                return None;
            }
            let result = rec.result_key.as_deref()?;
            let holder = JobId::new(keys::job_of(result)?).ok()?;
            // Only where a run of this job keeps its encoded units: a key elsewhere (a record
            // an encoder wrote wrongly) would have the retry's cleanup remove another job's
            // media.
            let enc = format!("{}/enc/", keys::job_prefix(&holder));
            if !(holder == *of || plan_reuses.contains(&holder)) || !result.starts_with(&enc) {
                return None;
            }
            matches!(ctx.storage.exists(result).await, Ok(true)).then_some((unit, rec, holder))
        })
        .buffer_unordered(READS)
        .collect()
        .await;
    let mut reuse = Reuse::default();
    let mut from = BTreeSet::new();
    for (unit, rec, holder) in found.into_iter().flatten() {
        from.insert(holder.clone());
        reuse.units.insert(unit, (rec, holder));
    }
    reuse.from = from.into_iter().collect();
    tracing::info!(job = %req.job_id, retry_of = %of, reused = reuse.units.len(), "retry reuses encoded units");
    reuse
}

/// The pool slots the job `req` retries was sized for, so the retry cuts the same.
pub async fn sized_for(ctx: &Ctx, req: &JobRequest) -> Option<u32> {
    let of = req.retry_of.as_ref()?;
    let (old, _) = ctx.jobs.get(of.as_str()).await.ok()??;
    let slots = old.plan?.sized_for_slots;
    (slots > 0).then_some(slots)
}

/// The earlier run whose upload a retry reads (`submit --upload`): its scratch goes with the
/// retry's when the retry completes or is cancelled.
pub fn upload_owner(req: &JobRequest) -> Option<JobId> {
    req.retry_of.as_ref()?;
    let key = req
        .input
        .strip_prefix(ffleet_runtime::storage::OBJECT_SCHEME)?;
    let owner = JobId::new(keys::input_job_of(key)?).ok()?;
    (owner != req.job_id).then_some(owner)
}

/// Whether the split wrote `rec` done with a result reused from an earlier run of the job.
pub fn is_reused(rec: &SegmentRecord) -> bool {
    rec.state == SegmentState::Done && rec.reused_from.is_some() && rec.attempt == 1
}

/// Reports a reused unit of `job` done, as its encoder would have: the merger counts it like
/// any other (its record agrees), and the stable message id makes a repeat a no-op.
pub async fn report(
    ctx: &Ctx,
    job: &JobId,
    unit: Unit,
    rec: &SegmentRecord,
) -> Result<(), NatsError> {
    let Some(result_key) = rec.result_key.clone() else {
        return Ok(());
    };
    let node = match &rec.owner {
        Some(n) => n.clone(),
        None => NodeId::new(crate::SERVICE).expect("the service's name is a node id"),
    };
    let ev = JobEvent::SegmentDone(SegmentDone {
        version: CURRENT,
        job_id: job.clone(),
        unit,
        attempt: rec.attempt,
        node,
        outcome: SegmentOutcome::Encoded {
            result_key,
            frames: rec.frames.unwrap_or(0),
            encode_secs: 0.0,
        },
    });
    publish::event(&ctx.js, ctx.retry, ctx.service, &ev).await?;
    Ok(())
}

/// Whether the old unit record `rec` holds a result for the cut `cut` (the new plan's; `None`
/// for the tracks unit): done, with a result, cut at the same frames.
fn reusable(rec: &SegmentRecord, cut: Option<&SegmentPlan>) -> bool {
    // A segment recorded as holding no frames (every decode failed) is encoded again: it costs
    // little, and a retry may be what the fault that emptied it needed.
    if rec.state != SegmentState::Done
        || rec.result_key.is_none()
        || (rec.frames == Some(0) && cut.is_some())
    {
        return false;
    }
    match (cut, &rec.cut) {
        (None, None) => true,
        (Some(new), Some(old)) => {
            // Cut by the same ffmpeg from the same bytes, a cut has the same digest: where both
            // are known, a source replaced by one that probes the same is told apart.
            let same_bytes = match (&new.source_digest, &old.source_digest) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            same_bytes
                && new.index == old.index
                && new.first_frame == old.first_frame
                && new.frames == old.frames
                && new.start_pts == old.start_pts
                && new.duration_ticks == old.duration_ticks
                && new.within == old.within
                && new.headless == old.headless
                && new.headless_ticks == old.headless_ticks
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str) -> JobRequest {
        serde_json::from_value(serde_json::json!({
            "version": 1, "job_id": id, "input": "/in/a.mp4", "output": "/out/a.mp4"
        }))
        .unwrap()
    }

    fn cut(index: u32, first: u64) -> SegmentPlan {
        SegmentPlan {
            index,
            first_frame: first,
            frames: 25,
            start_pts: first as i64 * 512,
            duration_ticks: 25 * 512,
            source_key: format!("jobs/j/src/seg{index:05}.nut"),
            source_digest: None,
            within: None,
            headless: 0,
            headless_ticks: 0,
        }
    }

    #[test]
    fn only_the_retry_its_job_names_with_the_same_work_passes() {
        let old_id = JobId::new("j").unwrap();
        let mut old = JobRecord::new(request("j"), "h264".into());
        let mut retry = request("j-r1");
        retry.retry_of = Some(old_id.clone());
        // Not retried (yet), or retried as another job: refused.
        assert!(judge(&retry, &old_id, Some(&old)).is_err());
        old.retried_as = Some(JobId::new("other").unwrap());
        assert!(judge(&retry, &old_id, Some(&old)).is_err());
        old.retried_as = Some(retry.job_id.clone());
        assert!(judge(&retry, &old_id, Some(&old)).is_ok());
        // Same id, other media: refused.
        let mut forged = retry.clone();
        forged.input = "/in/other.mp4".into();
        let f = judge(&forged, &old_id, Some(&old)).unwrap_err();
        assert_eq!(f.reason, Reason::InvalidRequest);
        assert!(f.message.contains("other media"), "{}", f.message);
        // Priority is not the work.
        let mut urgent = retry.clone();
        urgent.priority = 50;
        assert!(judge(&urgent, &old_id, Some(&old)).is_ok());
        assert!(judge(&retry, &old_id, None).is_err());
    }

    #[test]
    fn a_result_is_reused_only_for_the_same_cut_when_done() {
        let mut done = SegmentRecord::planned(Some(cut(2, 50)));
        done.state = SegmentState::Done;
        done.result_key = Some("jobs/j/enc/v00002.a1.nut".into());
        assert!(reusable(&done, Some(&cut(2, 50))));
        // Another cut's source key (the new job's) does not matter; its frames do.
        assert!(!reusable(&done, Some(&cut(2, 51))));
        assert!(!reusable(&done, Some(&cut(3, 50))));
        assert!(!reusable(&done, None));
        // The same frames taken from another span (a lead-in where there was none) differ.
        let mut inside = cut(2, 50);
        inside.within = Some(ffleet_runtime::media::cuts::Within {
            skip_frames: 25,
            start_ticks: 25 * 512,
            before_ticks: Some(24 * 512),
            last_ticks: 49 * 512,
            next_ticks: None,
            time_base: ffleet_runtime::media::Rational::new(1, 12_800),
        });
        assert!(!reusable(&done, Some(&inside)));
        let mut running = done.clone();
        running.state = SegmentState::Running;
        assert!(!reusable(&running, Some(&cut(2, 50))));
        let mut tracks = SegmentRecord::planned(None);
        tracks.state = SegmentState::Done;
        tracks.result_key = Some("jobs/j/enc/audio.a1.m4a".into());
        assert!(reusable(&tracks, None));
    }
}
