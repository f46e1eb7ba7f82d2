//! `cargo bench --bench telemetry`: what telemetry costs. The pipeline benchmark's 60 s 720p job
//! through `ffleet transcode` with telemetry off, on (exporting to an OTLP receiver in this
//! process) and on with a dead endpoint (a closed port), rotating the order each round; then the
//! logging path alone: how many JSON records per second a caller can emit through the
//! non-blocking writer, and how many of them reach the file.
//!
//! Environment: `FFLEET_BENCH_ROUNDS` (default 1), `FFLEET_BENCH_SECS` (default 60),
//! `FFLEET_BENCH_LOG_RECORDS` (default 200000).

mod common;

use common::*;

#[path = "../tests/common/otlp.rs"]
#[allow(dead_code)]
mod otlp;

use std::path::Path;
use std::time::Instant;

/// Wall seconds, and CPU seconds of ffleet itself (its own process, not ffmpeg or nats-server):
/// the CPU figure is what telemetry adds, and stays readable on a machine busy with other work.
async fn transcode(src: &Path, out: &Path, endpoint: Option<&str>) -> (f64, f64) {
    let stats = out.with_extension("json");
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ffleet"));
    c.args(["transcode", "-q", "--stats"])
        .arg(&stats)
        .arg(src)
        .arg("-o")
        .arg(out)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::null());
    if let Some(e) = endpoint {
        c.env("OTEL_EXPORTER_OTLP_ENDPOINT", e);
    }
    let t = Instant::now();
    let st = c.status().await.expect("ffleet runs");
    assert!(st.success(), "ffleet transcode failed");
    let wall = t.elapsed().as_secs_f64();
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stats).expect("stats")).expect("stats json");
    (wall, st["ffleet_cpu_secs"].as_f64().unwrap_or(0.0))
}

/// Records per second at the caller, and how many reached the file, through the same JSON
/// format and lossy non-blocking writer the services use.
fn logging(records: usize) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let (writer, guard) = ffleet_runtime::telemetry::non_blocking(file.reopen().expect("reopen"));
    let dropped = writer.error_counter();
    let sub = tracing_subscriber::fmt()
        .event_format(ffleet_runtime::telemetry::JsonFormat)
        .with_writer(writer)
        .finish();
    let started = Instant::now();
    let emit = tracing::subscriber::with_default(sub, || {
        let span = tracing::info_span!("encode", job = "bench");
        let _e = span.enter();
        for i in 0..records {
            tracing::info!(
                job = "bench",
                unit = "v00003",
                frame = i as u64,
                fps = 61.5,
                "progress"
            );
        }
        started.elapsed().as_secs_f64()
    });
    drop(guard);
    let all = started.elapsed().as_secs_f64();
    let lines = std::fs::read_to_string(file.path())
        .map(|s| s.lines().count())
        .unwrap_or(0);
    println!(
        "logging: {records} records emitted in {emit:.3} s = {:.0} records/s at the caller \
         (never blocked); {lines} written in {all:.3} s = {:.0} records/s to the file; \
         {} dropped by the lossy writer",
        records as f64 / emit,
        lines as f64 / all,
        dropped.dropped_lines()
    );
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = env_or("FFLEET_BENCH_ROUNDS", 1);
    let secs: u32 = env_or("FFLEET_BENCH_SECS", 60);
    let records: usize = env_or("FFLEET_BENCH_LOG_RECORDS", 200_000);

    logging(records);

    let dir = tempfile::tempdir().expect("tempdir");
    let src = source_720p(dir.path(), secs);
    let receiver = otlp::Receiver::start().await.expect("receiver");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let modes: [(&str, Option<&str>); 3] = [
        ("off", None),
        ("on", Some(&receiver.endpoint)),
        ("dead", Some(&dead)),
    ];
    println!(
        "source: {} ({secs} s, 1280x720), {rounds} rounds, {} cores",
        src.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>5} {:>10} {:>10} {:>10} {:>11} {:>11} {:>11}",
        "round", "off s", "on s", "dead s", "off cpu s", "on cpu s", "dead cpu s"
    );
    let mut walls: [Vec<f64>; 3] = Default::default();
    let mut cpus: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        let mut row = [(0.0, 0.0); 3];
        // Rotate the order so drift in machine load hits every mode alike.
        for k in 0..3 {
            let i = (r + k) % 3;
            let out = dir.path().join(format!("out-{}.mp4", modes[i].0));
            row[i] = transcode(&src, &out, modes[i].1).await;
        }
        println!(
            "{:>5} {:>10.2} {:>10.2} {:>10.2} {:>11.3} {:>11.3} {:>11.3}",
            r + 1,
            row[0].0,
            row[1].0,
            row[2].0,
            row[0].1,
            row[1].1,
            row[2].1
        );
        for i in 0..3 {
            walls[i].push(row[i].0);
            cpus[i].push(row[i].1);
        }
    }
    let [off, on, dead] = walls.map(|mut v| median(&mut v));
    let [c_off, c_on, c_dead] = cpus.map(|mut v| median(&mut v));
    println!();
    println!("| telemetry | median wall | ratio to off | ffleet's own CPU |");
    println!("| --- | --- | --- | --- |");
    println!("| off | {off:.2} s | 1.000 | {c_off:.3} s |");
    println!(
        "| on (local OTLP receiver) | {on:.2} s | {:.3} (target <= 1.02) | {c_on:.3} s |",
        on / off
    );
    println!(
        "| on, dead endpoint | {dead:.2} s | {:.3} | {c_dead:.3} s |",
        dead / off
    );
    println!(
        "received: {} spans, {} log records, {} metric names",
        receiver.spans().len(),
        receiver.logs().len(),
        receiver.metrics().len()
    );
}
