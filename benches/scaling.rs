//! `cargo bench --bench scaling`: the same long file on 1, 2 and 4 encoder processes (one
//! single-threaded segment each), every service its own process around a private nats-server.
//!
//! Per run it prints the wall time (submit → completed), the speed-up against one encoder, and
//! the per-segment orchestration overhead from the KV records' server timestamps:
//! - dispatch: from the moment a unit could start (its task planned, and its node free after its
//!   previous unit) to its claim, which immediately precedes ffmpeg's start;
//! - collect: from the unit's result being recorded to the merger having collected it.
//!
//! From the control plane's CPU per segment (nats-server, splitter, scheduler, merger, from
//! /proc) and the scheduler's back-to-back release time, it projects the number of busy slots
//! at which the control plane, not the encoders, would become the limit.
//!
//! Environment: `FFLEET_BENCH_SECS` (source length, default 40), `FFLEET_BENCH_ENCODERS`
//! (default `1,2,4`).

mod common;

use common::*;

use ffleet_runtime::messages::{self, JobRecord, JobState, SegmentRecord, SegmentState};
use ffleet_runtime::{JobId, subjects};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// 640x360 at 25 fps with a keyframe every 2 s and audio: one 2 s segment per keyframe.
fn source(dir: &Path, secs: u32) -> std::path::PathBuf {
    let p = dir.join("long.mp4");
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=640x360:rate=25")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "50"])
        .args(["-c:a", "aac"])
        .arg(&p)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success());
    p
}

/// Server timestamps of every state a unit record went through, and who claimed it.
#[derive(Default, Clone)]
struct Trace {
    at: HashMap<SegmentState, OffsetDateTime>,
    owner: Option<String>,
    collected: Option<OffsetDateTime>,
}

struct Run {
    wall: f64,
    units: usize,
    dispatch_ms: f64,
    collect_ms: f64,
    encode_s: f64,
    /// Control-plane CPU seconds per unit, by process.
    cpu_per_unit: Vec<(String, f64)>,
    release_ms: f64,
}

async fn measure(encoders: usize, dir: &Path, src: &Path) -> Run {
    let Fleet {
        procs, ctx, server, ..
    } = start_fleet(dir, encoders, &[]).await;
    while ctx.workers.keys().await.unwrap_or_default().len() < encoders {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let traces: Arc<Mutex<HashMap<String, Trace>>> = Arc::default();
    let mut seg_watch = ctx.segments.store().watch_all().await.expect("watch");
    let t = traces.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = seg_watch.next().await {
            if let Ok(r) = messages::decode::<SegmentRecord>("segment", &e.value) {
                let mut m = t.lock().unwrap();
                let tr = m.entry(e.key.to_string()).or_default();
                tr.at.entry(r.state).or_insert(e.created);
                if let Some(o) = r.owner {
                    tr.owner = Some(o.to_string());
                }
            }
        }
    });
    let mut job_watch = ctx.jobs.store().watch_all().await.expect("watch");
    let t = traces.clone();
    let done = Arc::new(tokio::sync::Notify::new());
    let d = done.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = job_watch.next().await {
            let Ok(r) = messages::decode::<JobRecord>("job", &e.value) else {
                continue;
            };
            let mut m = t.lock().unwrap();
            for u in r.collected.iter() {
                let key = subjects::segment_key(&r.job_id, u);
                let tr = m.entry(key).or_default();
                tr.collected.get_or_insert(e.created);
            }
            if r.state.is_terminal() {
                assert_eq!(r.state, JobState::Completed, "{:?}", r.failure);
                d.notify_one();
            }
        }
    });
    let control: Vec<(String, u32)> = procs
        .0
        .iter()
        .filter(|(n, _)| !n.starts_with("enc-"))
        .map(|(n, c)| (n.clone(), c.id()))
        .chain(server.pid().map(|p| ("nats-server".to_owned(), p)))
        .collect();
    let before: Vec<f64> = control.iter().map(|(_, p)| cpu_secs(*p)).collect();

    let job = JobId::new(format!("scale-{encoders}")).unwrap();
    let req = serde_json::json!({
        "version": 1, "job_id": job.as_str(), "input": src.display().to_string(),
        "output": dir.join(format!("{job}.mp4")).display().to_string(), "segment_seconds": 2.0
    });
    let started = Instant::now();
    ffleet_runtime::nats::publish::raw(
        &ctx.js,
        ctx.retry,
        subjects::JOBS_SUBMIT.into(),
        serde_json::to_vec(&req).unwrap().into(),
        job.as_str(),
    )
    .await
    .expect("submitted");
    tokio::time::timeout(Duration::from_secs(900), done.notified())
        .await
        .expect("job finished in time");
    let wall = started.elapsed().as_secs_f64();
    let after: Vec<f64> = control.iter().map(|(_, p)| cpu_secs(*p)).collect();
    drop(procs);

    let traces = traces.lock().unwrap().clone();
    let units = traces.len();
    let ms = |a: OffsetDateTime, b: OffsetDateTime| (b - a).as_seconds_f64() * 1000.0;
    // Per node, its units in claim order: a unit could start once planned and its node free.
    let mut by_node: HashMap<String, Vec<&Trace>> = HashMap::new();
    for tr in traces.values() {
        if let Some(o) = &tr.owner {
            by_node.entry(o.clone()).or_default().push(tr);
        }
    }
    let (mut dispatch, mut collect, mut encode) = (Vec::new(), Vec::new(), Vec::new());
    for list in by_node.values_mut() {
        list.sort_by_key(|t| t.at.get(&SegmentState::Running).copied());
        let mut free: Option<OffsetDateTime> = None;
        for tr in list.iter() {
            let (Some(planned), Some(run), Some(fin)) = (
                tr.at.get(&SegmentState::Planned),
                tr.at.get(&SegmentState::Running),
                tr.at.get(&SegmentState::Done),
            ) else {
                continue;
            };
            let ready = free.map_or(*planned, |f| f.max(*planned));
            dispatch.push(ms(ready, *run));
            encode.push(ms(*run, *fin) / 1000.0);
            if let Some(c) = tr.collected {
                collect.push(ms(*fin, c));
            }
            free = Some(*fin);
        }
    }
    // Back-to-back releases: consecutive Queued stamps less than 20 ms apart.
    let mut queued: Vec<OffsetDateTime> = traces
        .values()
        .filter_map(|t| t.at.get(&SegmentState::Queued).copied())
        .collect();
    queued.sort();
    let mut gaps: Vec<f64> = queued
        .windows(2)
        .map(|w| ms(w[0], w[1]))
        .filter(|g| *g < 20.0)
        .collect();
    let cpu_per_unit = control
        .iter()
        .zip(before.iter().zip(&after))
        .map(|((n, _), (b, a))| (n.clone(), (a - b) / units.max(1) as f64))
        .collect();
    Run {
        wall,
        units,
        dispatch_ms: median(&mut dispatch),
        collect_ms: median(&mut collect),
        encode_s: median(&mut encode),
        cpu_per_unit,
        release_ms: median(&mut gaps),
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: u32 = std::env::var("FFLEET_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let counts: Vec<usize> = std::env::var("FFLEET_BENCH_ENCODERS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = source(dir.path(), secs);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scaling: {secs} s 640x360 source, 2 s segments, h264 profile (x264 medium, 1 thread), \
         {cores} cores"
    );
    println!(
        "{:>8} {:>6} {:>9} {:>9} {:>12} {:>11} {:>11} {:>10}",
        "encoders",
        "units",
        "wall s",
        "speed-up",
        "dispatch ms",
        "collect ms",
        "overhead ms",
        "encode s"
    );
    let mut base = None;
    let mut runs = Vec::new();
    for n in counts {
        let r = measure(n, dir.path(), &src).await;
        let b = *base.get_or_insert(r.wall);
        println!(
            "{n:>8} {:>6} {:>9.2} {:>8.2}x {:>12.1} {:>11.1} {:>11.1} {:>10.2}",
            r.units,
            r.wall,
            b / r.wall,
            r.dispatch_ms,
            r.collect_ms,
            r.dispatch_ms + r.collect_ms,
            r.encode_s
        );
        runs.push(r);
    }
    // Control-plane cost from the run with the most encoders (the busiest control plane); the
    // segment time from the least contended run (the fewest encoders per core).
    let Some(r) = runs.last() else { return };
    let seg = runs
        .iter()
        .map(|r| r.encode_s)
        .fold(f64::INFINITY, f64::min);
    println!("control-plane CPU per unit (largest run):");
    let mut worst = ("", 0.0f64);
    for (n, c) in &r.cpu_per_unit {
        println!("  {n:<12} {:.2} ms", c * 1000.0);
        if *c > worst.1 {
            worst = (n, *c);
        }
    }
    let cpu_limit = seg / worst.1;
    let release_limit = seg / (r.release_ms / 1000.0);
    println!(
        "scheduler release, back to back: {:.2} ms per task",
        r.release_ms
    );
    println!(
        "projection: with {:.2} s segments the control plane saturates at about {:.0} busy slots \
         ({} CPU: {:.0}; serial release: {:.0})",
        seg,
        cpu_limit.min(release_limit),
        worst.0,
        cpu_limit,
        release_limit
    );
}
