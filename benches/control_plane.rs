//! `cargo bench --bench control_plane`: the control plane alone at fleet scale. Jobs (default
//! 1,000 of 10 units) go through the real splitter, scheduler, encoder and merger services, each
//! a separate process on one private nats-server, with the media work replaced by stand-ins
//! passed through the service libraries' `run_with` (see `control_plane/serve.rs`: encoders write
//! a few bytes instead of running ffmpeg; the splitter probes and cuts the first job for real and
//! reuses that plan, storing tiny cut files per job; the merger skips concat, mux and verify).
//! Everything on NATS (streams, KV, consumers, events) and in scratch storage is the real thing.
//!
//! Measured in the same run on the same server: raw JetStream publish+ack and fetch+ack rates
//! (the baseline every figure is set against), then one job at a time (end-to-end overhead per
//! job, dispatch latency unloaded), then every job at once (segments/s, dispatch latency under
//! load, CPU ms per segment of each process from /proc, and JetStream/KV operations per segment
//! counted inside the services and at the server's /varz).
//!
//! With `FFLEET_BENCH_NODES=<n>` (e.g. 1000) it adds `n` simulated nodes heartbeating at 1 Hz
//! (busy, holding no work) in their own process, prints the scheduler's CPU and the KV
//! operations/s they cause, and times the failover of a SIGKILLed real encoder that holds a unit.
//!
//! Environment: `FFLEET_STORAGE__BACKEND` (passed to the services: `shared-dir` or
//! `object-store`, the default), `FFLEET_BENCH_JOBS` (1000), `FFLEET_BENCH_UNITS` (units per job, 10),
//! `FFLEET_BENCH_ENCODERS` (4), `FFLEET_BENCH_SLOTS` (slots per encoder, 16),
//! `FFLEET_BENCH_SERIAL` (jobs run one at a time first, 20), `FFLEET_BENCH_NODES` (0),
//! `FFLEET_NATS_SERVER` (the server binary).

mod common;
#[path = "control_plane/serve.rs"]
mod serve;
#[path = "control_plane/stats.rs"]
mod stats;

use common::*;
use ffleet_runtime::nats::ops::Counts;
use ffleet_runtime::subjects::{self, EventKind};
use futures::StreamExt;
use stats::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("__serve") {
        return serve::main(&args[2..]);
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(bench());
}

/// One service process and its command pipe.
struct Svc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Svc {
    fn spawn(url: &str, dir: &Path, name: &str, role: &str, env: &[(&str, String)]) -> Svc {
        let mut c = Command::new(std::env::current_exe().expect("own path"));
        c.args(["__serve", role])
            .env("FFLEET_NATS__URL", url)
            .env_remove("NATS_URL")
            .env_remove("FFLEET_CONFIG")
            .env("FFLEET_STORAGE__SCRATCH", scratch_of(dir))
            .env(
                "FFLEET_STORAGE__INPUT_ROOTS",
                format!("[{}]", dir.display()),
            )
            .env(
                "FFLEET_STORAGE__OUTPUT_ROOTS",
                format!("[{}]", dir.display()),
            )
            .env("FFLEET_ENCODER__NODE_ID", name)
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("service process starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Svc {
            name: name.into(),
            child,
            stdin,
            stdout,
        }
    }

    /// Operation counts so far and dispatch latencies since the last dump.
    fn dump(&mut self) -> (Counts, Vec<f64>) {
        let w = self.stdin.as_mut().expect("running");
        writeln!(w, "dump").expect("command sent");
        w.flush().unwrap();
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("reply") == 0 {
                panic!("{} exited", self.name);
            }
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let ops = serde_json::from_value(v["ops"].clone()).unwrap();
                let d = serde_json::from_value(v["dispatch_ms"].clone()).unwrap();
                return (ops, d);
            }
        }
    }

    /// Waits for a line the service prints (`holding`).
    fn wait_line(&mut self, want: &str) {
        loop {
            let mut line = String::new();
            if self.stdout.read_line(&mut line).expect("line") == 0 {
                panic!("{} exited", self.name);
            }
            if line.trim() == want {
                return;
            }
        }
    }

    fn cpu(&self) -> f64 {
        cpu_secs(self.child.id())
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        // End of input: the service drains and exits; killed if it does not.
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(12);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn source(dir: &Path, frames: u32) -> std::path::PathBuf {
    let out = dir.join("cp-source.mp4");
    let t = frames.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=1",
        "-frames:v",
        &t,
        "-c:v",
        "libx264",
        "-g",
        "1",
        "-pix_fmt",
        "yuv420p",
        out.to_str().unwrap(),
    ]);
    out
}

async fn bench() {
    let jobs: usize = env_or("FFLEET_BENCH_JOBS", 1000);
    let units: u32 = env_or("FFLEET_BENCH_UNITS", 10);
    let encoders: usize = env_or("FFLEET_BENCH_ENCODERS", 4);
    let slots: u32 = env_or("FFLEET_BENCH_SLOTS", 16);
    let serial: usize = env_or("FFLEET_BENCH_SERIAL", 20);
    let nodes: usize = env_or("FFLEET_BENCH_NODES", 0);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("media");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(scratch_of(&dir)).unwrap();
    let src = source(&dir, units);

    let mport = free_port();
    let server = ffleet::local::NatsServer::start_temp_with(vec!["-m".into(), mport.to_string()])
        .expect("nats-server starts");
    let url = server.url.clone();
    let server_pid = server.pid().expect("server pid");
    let mut cfg = ffleet_runtime::config::Config::default();
    cfg.nats.url = url.clone();
    cfg.storage.scratch = scratch_of(&dir);
    let ctx = ffleet_runtime::runtime::Ctx::connect(std::sync::Arc::new(cfg), "bench", true)
        .await
        .expect("connects");
    println!(
        "control-plane bench: {jobs} jobs x {units} units, {encoders} encoders x {slots} slots, \
         {} cores, nats-server {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        ffleet::local::NatsServer::binary().display()
    );
    println!(
        "real: splitter, scheduler, encoder and merger services (separate processes), every \
         stream, KV record, consumer, ack and event, scratch storage of cuts and results \
         (backend: {})",
        std::env::var("FFLEET_STORAGE__BACKEND").unwrap_or_else(|_| "the default".into())
    );
    println!(
        "simulated: ffmpeg in the encoder (writes 5 bytes), the splitter's probe+cut after the \
         first job (plan reused, tiny cut files stored), the merger's concat/mux/verify"
    );

    // The baseline, on the same server before the services start.
    let base = baseline(&ctx).await;
    println!();
    println!("raw JetStream on this server (300-byte messages, file store):");
    println!(
        "  publish, ack awaited one at a time   {:>9.0} msg/s",
        base.publish1
    );
    println!(
        "  publish, 256 acks in flight          {:>9.0} msg/s",
        base.publish256
    );
    println!(
        "  fetch(1) + ack                       {:>9.0} msg/s",
        base.fetch1
    );
    println!(
        "  fetch(100) + ack                     {:>9.0} msg/s",
        base.fetch100
    );

    let mut svcs = Vec::new();
    for s in ["splitter", "scheduler", "merger"] {
        svcs.push(Svc::spawn(&url, &dir, s, s, &[]));
    }
    for i in 1..=encoders {
        svcs.push(Svc::spawn(&url, &dir, &format!("enc-{i}"), "encoder", &[]));
    }
    let watcher = Completions::watch(&ctx.client).await;
    wait_live(&ctx, encoders).await;

    // Warm-up: the first job runs the real probe and cut.
    let mut next_job = 0usize;
    let submit_one = async |next: &mut usize| -> String {
        let id = format!("cp-{:05}", *next);
        *next += 1;
        submit(&ctx, &dir, &src, &id).await;
        id
    };
    let id = submit_one(&mut next_job).await;
    watcher.wait(&[id], Duration::from_secs(120)).await;

    // One job at a time: end-to-end overhead and dispatch latency with nothing queued.
    for s in svcs.iter_mut() {
        s.dump();
    }
    let mut e2e = Vec::new();
    for _ in 0..serial {
        let t = Instant::now();
        let id = submit_one(&mut next_job).await;
        watcher.wait(&[id], Duration::from_secs(60)).await;
        e2e.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut idle_dispatch: Vec<f64> = svcs.iter_mut().flat_map(|s| s.dump().1).collect();

    // Everything at once.
    let before = Snapshot::take(&mut svcs, server_pid, mport);
    let t0 = Instant::now();
    let mut ids = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        ids.push(submit_one(&mut next_job).await);
    }
    let submitted = t0.elapsed().as_secs_f64();
    let failed = watcher.wait(&ids, Duration::from_secs(1800)).await;
    let wall = t0.elapsed().as_secs_f64();
    let after = Snapshot::take(&mut svcs, server_pid, mport);
    let segs = (jobs * units as usize) as f64;
    let mut load_dispatch = after.dispatch.clone();

    println!();
    println!(
        "{} jobs of {units} units at once: submitted in {submitted:.2} s, all ended in {wall:.2} s ({failed} failed)",
        jobs
    );
    report(&Report {
        segs,
        jobs: jobs as f64,
        wall,
        base: &base,
        before: &before,
        after: &after,
        e2e: &mut e2e,
        idle_dispatch: &mut idle_dispatch,
        load_dispatch: &mut load_dispatch,
    });

    if nodes > 0 {
        fleet_of_nodes(
            &ctx, &url, &dir, &src, &watcher, &mut svcs, nodes, server_pid, mport,
        )
        .await;
    }
    drop(svcs);
    drop(server);
}

/// `n` simulated nodes beside the real ones: what they cost the scheduler and the server, and
/// how fast a SIGKILLed real encoder's unit runs elsewhere under that load.
#[allow(clippy::too_many_arguments)]
async fn fleet_of_nodes(
    ctx: &ffleet_runtime::runtime::Ctx,
    url: &str,
    dir: &Path,
    src: &Path,
    watcher: &Completions,
    svcs: &mut Vec<Svc>,
    n: usize,
    server_pid: u32,
    mport: u16,
) {
    let ttl = ctx.config.fleet.heartbeat_ttl_secs;
    println!();
    println!("{n} simulated nodes heartbeating at 1 Hz (busy, holding nothing):");
    let sim = Svc::spawn(url, dir, "sim-nodes", "sim-nodes", &[]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = 10.0;
    let a = Snapshot::take(svcs, server_pid, mport);
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let b = Snapshot::take(svcs, server_pid, mport);
    let cpu_ms = |name: &str| (b.cpu[name] - a.cpu[name]) * 1000.0 / window;
    let kv = |s: &Snapshot| s.streams.get("KV_ffleet-workers").copied().unwrap_or(0);
    println!(
        "  scheduler CPU {:.1} ms/s, nats-server CPU {:.1} ms/s, heartbeat KV writes {:.0}/s, \
         scheduler watch deliveries {:.0}/s, server msgs in {:.0}/s out {:.0}/s",
        cpu_ms("scheduler"),
        cpu_ms("nats-server"),
        (kv(&b) - kv(&a)) as f64 / window,
        (b.ops["scheduler"].watch_deliveries - a.ops["scheduler"].watch_deliveries) as f64 / window,
        (b.varz.0 - a.varz.0) as f64 / window,
        (b.varz.1 - a.varz.1) as f64 / window,
    );
    // A real encoder whose executor holds its unit until killed.
    let mut victim = Svc::spawn(
        url,
        dir,
        "victim",
        "encoder",
        &[
            ("FFLEET_BENCH_HOLD_MS", u64::MAX.to_string()),
            ("FFLEET_BENCH_SLOTS", "1".into()),
        ],
    );
    // The other encoders stop taking work meanwhile, so the victim gets a unit.
    let others: Vec<Svc> = svcs.drain(3..).collect();
    drop(others);
    wait_live(ctx, 1).await;
    let id = "cp-failover".to_string();
    submit(ctx, dir, src, &id).await;
    victim.wait_line("holding");
    for i in 1..=2 {
        svcs.push(Svc::spawn(
            url,
            dir,
            &format!("enc-after-{i}"),
            "encoder",
            &[],
        ));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = victim.child.kill();
    let killed = Instant::now();
    watcher.wait(&[id], Duration::from_secs(120)).await;
    let failover = killed.elapsed().as_secs_f64();
    println!(
        "  SIGKILLed encoder holding a unit: job completed {failover:.2} s after the kill \
         (heartbeat TTL {ttl} s, target <= {:.1} s)",
        2.0 * ttl
    );
    drop(victim);
    drop(sim);
}

async fn submit(ctx: &ffleet_runtime::runtime::Ctx, dir: &Path, src: &Path, id: &str) {
    let req = serde_json::json!({
        "version": 1, "job_id": id, "input": src.display().to_string(),
        "output": dir.join(format!("{id}.mp4")).display().to_string(), "segment_seconds": 1.0
    });
    ffleet_runtime::nats::publish::raw(
        &ctx.js,
        ctx.retry,
        subjects::JOBS_SUBMIT.into(),
        serde_json::to_vec(&req).unwrap().into(),
        id,
    )
    .await
    .expect("submitted");
}

/// Waits until `n` encoders heartbeat.
async fn wait_live(ctx: &ffleet_runtime::runtime::Ctx, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let keys = ctx.workers.keys().await.unwrap_or_default();
        let live = keys.iter().filter(|k| !k.starts_with("sim-")).count();
        if live >= n {
            // The scheduler's view follows within a heartbeat.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return;
        }
        assert!(Instant::now() < deadline, "encoders did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Terminal events of every job, from a core subscription.
struct Completions {
    ended: std::sync::Arc<std::sync::Mutex<HashMap<String, bool>>>,
    notify: std::sync::Arc<tokio::sync::Notify>,
}

impl Completions {
    async fn watch(client: &async_nats::Client) -> Completions {
        let ended = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        for (kind, ok) in [(EventKind::Completed, true), (EventKind::Failed, false)] {
            let mut sub = client
                .subscribe(subjects::event_any_job(kind))
                .await
                .expect("subscribed");
            let (ended, notify) = (ended.clone(), notify.clone());
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    // ffleet.events.<job>.<kind>
                    let job = m.subject.split('.').nth(2).unwrap_or("").to_owned();
                    ended.lock().unwrap().insert(job, ok);
                    notify.notify_waiters();
                }
            });
        }
        client.flush().await.unwrap();
        Completions { ended, notify }
    }

    /// Waits for every job in `ids` to end; how many failed.
    async fn wait(&self, ids: &[String], limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            {
                let m = self.ended.lock().unwrap();
                if ids.iter().all(|i| m.contains_key(i)) {
                    return ids.iter().filter(|i| !m[*i]).count();
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "jobs did not end within {limit:?}");
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }
}
