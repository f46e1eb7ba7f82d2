//! `cargo bench --bench pipeline`: `ffleet transcode` against one `ffmpeg` process on the same
//! 60 s 720p file with the same codec settings, alternating, several rounds. Prints both medians,
//! their ratio, and the CPU ffleet spends outside ffmpeg.
//!
//! The single ffmpeg uses the profile's codec settings with ffmpeg's default threading (the whole
//! machine), which is the honest baseline: ffleet's per-segment thread count exists for
//! determinism, not to handicap the comparison.
//!
//! Environment: `FFLEET_BENCH_ROUNDS` (default 3), `FFLEET_BENCH_SECS` (default 60),
//! `FFLEET_BENCH_STORAGE` (`shared-dir`, the default, or `object-store`: media through the
//! private server's object store, as between machines).

mod common;

use common::*;

use ffleet_runtime::profiles;
use std::process::Command;
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("FFLEET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let secs: u32 = std::env::var("FFLEET_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let storage = std::env::var("FFLEET_BENCH_STORAGE").unwrap_or_else(|_| "shared-dir".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_720p(dir.path(), secs);

    let profile = &profiles::builtin()["h264"];
    let mut video = profiles::video_settings(&profile.variants["cpu"], None);
    // Default threading for the single process: drop the per-segment thread count.
    if let Some(i) = video.iter().position(|a| a == "-threads") {
        video.drain(i..i + 2);
    }
    let single_out = dir.path().join("single.mp4");
    let mut single: Vec<String> = vec![
        "-i".into(),
        src.display().to_string(),
        "-map".into(),
        "0:v:0".into(),
        "-map".into(),
        "0:a:0".into(),
    ];
    single.extend(video);
    single.extend(profile.audio.iter().cloned());
    single.push(single_out.display().to_string());
    let single: Vec<&str> = single.iter().map(String::as_str).collect();

    let exe = env!("CARGO_BIN_EXE_ffleet");
    let stats = dir.path().join("stats.json");
    let ffleet_out = dir.path().join("ffleet.mp4");

    println!(
        "source: {} ({secs} s, 1280x720), {rounds} rounds, {} cores, media via {storage}",
        src.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>5} {:>12} {:>12} {:>8} {:>10} {:>10} {:>10}",
        "round", "ffmpeg s", "ffleet s", "ratio", "ffmpeg cpu", "ffleet cpu", "nats cpu"
    );
    let (mut a, mut b, mut overhead, mut ffmpeg_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let run_single = || {
            let t = Instant::now();
            ffmpeg(&single);
            t.elapsed().as_secs_f64()
        };
        let run_ffleet = || {
            let t = Instant::now();
            let st = Command::new(exe)
                .args(["transcode", "-q", "--storage", &storage, "--stats"])
                .arg(&stats)
                .arg(&src)
                .arg("-o")
                .arg(&ffleet_out)
                .env("RUST_LOG", "error")
                .stdout(std::process::Stdio::null())
                .status()
                .expect("ffleet runs");
            assert!(st.success(), "ffleet transcode failed");
            t.elapsed().as_secs_f64()
        };
        // Alternate which goes first, so drift in machine load hits both alike.
        let (s, f) = if r % 2 == 0 {
            let s = run_single();
            (s, run_ffleet())
        } else {
            let f = run_ffleet();
            (run_single(), f)
        };
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
        let own = st["ffleet_cpu_secs"].as_f64().unwrap();
        let nats = st["nats_cpu_secs"].as_f64().unwrap();
        let children = st["ffmpeg_cpu_secs"].as_f64().unwrap();
        println!(
            "{:>5} {s:>12.2} {f:>12.2} {:>8.3} {children:>10.1} {own:>10.2} {nats:>10.2}",
            r + 1,
            f / s
        );
        a.push(s);
        b.push(f);
        overhead.push(own + nats);
        ffmpeg_cpu.push(children);
    }
    let (ms, mf) = (median(&mut a), median(&mut b));
    let (mo, mc) = (median(&mut overhead), median(&mut ffmpeg_cpu));
    println!();
    println!(
        "median wall: ffmpeg {ms:.2} s, ffleet {mf:.2} s, ratio ffleet/ffmpeg {:.3} (target <= 1.05)",
        mf / ms
    );
    println!(
        "median cpu: ffmpeg/ffprobe children {mc:.1} s, ffleet itself + nats-server {mo:.2} s = {:.2}% (target <= 1%)",
        100.0 * mo / mc
    );
}
