//! Cutting: plan the segments (`cuts::plan_with_scenes`) and stream-copy the spans holding them
//! into scratch storage in one ffmpeg pass; segments inside one span share its cut. Frame counts
//! are checked where it costs no extra ffprobe run (~0.2 s each): the encoder compares what it
//! encoded with the plan, and the merger verifies the whole output.

use crate::inspect::Inspected;
use ffleet_runtime::media::{args, command, cuts};
use ffleet_runtime::messages::records::SegmentPlan;
use ffleet_runtime::nats::BoxError;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, storage};
use std::path::Path;
use std::time::Duration;

/// Why a split produced no plan.
#[derive(Debug)]
pub enum SplitError {
    /// The job fails.
    Fail(Failure),
    /// Media storage is unreachable for now: split again on redelivery.
    Retry(BoxError),
}

/// A transient storage error, and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub struct Interrupted {
    pub doing: &'static str,
    #[source]
    pub source: storage::StorageError,
}

impl From<Failure> for SplitError {
    fn from(f: Failure) -> Self {
        SplitError::Fail(f)
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(Reason::Internal, e.to_string())
}

/// How one job is cut.
#[derive(Debug, Clone, Copy)]
pub struct Cutting<'a> {
    /// Length asked for.
    pub segment_secs: f64,
    pub starts: cuts::Starts,
    /// Scene changes, in the video's ticks.
    pub scenes: &'a [i64],
}

#[tracing::instrument(name = "split", skip_all, err(Debug, level = "warn"), fields(ffleet.service = crate::SERVICE, ffleet.job = %job))]
pub async fn split(
    ctx: &Ctx,
    job: &JobId,
    source: &Path,
    src: &Inspected,
    cutting: Cutting<'_>,
) -> Result<(Vec<SegmentPlan>, u64), SplitError> {
    let v = &src.info.video;
    let tb = v.time_base;
    let segment_secs = cutting.segment_secs;
    let target_ticks = (segment_secs * tb.den as f64 / tb.num as f64).round() as i64;
    let ticks_per_sec = tb.den as f64 / tb.num as f64;
    let plan = cuts::plan_with_scenes(
        &src.packets,
        target_ticks,
        cutting.starts,
        ticks_per_sec,
        cutting.scenes,
    )
    .map_err(|e| Failure::new(Reason::UnsupportedInput, e.to_string()))?;
    // Refused before a byte is cut: more units than one job may have.
    crate::sizing::check_count(plan.len(), v.duration_secs(), segment_secs)?;
    tracing::debug!(job = %job, segments = plan.len(), spans = plan.spans(), on_scenes = plan.on_scenes, scenes = cutting.scenes.len(), "segments planned");

    let prefix = storage::keys::cuts_prefix(job);
    let staging = ctx.storage.staging_path(&prefix).await.map_err(internal)?;
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(internal)?;
    let cmd = args::cut(source, &src.video_map, &plan.span_starts, &staging);
    // Stream copy runs far faster than real time; the bound only catches a hung child.
    let limit = Duration::from_secs_f64(600.0_f64.max(v.duration_secs()));
    let result = command::capture(&ctx.config.tools().ffmpeg, &cmd, limit).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let reason = if e.is_transient() {
            Reason::Internal
        } else {
            Reason::SplitFailed
        };
        return Err(Failure::new(reason, format!("cutting failed: {e}")).into());
    }
    // The muxer must have written exactly one non-empty file per planned span.
    let spans = plan.spans();
    for i in 0..=spans {
        let size = std::fs::metadata(staging.join(args::cut_name(i as u32))).map_or(0, |m| m.len());
        if (i < spans) != (size > 0) {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(Failure::new(
                Reason::SplitFailed,
                format!("cutting produced a different set of pieces than the {spans} planned"),
            )
            .into());
        }
    }
    let stored = ctx.storage.commit(&staging, &prefix).await.map_err(|e| {
        let _ = std::fs::remove_dir_all(&staging);
        if e.is_transient() {
            // A leader election or a lost server: the split runs again on redelivery.
            SplitError::Retry(Box::new(Interrupted {
                doing: "storing the cuts",
                source: e,
            }))
        } else {
            SplitError::Fail(e.failure("storing the cuts"))
        }
    })?;
    let segments = plan
        .segments
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let source_key = storage::keys::cut(job, &args::cut_name(c.span));
            SegmentPlan {
                index: i as u32,
                first_frame: c.first,
                frames: c.frames,
                start_pts: c.start_pts,
                duration_ticks: c.duration_ticks,
                source_digest: stored.digests.get(&source_key).cloned(),
                source_key,
                within: c.within.map(|w| w.with_time_base(tb)),
                headless: c.headless,
                headless_ticks: c.headless_ticks,
            }
        })
        .collect();
    Ok((segments, stored.bytes_moved))
}
