//! `cargo bench --bench scene_cuts`: what starting segments on shot changes costs and buys.
//!
//! The source is real footage edited into shots: pieces of the shared Big Buck Bunny sample
//! (else a generated pattern), 1.5 to 4.5 s long, taken at different offsets and each turned a
//! different way (mirrored, flipped, zoomed, hue-turned) so that every join is a cut, then encoded
//! with a keyframe every 10 s and none at the shots (as many cameras and screen recorders do).
//! It is transcoded by `ffleet transcode` sized for a pool of `FFLEET_BENCH_SLOTS` slots with
//! `splitter.scene_cuts` on and off, and once by a single ffmpeg with the same encoder settings.
//!
//! Printed: the scan (the splitter's one thumbnail decode, run here alone: wall and CPU, and
//! its CPU as a share of the job's ffmpeg CPU); per run the segments, the cuts that start on a
//! shot change (from `cuts::plan_with_scenes` over the same scan, exactly as the splitter plans),
//! wall, ffmpeg CPU, output bytes, and PSNR against the source: over every frame, and over the
//! seams (each segment's first frame and the frame before it), beside the single ffmpeg's PSNR
//! on the same frames.
//!
//! Environment: `FFLEET_BENCH_SECS` (default 60), `FFLEET_BENCH_SLOTS` (default 16).

mod common;

use common::*;

use ffleet_runtime::media::cuts::{self, Starts};
use ffleet_runtime::media::scenes;
use ffleet_runtime::profiles;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Threshold the splitter uses by default (`splitter.scene_threshold`).
const THRESHOLD: f64 = 0.3;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u32 = env_or("FFLEET_BENCH_SECS", 60);
    let slots: u32 = env_or("FFLEET_BENCH_SLOTS", 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, shots) = edited(dir.path(), secs);
    let (packets, ticks_per_sec) = video_packets(&src);
    // The pool rule (`sizing::segment_secs`) on the probed duration, as the splitter applies it.
    let duration = cuts::stream_end(&packets).unwrap() as f64 / ticks_per_sec;
    let segment_secs = (duration / (2.0 * f64::from(slots))).clamp(1.0, 10.0);
    println!(
        "source: {duration:.2} s of 1280x720 in {shots} shots, a keyframe every 10 s; pool of {slots} \
         slots ({segment_secs:.3} s segments asked); {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let (scan_wall, scan_cpu, mut found) = scan(&src);
    // The first time is the first frame's (the splitter checks it against the probe's).
    found.remove(0);
    let scene_ticks: Vec<i64> = found
        .iter()
        .map(|s| (s * ticks_per_sec).round() as i64)
        .collect();
    println!(
        "scan: {} shot changes found of {} made; {scan_wall:.2} s wall, {scan_cpu:.2} s CPU",
        found.len(),
        shots - 1
    );

    let single = dir.path().join("single.mp4");
    let single_args = single_ffmpeg_args(&src, &single);
    let t = Instant::now();
    ffmpeg(&single_args.iter().map(String::as_str).collect::<Vec<_>>());
    let single_wall = t.elapsed().as_secs_f64();
    let single_psnr = psnr_per_frame(&src, &single);
    let single_bytes = std::fs::metadata(&single).unwrap().len();
    println!(
        "single ffmpeg (one encoder thread, as each segment has): {single_wall:.2} s wall, \
         {single_bytes} bytes, {:.3} dB mean",
        mean(&single_psnr)
    );
    println!(
        "{:>12} {:>9} {:>10} {:>8} {:>11} {:>10} {:>9} {:>10} {:>10} {:>12} {:>12}",
        "scene cuts",
        "segments",
        "on shots",
        "wall s",
        "ffmpeg cpu",
        "scan share",
        "bytes",
        "vs single",
        "psnr dB",
        "seam dB",
        "single seam"
    );
    for on in [true, false] {
        let target = (segment_secs * ticks_per_sec).round() as i64;
        let scenes_used: &[i64] = if on { &scene_ticks } else { &[] };
        let plan = cuts::plan_with_scenes(
            &packets,
            target,
            Starts::AnyFrame,
            ticks_per_sec,
            scenes_used,
        )
        .expect("plan");
        let out = dir.path().join(format!("out-{on}.mp4"));
        let run = transcode(
            &src,
            &out,
            slots,
            &[(
                "FFLEET_SPLITTER__SCENE_CUTS",
                if on { "true" } else { "false" },
            )],
        );
        let (wall, cpu, ran) = (run.wall_secs, run.ffmpeg_cpu_secs, run.units);
        // Video only: no tracks unit beside the segments.
        assert_eq!(ran, plan.len() as u64, "the plan ran as computed");
        let bytes = std::fs::metadata(&out).unwrap().len();
        let ours = psnr_per_frame(&src, &out);
        assert_eq!(ours.len(), single_psnr.len(), "frame-exact output");
        let seams: Vec<usize> = plan.segments[1..]
            .iter()
            .flat_map(|c| [c.first as usize - 1, c.first as usize])
            .collect();
        let at = |v: &[f64]| seams.iter().map(|&i| v[i]).collect::<Vec<_>>();
        println!(
            "{:>12} {:>9} {:>10} {wall:>8.2} {cpu:>11.1} {:>9.1}% {bytes:>9} {:>+9.2}% {:>10.3} {:>12.3} {:>12.3}",
            if on { "on" } else { "off" },
            plan.len(),
            format!("{}/{}", plan.on_scenes, plan.len() - 1),
            if on { 100.0 * scan_cpu / cpu } else { 0.0 },
            100.0 * (bytes as f64 / single_bytes as f64 - 1.0),
            mean(&ours),
            mean(&at(&ours)),
            mean(&at(&single_psnr)),
        );
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The edited source and its number of shots.
fn edited(dir: &Path, secs: u32) -> (PathBuf, usize) {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/media/bigbuckbunny.mp4");
    let looks = [
        "null",
        "hflip",
        "vflip",
        "crop=iw/2:ih/2,scale=1280:720",
        "hue=h=120",
        "hflip,vflip",
        "crop=iw/2:ih/2:0:0,scale=1280:720",
        "negate",
    ];
    // Shot lengths cycle through 1.5..4.5 s; offsets walk the sample.
    let lengths: [f64; 8] = [2.6, 1.5, 4.1, 3.3, 1.9, 4.5, 2.2, 3.7];
    let mut args: Vec<String> = Vec::new();
    let mut graph = String::new();
    let (mut total, mut n) = (0.0, 0usize);
    while total < f64::from(secs) - 0.01 {
        let len = lengths[n % lengths.len()].min(f64::from(secs) - total);
        // Every piece lies inside the 5.28 s sample, so each shot is as long as planned.
        let offset = ((n as f64 * 1.3) % 2.5).min(5.2 - len).max(0.0);
        if sample.is_file() {
            args.extend([
                "-ss".into(),
                format!("{offset:.2}"),
                "-t".into(),
                format!("{len:.2}"),
            ]);
            args.extend(["-i".into(), sample.display().to_string()]);
        } else {
            args.extend([
                "-f".into(),
                "lavfi".into(),
                "-t".into(),
                format!("{len:.2}"),
            ]);
            args.extend([
                "-i".into(),
                format!("testsrc2=size=1280x720:rate=24,hue=h={}", n * 45),
            ]);
        }
        graph.push_str(&format!(
            "[{n}:v:0]fps=24,format=yuv420p,{},setsar=1,setpts=PTS-STARTPTS[v{n}];",
            looks[n % looks.len()]
        ));
        total += len;
        n += 1;
    }
    for i in 0..n {
        graph.push_str(&format!("[v{i}]"));
    }
    graph.push_str(&format!("concat=n={n}:v=1:a=0[out]"));
    let out = dir.join("shots.mp4");
    args.extend([
        "-filter_complex".into(),
        graph,
        "-map".into(),
        "[out]".into(),
        "-c:v".into(),
        "libx264".into(),
        "-preset".into(),
        "veryfast".into(),
        "-x264-params".into(),
        "keyint=240:min-keyint=240:scenecut=0".into(),
        out.display().to_string(),
    ]);
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (out, n)
}

/// The splitter's scan of `src`, alone: its wall and CPU seconds and the times it found.
fn scan(src: &Path) -> (f64, f64, Vec<f64>) {
    let mut args = scenes::scan(src, "0:v:0", THRESHOLD);
    // The CPU line (`-benchmark`) is printed at info level.
    args.extend(["-benchmark".into(), "-loglevel".into(), "info".into()]);
    let t = Instant::now();
    let out = Command::new("ffmpeg")
        .args(&args)
        .output()
        .expect("ffmpeg runs");
    let wall = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "the scan failed");
    let cpu = benchmark_cpu_secs(&String::from_utf8_lossy(&out.stderr));
    (
        wall,
        cpu,
        scenes::parse(&String::from_utf8_lossy(&out.stdout)),
    )
}

/// One ffmpeg process with the default profile's CPU settings (as the tests' baseline).
fn single_ffmpeg_args(src: &Path, out: &Path) -> Vec<String> {
    let profile = &profiles::builtin()["h264"];
    let mut args = vec!["-i".to_owned(), src.display().to_string()];
    args.extend(profiles::video_settings(&profile.variants["cpu"], None));
    args.push(out.display().to_string());
    args
}

/// PSNR (average over planes, dB) of each of `out`'s frames against `src`'s, in order.
fn psnr_per_frame(src: &Path, out: &Path) -> Vec<f64> {
    let stats = out.with_extension("psnr.log");
    ffmpeg(&[
        "-i",
        out.to_str().unwrap(),
        "-i",
        src.to_str().unwrap(),
        "-lavfi",
        &format!("[0:v][1:v]psnr=stats_file={}", stats.display()),
        "-f",
        "null",
        "-",
    ]);
    std::fs::read_to_string(&stats)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("psnr_avg:"))
                .map(|v| v.parse().unwrap_or(100.0))
        })
        .collect()
}
