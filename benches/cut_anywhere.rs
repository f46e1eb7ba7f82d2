//! `cargo bench --bench cut_anywhere`: how sources whose keyframes lie far apart are cut, and
//! what starting segments between keyframes costs. The same 60 s of 1280x720 (the pipeline
//! benchmark's source) is encoded with a keyframe every 1, 2, 10 and 20 s; each is transcoded
//! by `ffleet transcode` sized for a 16-slot pool, and the 10 s and 20 s ones also with segments
//! on keyframes only (`splitter.cut_anywhere = false`, as releases before cut-anywhere cut it).
//!
//! Printed per run: segments, wall, the CPU of the ffmpeg children, and the lead-in: the frames
//! decoded only to be dropped (summed over the plan, which `cuts::plan` gives from the source's
//! packets exactly as the splitter plans it), their CPU (frames × a single-threaded decode's CPU
//! per frame of the same file, measured here), and that CPU as a share of the job's.
//!
//! Environment: `FFLEET_BENCH_SECS` (default 60), `FFLEET_BENCH_SLOTS` (default 16).

mod common;

use common::*;

use ffleet_runtime::media::cuts::{self, Starts};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u32 = env_or("FFLEET_BENCH_SECS", 60);
    let slots: u32 = env_or("FFLEET_BENCH_SLOTS", 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let base = source_720p(dir.path(), secs);
    // The pool rule (`sizing::segment_secs`): two segments per slot, at least 1 s, at most 10 s.
    let segment_secs = (f64::from(secs) / (2.0 * f64::from(slots))).clamp(1.0, 10.0);
    println!(
        "source: {secs} s of 1280x720 re-encoded per keyframe spacing; pool of {slots} slots \
         ({segment_secs:.3} s segments asked); {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>6} {:>11} {:>9} {:>7} {:>8} {:>11} {:>13} {:>11} {:>10}",
        "gop s",
        "starts",
        "segments",
        "spans",
        "wall s",
        "ffmpeg cpu",
        "lead-in fr.",
        "lead-in cpu",
        "share"
    );
    for (gop, starts) in [
        (1u32, Starts::AnyFrame),
        (2, Starts::AnyFrame),
        (10, Starts::AnyFrame),
        (10, Starts::SafePoints),
        (20, Starts::AnyFrame),
        (20, Starts::SafePoints),
    ] {
        let src = with_gop(dir.path(), &base, gop);
        let (segments, spans, lead_frames, frames) = planned(&src, segment_secs, starts);
        let per_frame = decode_cpu_secs(&src) / frames as f64;
        let anywhere = (starts == Starts::AnyFrame).to_string();
        let run = transcode(
            &src,
            &dir.path().join("out.mp4"),
            slots,
            &[
                ("FFLEET_SPLITTER__CUT_ANYWHERE", &anywhere),
                // The plan predicted here knows no shots (`benches/scene_cuts.rs` measures them).
                ("FFLEET_SPLITTER__SCENE_CUTS", "false"),
            ],
        );
        let (wall, cpu, ran) = (run.wall_secs, run.ffmpeg_cpu_secs, run.units);
        // The tracks unit is the one beside the video segments.
        assert_eq!(
            ran.saturating_sub(1),
            segments as u64,
            "the plan ran as computed"
        );
        let lead_cpu = lead_frames as f64 * per_frame;
        println!(
            "{gop:>6} {:>11} {segments:>9} {spans:>7} {wall:>8.2} {cpu:>11.1} {lead_frames:>13} {lead_cpu:>11.2} {:>9.1}%",
            match starts {
                Starts::AnyFrame => "any frame",
                Starts::SafePoints => "keyframes",
            },
            100.0 * lead_cpu / cpu
        );
    }
}

/// `base` re-encoded with a keyframe every `gop` seconds exactly (no scene-cut keyframes), its
/// audio copied.
fn with_gop(dir: &Path, base: &Path, gop: u32) -> PathBuf {
    let out = dir.join(format!("gop{gop}.mp4"));
    let keyint = format!("keyint={0}:min-keyint={0}:scenecut=0", gop * 24);
    ffmpeg(&[
        "-i",
        base.to_str().unwrap(),
        "-map",
        "0:v:0",
        "-map",
        "0:a?",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-r",
        "24",
        "-x264-params",
        &keyint,
        "-c:a",
        "copy",
        out.to_str().unwrap(),
    ]);
    out
}

/// The splitter's plan for `src`: segments, spans, lead-in frames summed, frames.
fn planned(src: &Path, segment_secs: f64, starts: Starts) -> (usize, usize, u64, u64) {
    let (packets, ticks_per_sec) = video_packets(src);
    let target = (segment_secs * ticks_per_sec).round() as i64;
    let plan = cuts::plan(&packets, target, starts, ticks_per_sec).expect("plan");
    let lead: u64 = plan
        .segments
        .iter()
        .filter_map(|c| c.within.map(|w| w.skip_frames))
        .sum();
    (plan.len(), plan.spans(), lead, packets.len() as u64)
}

/// CPU seconds of one single-threaded decode of `src`'s video (`-benchmark`'s utime + stime).
fn decode_cpu_secs(src: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-hide_banner",
            "-benchmark",
            "-threads",
            "1",
            "-i",
        ])
        .arg(src)
        .args(["-map", "0:v:0", "-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    benchmark_cpu_secs(&String::from_utf8_lossy(&out.stderr))
}
