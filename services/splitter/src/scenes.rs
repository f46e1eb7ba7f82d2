//! Finding the source's scene changes before it is cut (`splitter.scene_cuts`): one ffmpeg
//! decode of its video at thumbnail size (`media::scenes::scan`). They only steer where cuts
//! fall, so a scan that fails (a damaged stream, a hung decode) leaves the job cut without them
//! rather than failing it.

use crate::inspect::Inspected;
use ffleet_runtime::JobId;
use ffleet_runtime::media::{command, scenes};
use ffleet_runtime::runtime::Ctx;
use std::path::Path;
use std::time::Duration;

/// The scene changes of the source's video, in its ticks; none when the scan fails.
#[tracing::instrument(name = "scenes", skip_all, fields(ffleet.service = crate::SERVICE, ffleet.job = %job))]
pub async fn find(
    ctx: &Ctx,
    job: &JobId,
    source: &Path,
    src: &Inspected,
    threshold: f64,
) -> Vec<i64> {
    let v = &src.info.video;
    let cmd = scenes::scan(source, &src.video_map, threshold);
    // A decode runs well above real time even on one core; the bound only catches a hung child.
    let limit = Duration::from_secs_f64(600.0_f64.max(2.0 * v.duration_secs()));
    let started = std::time::Instant::now();
    match command::capture(&ctx.config.tools().ffmpeg, &cmd, limit).await {
        Ok(out) => {
            let found = scenes::parse(&String::from_utf8_lossy(&out.stdout));
            tracing::debug!(
                job = %job,
                scenes = found.len(),
                secs = started.elapsed().as_secs_f64(),
                "scene changes found"
            );
            scenes::to_ticks(&found, v.time_base)
        }
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "scene scan failed; cutting without scene changes");
            Vec::new()
        }
    }
}
