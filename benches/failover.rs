//! `cargo bench --bench failover`: how fast a dead encoder's segment runs elsewhere.
//!
//! For each heartbeat interval (0.5, 1 and 2 s; the TTL is three intervals, the default ratio)
//! it runs the services as separate processes around a private nats-server, keeps a long job
//! busy on three encoders, and repeatedly SIGKILLs the node running a segment, timing kill →
//! the segment's new attempt (the scheduler judged the node dead) and → that attempt running on
//! another node (re-issued units go ahead of the backlog, but wait for a slot to free). The
//! killed node is started again so the pool stays at three. Prints median and max per interval
//! against the 2 × TTL target.
//!
//! Environment: `FFLEET_BENCH_KILLS` (per interval, default 5).

mod common;

use common::*;

use ffleet_runtime::messages::SegmentState;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, subjects};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Heartbeat every `interval`, TTL three intervals (the default ratio).
fn heartbeat(interval: f64) -> Vec<(&'static str, String)> {
    vec![
        (
            "FFLEET_ENCODER__HEARTBEAT_INTERVAL_SECS",
            interval.to_string(),
        ),
        (
            "FFLEET_FLEET__HEARTBEAT_TTL_SECS",
            (3.0 * interval).to_string(),
        ),
    ]
}

fn source(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("long.mp4");
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=25")
        .args([
            "-t",
            "120",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "50",
        ])
        .arg(&p)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success());
    p
}

/// A video unit running now, in any of `jobs`: (key, owner, attempt). Submits another job
/// when none runs for a while (the last one finished).
async fn running(
    ctx: &Ctx,
    dir: &Path,
    src: &Path,
    jobs: &mut Vec<JobId>,
) -> (String, String, u32) {
    let mut idle = Instant::now();
    loop {
        for job in jobs.iter() {
            for i in 0..60 {
                let key = subjects::segment_key(job, ffleet_runtime::Unit::Video(i));
                if let Ok(Some((r, _))) = ctx.segments.get(&key).await
                    && r.state == SegmentState::Running
                    && let Some(o) = r.owner
                {
                    return (key, o.to_string(), r.attempt);
                }
            }
        }
        if jobs.is_empty() || idle.elapsed() > Duration::from_secs(3) {
            jobs.push(submit(ctx, dir, src, jobs.len()).await);
            idle = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn submit(ctx: &Ctx, dir: &Path, src: &Path, n: usize) -> JobId {
    let job = JobId::new(format!("bench-{}-{n}", uuid::Uuid::new_v4().simple())).unwrap();
    let req = serde_json::json!({
        "version": 1, "job_id": job.as_str(), "input": src.display().to_string(),
        "output": dir.join(format!("{job}.mp4")).display().to_string(), "segment_seconds": 2.0
    });
    ffleet_runtime::nats::publish::raw(
        &ctx.js,
        ctx.retry,
        subjects::JOBS_SUBMIT.into(),
        serde_json::to_vec(&req).unwrap().into(),
        job.as_str(),
    )
    .await
    .expect("submitted");
    job
}

/// Per kill: (seconds to the new attempt, seconds to it running on another node).
async fn measure(interval: f64, kills: usize, dir: &Path, src: &Path) -> Vec<(f64, f64)> {
    let env = heartbeat(interval);
    let Fleet {
        mut procs,
        ctx,
        url,
        server: _server,
    } = start_fleet(dir, 3, &env).await;
    let mut jobs = Vec::new();
    let mut out = Vec::new();
    for _ in 0..kills {
        let (key, owner, attempt) = running(&ctx, dir, src, &mut jobs).await;
        let idx = procs.0.iter().position(|(n, _)| *n == owner).unwrap();
        let (_, mut child) = procs.0.remove(idx);
        let _ = child.kill();
        let killed = Instant::now();
        let _ = child.wait();
        let mut reissued = None;
        loop {
            if let Ok(Some((r, _))) = ctx.segments.get(&key).await
                && r.attempt > attempt
            {
                reissued.get_or_insert(killed.elapsed().as_secs_f64());
                if r.owner.as_ref().is_some_and(|o| o.as_str() != owner) {
                    break;
                }
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "no failover");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        out.push((reissued.unwrap_or(0.0), killed.elapsed().as_secs_f64()));
        let c = spawn(&url, dir, "encoder", Some(&owner), &env);
        procs.0.push((owner, c));
        // Let the restarted node join before the next kill.
        tokio::time::sleep(Duration::from_secs_f64(interval * 2.0)).await;
    }
    drop(procs);
    out
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let kills: usize = std::env::var("FFLEET_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path());
    println!("failover: SIGKILL the encoder running a segment -> that segment running elsewhere");
    println!(
        "{:>12} {:>7} {:>6} {:>18} {:>18} {:>12}",
        "heartbeat s", "ttl s", "kills", "re-issued med/max", "running med/max", "target <= s"
    );
    for interval in [0.5, 1.0, 2.0] {
        let t = measure(interval, kills, dir.path(), &src).await;
        let (mut a, mut b): (Vec<f64>, Vec<f64>) = t.into_iter().unzip();
        let (amax, bmax) = (
            a.iter().cloned().fold(0.0, f64::max),
            b.iter().cloned().fold(0.0, f64::max),
        );
        let ttl = 3.0 * interval;
        println!(
            "{interval:>12.1} {ttl:>7.1} {:>6} {:>11.2} /{amax:>5.2} {:>11.2} /{bmax:>5.2} {:>12.1}",
            a.len(),
            median(&mut a),
            median(&mut b),
            2.0 * ttl
        );
    }
}
