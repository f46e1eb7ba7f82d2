//! Scene changes: the frames where a new shot starts, found by one decode of the source's video
//! downscaled to a thumbnail, so the cut planner can start segments there
//! (`cuts::plan_with_scenes`). A new shot costs the encoder a keyframe anyway: a segment that
//! starts on one costs nothing in quality at its seam.

use super::SOURCE_FORMATS;
use super::args::{common, os};
use super::probe::file_arg;
use std::ffi::OsString;
use std::path::Path;

/// The picture the score is taken on: small enough that scoring costs little beside the
/// decode, large enough that a cut between two similar shots still moves it. The pixel format is
/// fixed so the score does not depend on the source's bit depth or chroma layout.
/// Bit-exact scaling keeps the scores, and so the cuts, the same on every CPU a splitter runs on.
const THUMBNAIL: &str = "scale=160:90:flags=bilinear+bitexact+accurate_rnd,format=yuv420p";

/// The times the scan reports are in this time base (microseconds), whatever the source's.
const SCAN_TICKS_PER_SEC: i64 = 1_000_000;

/// One ffmpeg pass over the video stream `map` that prints, on stdout, the time of its first
/// frame and of every frame whose scene score (ffmpeg's `select` `scene`, 0 to 1) exceeds
/// `threshold`, as `frame:N pts:MICROSECONDS ...` lines. Times are the source's own (`-copyts`,
/// with the unstamped packets stamped as the probe and the cut stamp them); the first frame's
/// lets the caller check that they are.
pub fn scan(source: &Path, map: &str, threshold: f64) -> Vec<OsString> {
    let mut a = common();
    // Deblocking is skipped: a thumbnail's score does not see it, and it is a fifth or more of
    // an H.264 decode (decoders without a loop filter ignore the option). Damage is decoded
    // past as a whole-file decode would (the merge judges it, not the scan), and a size change
    // mid-stream keeps the graph, so `select` still scores the frame after it against the one
    // before.
    a.extend(os([
        "-max_error_rate",
        "1",
        "-skip_loop_filter",
        "all",
        "-reinit_filter",
        "0",
        "-fflags",
        "+genpts",
        "-copyts",
        "-format_whitelist",
        SOURCE_FORMATS,
        "-i",
    ]));
    a.push(file_arg(source));
    let graph = format!(
        "{THUMBNAIL},select='eq(n\\,0)+gt(scene\\,{threshold})',settb=1/{SCAN_TICKS_PER_SEC},\
         metadata=mode=print:file=/dev/stdout"
    );
    a.extend(os([
        "-map",
        map,
        "-vf",
        graph.as_str(),
        "-fps_mode",
        "passthrough",
        "-f",
        "null",
        "-",
    ]));
    a
}

/// The scan's times, in seconds of the source's timeline, in the order printed: the first
/// frame's, then the scene changes. Lines that are not a frame's heading (its score, anything
/// else) are skipped.
pub fn parse(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter(|l| l.starts_with("frame:"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("pts:"))
                .and_then(|p| p.parse::<i64>().ok())
        })
        .map(|us| us as f64 / SCAN_TICKS_PER_SEC as f64)
        .collect()
}

/// Seconds on the source's timeline to ticks of `time_base` (nearest).
pub fn to_ticks(secs: &[f64], time_base: super::Rational) -> Vec<i64> {
    secs.iter()
        .map(|s| (s * time_base.den as f64 / time_base.num as f64).round() as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headings_give_the_times() {
        let out = "frame:0    pts:2600000 pts_time:2.6\nlavfi.scene_score=0.47\n\
                   frame:1    pts:1040000 pts_time:1.04\nlavfi.scene_score=0.9\n\
                   frame:2    pts:oops\ngarbage\n";
        assert_eq!(parse(out), [2.6, 1.04]);
        let tb = super::super::Rational { num: 1, den: 90000 };
        assert_eq!(to_ticks(&parse(out), tb), [234000, 93600]);
    }

    #[test]
    fn the_scan_prints_scores_above_the_threshold_on_stdout() {
        let a: Vec<String> = scan(Path::new("/m/in.mkv"), "0:v:0", 0.3)
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        let vf = &a[a.iter().position(|x| x == "-vf").unwrap() + 1];
        assert!(vf.contains("select='eq(n\\,0)+gt(scene\\,0.3)'"), "{vf}");
        assert!(vf.ends_with("file=/dev/stdout"), "{vf}");
        // Decoder and input options go before the input.
        let input = a.iter().position(|x| x == "-i").unwrap();
        for opt in ["-copyts", "+genpts", "-skip_loop_filter", "-reinit_filter"] {
            assert!(
                a[..input].iter().any(|x| x == opt),
                "{opt} before -i: {a:?}"
            );
        }
        assert!(vf.contains("settb=1/1000000"), "{vf}");
    }
}
