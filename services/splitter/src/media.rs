//! The splitter's media work for one job: probe the source, check the profile can encode it,
//! find its scene changes, plan the segments and stream-copy their cuts into scratch storage. `Ffmpeg` (ffprobe and
//! ffmpeg children) is what `run` uses; a program embedding the splitter library may pass
//! another to `run_with` (the control-plane benchmark does, to measure the control plane without
//! media work). Nothing in a job request or in configuration selects it.

use crate::sizing::Sizing;
use crate::split::{self, SplitError};
use crate::{inspect, validate};
use ffleet_runtime::JobId;
use ffleet_runtime::media::tracks::TrackChoice;
use ffleet_runtime::messages::records::{Container, SegmentPlan, SourceInfo};
use ffleet_runtime::runtime::Ctx;
use std::path::Path;

/// What the media work found and stored for the plan.
pub struct Prepared {
    pub info: SourceInfo,
    pub tracks: TrackChoice,
    /// Chapters or descriptive container metadata to keep.
    pub extras: bool,
    /// The cuts, each stored under its `source_key`.
    pub segments: Vec<SegmentPlan>,
    /// Bytes moved through the object store storing the cuts.
    pub bytes_moved: u64,
}

/// The media half of a split. `source` is a local path to the opened input.
#[async_trait::async_trait]
pub trait Media: Send + Sync + 'static {
    async fn prepare(
        &self,
        ctx: &Ctx,
        job: &JobId,
        source: &Path,
        container: Container,
        profile: &str,
        sizing: Sizing,
    ) -> Result<Prepared, SplitError>;
}

/// ffprobe, then one stream-copy ffmpeg run.
pub struct Ffmpeg;

#[async_trait::async_trait]
impl Media for Ffmpeg {
    async fn prepare(
        &self,
        ctx: &Ctx,
        job: &JobId,
        source: &Path,
        container: Container,
        profile: &str,
        sizing: Sizing,
    ) -> Result<Prepared, SplitError> {
        let src = inspect::inspect(&ctx.config, source, container).await?;
        validate::convertible(&ctx.config, profile, &src)?;
        crate::keeps::refusal(&src.info.video)?;
        let v = &src.info.video;
        let segment_secs = sizing.secs(v.duration_secs(), v.frame_rate.as_f64());
        tracing::debug!(job = %job, slots = sizing.slots, segment_secs, "segment length chosen");
        // A source of one segment has no cut to place.
        let scenes = match sizing.scenes {
            Some(threshold) if v.duration_secs() > 1.25 * segment_secs => {
                crate::scenes::find(ctx, job, source, &src, threshold).await
            }
            _ => Vec::new(),
        };
        let cutting = split::Cutting {
            segment_secs,
            starts: sizing.starts,
            scenes: &scenes,
        };
        let (segments, bytes_moved) = split::split(ctx, job, source, &src, cutting).await?;
        Ok(Prepared {
            info: src.info,
            tracks: src.tracks,
            extras: src.extras,
            segments,
            bytes_moved,
        })
    }
}
