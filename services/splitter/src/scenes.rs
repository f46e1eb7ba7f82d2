//! Finding the source's scene changes before it is cut (`splitter.scene_cuts`): one ffmpeg
//! decode of its video at thumbnail size (`media::scenes::scan`). They only steer where cuts
//! fall, so a scan that fails (a hung decode, times that are not the probe's) leaves the job cut
//! without them rather than failing it.

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
    // Most sources decode far faster than real time; one that decodes slower than half real
    // time (or hangs) is cut without its shots rather than held up further.
    let limit = Duration::from_secs_f64(60.0_f64.max(2.0 * v.duration_secs()));
    let started = std::time::Instant::now();
    match command::capture(&ctx.config.tools().ffmpeg, &cmd, limit).await {
        Ok(out) => {
            let times = scenes::to_ticks(
                &scenes::parse(&String::from_utf8_lossy(&out.stdout)),
                v.time_base,
            );
            // The scan's first frame (printed first) must be the probe's, or the first keyframe's
            // where the stream starts mid-GOP (a decoder drops what comes before it): else its
            // times are not the source's (a decoder that dropped frames, a timeline ffmpeg
            // moved), and a shot would name the wrong frame.
            let first = src.packets.iter().filter_map(|p| p.pts).min();
            let first_key = src
                .packets
                .first()
                .filter(|p| !p.key)
                .and_then(|_| src.packets.iter().find(|p| p.key))
                .and_then(|p| p.pts);
            let slack = (v.time_base.den as f64 / v.time_base.num as f64 / 1000.0).ceil() as i64;
            let near = |t0: i64, t: Option<i64>| t.is_some_and(|t| (t0 - t).abs() <= slack);
            match (times.split_first(), first) {
                (Some((&t0, rest)), _) if near(t0, first) || near(t0, first_key) => {
                    tracing::debug!(
                        job = %job,
                        scenes = rest.len(),
                        secs = started.elapsed().as_secs_f64(),
                        "scene changes found"
                    );
                    let mut rest = rest.to_vec();
                    rest.sort_unstable();
                    rest.dedup();
                    rest
                }
                (t0, first) => {
                    tracing::warn!(
                        job = %job,
                        scan_first = ?t0.map(|(t, _)| *t),
                        probe_first = ?first,
                        "scene scan times do not match the source's; cutting without scene changes"
                    );
                    Vec::new()
                }
            }
        }
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "scene scan failed; cutting without scene changes");
            Vec::new()
        }
    }
}
