//! The dashboard at scale (`cargo bench --bench dashboard`): one nats-server, 1,000 simulated
//! nodes heartbeating at 1 Hz into the workers bucket and 10,000 jobs in the jobs bucket (the
//! control plane bench's simulation), then `ffleet dashboard` as its own process. Prints a
//! table: how long until it serves (its watches' first pass), the first page's time and size,
//! its CPU while one page is open (its live stream), in the minute after it closed (heartbeats
//! still followed) and once nobody has looked for longer (they no longer are), and its RSS.
//! Meanwhile every node reports a segment done every 10 s into the events stream (what the
//! throughput charts count). The baseline, measured in the same run: `ffleet workers`, which
//! reads the same 1,000 heartbeats one key at a time. Targets (issue 25): first page ≤ 1 s,
//! ≤ 5 % of a core idle, ≤ 50 MB RSS. `NODES`, `JOBS` and `SECS` change the sizes.

mod common;

use common::*;
use ffleet_runtime::messages::{
    self, CURRENT, Heartbeat, JobEvent, JobRecord, JobRequest, JobState, SegmentDone,
    SegmentOutcome,
};
use ffleet_runtime::{Capability, JobId, NodeId, Unit};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let nodes: usize = env_or("NODES", 1_000);
    let jobs: usize = env_or("JOBS", 10_000);
    let secs: u64 = env_or("SECS", 10);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run(nodes, jobs, secs));
}

async fn run(nodes: usize, jobs: usize, secs: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_servers(dir.path(), 1, false).remove(0);
    let url = format!("nats://127.0.0.1:{}", server.port);
    let mut cfg = ffleet_runtime::config::Config::default();
    cfg.nats.url = url.clone();
    cfg.storage.scratch = dir.path().join("scratch");
    cfg.storage.work_dir = dir.path().join("work");
    let ctx = ffleet_runtime::runtime::Ctx::connect(std::sync::Arc::new(cfg), "bench", true)
        .await
        .expect("connect");

    // 10,000 jobs: most finished, some running, a few queued.
    let started = Instant::now();
    let writes = (0..jobs).map(|i| {
        let ctx = ctx.clone();
        async move {
            let rec = job(i);
            let _ = ctx.jobs.put(rec.job_id.as_str(), &rec).await;
        }
    });
    futures::StreamExt::collect::<Vec<()>>(futures::StreamExt::buffer_unordered(
        futures::stream::iter(writes),
        64,
    ))
    .await;
    println!(
        "{jobs} job records written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // 1,000 nodes heartbeating at 1 Hz, each holding a unit and finishing one every 10 s.
    let stop = tokio_util::sync::CancellationToken::new();
    let beating = tokio::spawn(heartbeats(ctx.clone(), nodes, stop.clone()));
    let reporting = tokio::spawn(segments_done(ctx.clone(), nodes, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The baseline: the CLI reading every heartbeat key.
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_ffleet"))
        .args(["-s", &url, "workers"])
        .env_remove("NATS_URL")
        .output()
        .expect("ffleet workers");
    let workers_secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "ffleet workers failed");

    let port = free_port();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ffleet"))
        .args([
            "-s",
            &url,
            "dashboard",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("dashboard.log")).expect("log"))
        .spawn()
        .expect("dashboard");
    let pid = child.id();
    while get(port, "/healthz").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the dashboard did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let page = get(port, "/").expect("the first page");
    let page_secs = t.elapsed().as_secs_f64();
    let shown = page.matches("data-node=").count();
    let mut renders = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let _ = get(port, "/");
        renders.push(t.elapsed().as_secs_f64());
    }
    let render_median = median(&mut renders);

    // One page open: its live stream pushes the sections as they change.
    let stream = open_stream(port);
    let before = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let watched = (cpu_secs(pid) - before) / secs as f64;
    let rss_watched = rss_mb(pid);
    drop(stream);

    // The page closed: heartbeats are still followed for a minute.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let lingering = (cpu_secs(pid) - before) / secs as f64;

    // Nobody has looked for longer than that: the fleet heartbeats on, unfollowed.
    tokio::time::sleep(Duration::from_secs(80).saturating_sub(Duration::from_secs(secs + 2))).await;
    let before = cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let idle = (cpu_secs(pid) - before) / secs as f64;
    let rss_idle = rss_mb(pid);
    // And the next page still shows every node.
    let t = Instant::now();
    let again = get(port, "/").expect("a page after the quiet");
    let again_secs = t.elapsed().as_secs_f64();
    let shown_again = again.matches("data-node=").count();

    stop.cancel();
    let _ = beating.await;
    let _ = reporting.await;
    let _ = child.kill();
    let _ = child.wait();

    println!();
    println!("dashboard, {nodes} nodes heartbeating at 1 Hz, {jobs} jobs (one nats-server)");
    println!("| measure | value | target |");
    println!("| --- | --- | --- |");
    println!("| serving after start (watches' first pass) | {ready_secs:.2} s | |");
    println!(
        "| first page | {page_secs:.3} s, {:.0} KiB, {shown} nodes | ≤ 1 s |",
        page.len() as f64 / 1024.0
    );
    println!("| page, median of 5 more | {render_median:.3} s | |");
    println!(
        "| CPU, one page open | {:.1} % of a core | |",
        100.0 * watched
    );
    println!(
        "| CPU, the minute after it closed | {:.1} % of a core | |",
        100.0 * lingering
    );
    println!(
        "| CPU, nobody looking | {:.1} % of a core | ≤ 5 % |",
        100.0 * idle
    );
    println!("| first page after the quiet | {again_secs:.3} s, {shown_again} nodes | ≤ 1 s |");
    println!("| RSS, idle / one page open | {rss_idle:.1} / {rss_watched:.1} MB | ≤ 50 MB |");
    println!("| baseline: `ffleet workers` (reads each heartbeat key) | {workers_secs:.2} s | |");
}

/// Job `i`: every 10th running (encoding, half its units done), every 100th queued
/// (splitting), the rest completed.
fn job(i: usize) -> JobRecord {
    let req: JobRequest = serde_json::from_value(serde_json::json!({
        "version": 1, "job_id": format!("bench-{i:05}"),
        "input": format!("/media/in/{i}.mp4"), "output": format!("/media/out/{i}.mp4")
    }))
    .expect("request");
    let mut rec = JobRecord::new(req, "h264".into());
    rec.state = match i {
        i if i % 100 == 0 => JobState::Splitting,
        i if i % 10 == 0 => JobState::Encoding,
        _ => JobState::Completed,
    };
    rec
}

async fn heartbeats(
    ctx: ffleet_runtime::runtime::Ctx,
    n: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    let gap = Duration::from_secs(1) / n.max(1) as u32;
    let mut tick = tokio::time::interval(gap);
    let mut i = 0usize;
    while !stop.is_cancelled() {
        tick.tick().await;
        let node = format!("sim-{:05}", i % n);
        let mut hb = Heartbeat {
            slots_busy: 1,
            ..Heartbeat::new(
                NodeId::new(&node).expect("node id"),
                vec![Capability::cpu()],
                1,
            )
        };
        hb.holding = vec![ffleet_runtime::messages::heartbeat::Held {
            job_id: JobId::new(format!("bench-{:05}", (i % n) * 10)).expect("job id"),
            unit: Unit::Video((i / n) as u32 % 100),
            attempt: 1,
            frame: (i / n) as u64 * 25,
            fps: 50.0,
            speed: 2.0,
            slots: 1,
            capability: Some(Capability::cpu()),
        }];
        let store = ctx.workers.store().clone();
        tokio::spawn(async move {
            let _ = store.put(node, messages::encode(&hb)).await;
        });
        i += 1;
    }
}

/// Each of `n` nodes reports a segment done every 10 s, as an encoder does.
async fn segments_done(
    ctx: ffleet_runtime::runtime::Ctx,
    n: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    let gap = Duration::from_secs(10) / n.max(1) as u32;
    let mut tick = tokio::time::interval(gap);
    let mut i = 0usize;
    while !stop.is_cancelled() {
        tick.tick().await;
        let ev = JobEvent::SegmentDone(SegmentDone {
            version: CURRENT,
            job_id: JobId::new(format!("bench-{:05}", (i % n) * 10)).expect("job id"),
            unit: Unit::Video((i / n) as u32),
            attempt: 1,
            node: NodeId::new(format!("sim-{:05}", i % n)).expect("node id"),
            outcome: SegmentOutcome::Encoded {
                result_key: format!("k{i}"),
                frames: 50,
                encode_secs: 1.0,
            },
        });
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ffleet_runtime::nats::publish::event(&ctx.js, ctx.retry, "bench", &ev).await;
        });
        i += 1;
    }
}

/// GET `path`: the body, or `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    raw.starts_with("HTTP/1.1 200").then_some(raw)
}

/// An open live stream, read in the background so the server's pushes are taken; closed
/// (as a browser tab is) when dropped.
struct Stream(std::net::TcpStream);

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

fn open_stream(port: u16) -> Stream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut reader = s.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    });
    Stream(s)
}

/// Resident memory of `pid` in MB.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
