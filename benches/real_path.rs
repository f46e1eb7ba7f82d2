//! `cargo bench --bench real_path`: the control plane on the path users run. Real ffmpeg on tiny
//! media (jobs of ten 1-second 160x90 segments, `h264-fast`), the services as separate `ffleet
//! run` processes, jobs published by an outside client (this bench, through its own connection)
//! at a steady offered rate, on one nats-server or on three at replicas 3, with the servers'
//! default fsync or `sync_interval: always` (as compose.yaml ships). `control_plane` is the
//! ceiling with media stand-ins; this is what a user's fleet pays per segment.
//!
//! For each offered rate it prints the wall time, the CPU per segment of each service process
//! and of the servers (from /proc: the process's own time, its ffmpeg children left out), and
//! the messages per segment each service sent and received (from the servers' /connz, by
//! connection name), with raw JetStream publish+ack on the same servers as the baseline.
//!
//! Environment: `FFLEET_BENCH_SERVERS` (1 or 3, default 1), `FFLEET_BENCH_SYNC` (`default` or
//! `always`; `always` needs nats-server 2.10+), `FFLEET_BENCH_RATES` (offered segments/s,
//! `1,10,100`), `FFLEET_BENCH_SECS` (how long each rate is offered, 20; at least one job),
//! `FFLEET_BENCH_ENCODERS` (2, one slot each), `FFLEET_BENCH_RETAINED` (finished jobs whose
//! records the buckets hold before the first rate, each a completed job record, as a fleet keeps
//! them for a week; 0), `FFLEET_BENCH_RETAINED_UNITS` (done unit records each of those keeps: 0,
//! as the scheduler's purge leaves them; 10 for jobs whose unit records nobody purged),
//! `FFLEET_NATS_SERVER` (the server binary), `FFLEET_BENCH_IDLE_SECS` (the idle fleet measured
//! first, 10), `FFLEET_BENCH_NODES` (simulated nodes heartbeating at 1 Hz after the rates, 0),
//! `FFLEET_BENCH_BIN` (another build's `ffleet` for the services).

mod common;

use common::*;
use ffleet_runtime::subjects::{self, EventKind};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Segments per job: ten 1-second segments.
const UNITS: u64 = 10;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(bench());
}

/// What the fleet had spent at one moment: CPU seconds per process (services by name, the
/// servers together) and messages in and out per connection name, over every server.
#[derive(Default, Clone)]
struct Snapshot {
    cpu: BTreeMap<String, f64>,
    servers_cpu: f64,
    msgs: BTreeMap<String, (u64, u64)>,
    /// Messages stored per stream (the highest last sequence any server reports).
    stored: BTreeMap<String, u64>,
    /// Deliveries per durable consumer (`stream/consumer`): each ends in one ack, nak or term,
    /// a replicated write where the consumer is.
    delivered: BTreeMap<String, u64>,
}

fn snapshot(procs: &Procs, servers: &[Server]) -> Snapshot {
    let mut s = Snapshot::default();
    for (name, child) in &procs.0 {
        let key = if name.starts_with("enc-") {
            "encoders".to_owned()
        } else {
            name.clone()
        };
        *s.cpu.entry(key).or_default() += cpu_secs(child.id());
    }
    for server in servers {
        s.servers_cpu += cpu_secs(server.child.id());
        let connz = http_json(server.monitor, "/connz?limit=1000");
        for c in connz["connections"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("other");
            let key = match name.strip_prefix("ffleet-") {
                Some("encoder") => "encoders".to_owned(),
                Some(svc) => svc.to_owned(),
                None => "other".to_owned(),
            };
            let e = s.msgs.entry(key).or_default();
            // The server's in_msgs are what the client sent.
            e.0 += c["in_msgs"].as_u64().unwrap_or(0);
            e.1 += c["out_msgs"].as_u64().unwrap_or(0);
        }
        let jsz = http_json(
            server.monitor,
            "/jsz?streams=true&consumers=true&config=true",
        );
        for account in jsz["account_details"].as_array().into_iter().flatten() {
            for st in account["stream_detail"].as_array().into_iter().flatten() {
                let name = st["name"].as_str().unwrap_or("?").to_owned();
                let last = st["state"]["last_seq"].as_u64().unwrap_or(0);
                let e = s.stored.entry(name.clone()).or_default();
                *e = (*e).max(last);
                for c in st["consumer_detail"].as_array().into_iter().flatten() {
                    // Watchers and readers are ephemeral and unreplicated: only durables count.
                    if c["config"]["durable_name"].as_str().is_none() {
                        continue;
                    }
                    let key = format!("{name}/{}", c["name"].as_str().unwrap_or("?"));
                    let n = c["delivered"]["consumer_seq"].as_u64().unwrap_or(0);
                    let e = s.delivered.entry(key).or_default();
                    *e = (*e).max(n);
                }
            }
        }
    }
    s
}

/// A 10 s 160x90 source with a keyframe every second.
fn source(dir: &Path) -> PathBuf {
    let out = dir.join("rp-source.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x90:rate=25",
        "-t",
        "10",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        out.to_str().unwrap(),
    ]);
    out
}

/// Raw JetStream publish+ack, one at a time, on a stream of the fleet's replicas: msg/s.
async fn raw_publish(js: &async_nats::jetstream::Context, replicas: usize) -> f64 {
    let name = "BENCH_RAW";
    let _ = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec!["bench.raw".into()],
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("raw stream");
    let n = 500;
    let t = Instant::now();
    for _ in 0..n {
        js.publish("bench.raw", "x".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let _ = js.delete_stream(name).await;
    rate
}

struct Row {
    rate: f64,
    segments: u64,
    failed: u64,
    wall: f64,
    before: Snapshot,
    after: Snapshot,
}

async fn bench() {
    let n_servers: usize = env_or("FFLEET_BENCH_SERVERS", 1);
    let always = std::env::var("FFLEET_BENCH_SYNC").is_ok_and(|v| v == "always");
    let rates: Vec<f64> = std::env::var("FFLEET_BENCH_RATES")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs: f64 = env_or("FFLEET_BENCH_SECS", 20.0);
    let encoders: usize = env_or("FFLEET_BENCH_ENCODERS", 2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("media");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(scratch_of(&dir)).unwrap();
    let src = source(&dir);
    let servers = start_servers(tmp.path(), n_servers, always);
    let url = servers
        .iter()
        .map(|s| format!("nats://127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
    let replicas = n_servers.min(3);
    let env = [
        ("FFLEET_STREAMS__REPLICAS", replicas.to_string()),
        ("FFLEET_LOG__LEVEL", "error".to_owned()),
    ];
    let procs = start_procs(&url, &dir, encoders, &env);
    // The outside client: a plain NATS connection, as another system would have.
    let client = connect(&url).await;
    let js = async_nats::jetstream::new(client.clone());
    wait_ready(&js).await;
    let raw = raw_publish(&js, replicas).await;
    let retained: u64 = env_or("FFLEET_BENCH_RETAINED", 0);
    if retained > 0 {
        let t = Instant::now();
        retain(&js, retained).await;
        println!(
            "{retained} finished jobs' records stored in {:.0} s",
            t.elapsed().as_secs_f64()
        );
    }
    println!(
        "real-path bench: {n_servers} server(s), replicas {replicas}, fsync {}, {encoders} \
         encoders x 1 slot, {} cores, nats-server {}; raw JetStream publish+ack: {raw:.0} msg/s",
        if always { "always" } else { "default" },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        ffleet::local::NatsServer::binary().display()
    );
    let mut done = client
        .subscribe(subjects::event_any_job(EventKind::Completed))
        .await
        .expect("subscribe");
    let mut failed = client
        .subscribe(subjects::event_any_job(EventKind::Failed))
        .await
        .expect("subscribe");
    let idle_secs: f64 = env_or("FFLEET_BENCH_IDLE_SECS", 10.0);
    if idle_secs > 0.0 {
        let before = snapshot(&procs, &servers);
        tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
        print_per_second(
            "idle fleet (nothing to do)",
            idle_secs,
            &before,
            &snapshot(&procs, &servers),
        );
    }
    let mut rows = Vec::new();
    for (r, &rate) in rates.iter().enumerate() {
        let jobs = ((rate * secs) / UNITS as f64).ceil().max(1.0) as u64;
        let every = Duration::from_secs_f64(UNITS as f64 / rate);
        let before = snapshot(&procs, &servers);
        let t = Instant::now();
        let mut tick = tokio::time::interval(every);
        for j in 0..jobs {
            tick.tick().await;
            submit(&js, &src, &dir, &format!("rp{r}-{j}")).await;
        }
        let (mut ok, mut bad) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(600);
        while ok + bad < jobs && Instant::now() < deadline {
            tokio::select! {
                Some(_) = done.next() => ok += 1,
                Some(_) = failed.next() => bad += 1,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
        let wall = t.elapsed().as_secs_f64();
        rows.push(Row {
            rate,
            segments: jobs * UNITS,
            failed: jobs - ok,
            wall,
            before,
            after: snapshot(&procs, &servers),
        });
    }
    print_rows(&rows);
    let nodes: usize = env_or("FFLEET_BENCH_NODES", 0);
    if nodes > 0 {
        let secs = idle_secs.max(10.0);
        let stop = tokio_util::sync::CancellationToken::new();
        let beating = tokio::spawn(sim_nodes(js.clone(), nodes, stop.clone()));
        // Every node has written once before the window opens.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = snapshot(&procs, &servers);
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let after = snapshot(&procs, &servers);
        stop.cancel();
        let _ = beating.await;
        print_per_second(
            &format!("{nodes} simulated nodes heartbeating at 1 Hz, no jobs"),
            secs,
            &before,
            &after,
        );
    }
    drop(procs);
    drop(servers);
}

/// Stores `n` finished jobs' records: a completed job record each, and `FFLEET_BENCH_RETAINED_UNITS`
/// done unit records.
async fn retain(js: &async_nats::jetstream::Context, n: u64) {
    let kept_units: u32 = env_or("FFLEET_BENCH_RETAINED_UNITS", 0);
    use ffleet_runtime::messages::{self, JobRecord, JobRequest, JobState, SegmentRecord};
    use ffleet_runtime::{JobId, Unit};
    let jobs = js
        .get_key_value(subjects::BUCKET_JOBS)
        .await
        .expect("jobs bucket");
    let units = js
        .get_key_value(subjects::BUCKET_SEGMENTS)
        .await
        .expect("segments bucket");
    let writes = futures::stream::iter(0..n).map(|i| {
        let (jobs, units) = (jobs.clone(), units.clone());
        async move {
            let id = format!("old-{i:07}");
            let req: JobRequest = serde_json::from_value(serde_json::json!({
                "version": 1, "job_id": id, "input": "file:///in/old.mp4",
                "output": format!("file:///out/{id}.mp4"),
            }))
            .expect("request");
            let mut rec = JobRecord::new(req, "h264-fast".into());
            rec.state = JobState::Completed;
            jobs.put(&id, messages::encode(&rec))
                .await
                .expect("job put");
            let job = JobId::new(&id).expect("id");
            for u in 0..kept_units {
                let mut seg = SegmentRecord::planned(None);
                seg.state = ffleet_runtime::messages::SegmentState::Done;
                seg.result_key = Some(format!("jobs/{id}/enc/v{u:05}.a1.nut"));
                units
                    .put(
                        subjects::segment_key(&job, Unit::Video(u)),
                        messages::encode(&seg),
                    )
                    .await
                    .expect("unit put");
            }
        }
    });
    writes.buffer_unordered(64).collect::<Vec<()>>().await;
}

fn start_procs(url: &str, dir: &Path, encoders: usize, env: &[(&str, String)]) -> Procs {
    let mut procs = Procs(Vec::new());
    for svc in ["splitter", "scheduler", "merger"] {
        procs.0.push((svc.into(), spawn(url, dir, svc, None, env)));
    }
    for i in 1..=encoders {
        let n = format!("enc-{i}");
        procs
            .0
            .push((n.clone(), spawn(url, dir, "encoder", Some(&n), env)));
    }
    procs
}

async fn connect(url: &str) -> async_nats::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addrs: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(|u| u.parse().expect("a server address"))
        .collect();
    loop {
        match async_nats::ConnectOptions::new()
            .name("bench-client")
            .connect(addrs.as_slice())
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
}

/// Waits until the fleet's jobs stream exists (the services provisioned it).
async fn wait_ready(js: &async_nats::jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while js.get_stream(subjects::STREAM_JOBS).await.is_err() {
        assert!(Instant::now() < deadline, "the fleet never provisioned");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every service up: its consumer or its heartbeat is there.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

async fn submit(js: &async_nats::jetstream::Context, src: &Path, dir: &Path, id: &str) {
    let req = serde_json::json!({
        "version": 1,
        "job_id": id,
        "input": format!("file://{}", src.display()),
        "output": format!("file://{}/out-{id}.mp4", dir.display()),
        "profile": "h264-fast",
        "segment_seconds": 1.0,
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(subjects::JOBS_SUBMIT, headers, req.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
}

fn print_rows(rows: &[Row]) {
    let names = ["splitter", "scheduler", "encoders", "merger"];
    println!();
    println!("CPU per segment (ms), each process's own (ffmpeg children excluded):");
    println!(
        "| offered seg/s | segments | failed | wall s | splitter | scheduler | encoders | merger | ffleet | servers | total |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let per = |v: f64| 1000.0 * v / r.segments as f64;
        let d = |n: &str| r.after.cpu.get(n).unwrap_or(&0.0) - r.before.cpu.get(n).unwrap_or(&0.0);
        let ffleet: f64 = names.iter().map(|n| d(n)).sum();
        let servers = r.after.servers_cpu - r.before.servers_cpu;
        println!(
            "| {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.rate,
            r.segments,
            r.failed,
            r.wall,
            per(d("splitter")),
            per(d("scheduler")),
            per(d("encoders")),
            per(d("merger")),
            per(ffleet),
            per(servers),
            per(ffleet + servers)
        );
    }
    println!();
    println!("Server messages per segment, sent / received by each service (from /connz):");
    println!("| offered seg/s | splitter | scheduler | encoders | merger | all services |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let d = |n: &str| {
            let a = r.after.msgs.get(n).copied().unwrap_or_default();
            let b = r.before.msgs.get(n).copied().unwrap_or_default();
            (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
        };
        let per = |(i, o): (u64, u64)| {
            format!(
                "{:.1} / {:.1}",
                i as f64 / r.segments as f64,
                o as f64 / r.segments as f64
            )
        };
        let all = names
            .iter()
            .map(|n| d(n))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.rate,
            per(d("splitter")),
            per(d("scheduler")),
            per(d("encoders")),
            per(d("merger")),
            per(all)
        );
    }
    println!();
    println!(
        "Replicated writes per segment: messages stored per stream and deliveries per durable \
         consumer (each settled by one ack, nak or term); purges and deletes not counted:"
    );
    for r in rows {
        let per = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            let mut v: Vec<(String, f64)> = a
                .iter()
                .map(|(k, n)| {
                    let d = n.saturating_sub(b.get(k).copied().unwrap_or(0));
                    (k.clone(), d as f64 / r.segments as f64)
                })
                .filter(|(_, d)| *d > 0.0)
                .collect();
            v.sort_by(|x, y| y.1.total_cmp(&x.1));
            v
        };
        let stored = per(&r.after.stored, &r.before.stored);
        let acked = per(&r.after.delivered, &r.before.delivered);
        let total: f64 = stored.iter().chain(&acked).map(|(_, d)| d).sum();
        let list = |v: &[(String, f64)]| {
            v.iter()
                .map(|(k, d)| format!("{k} {d:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("- {} seg/s: **{total:.1}** in all", r.rate);
        println!("  - stored: {}", list(&stored));
        println!("  - settled: {}", list(&acked));
    }
}

/// Heartbeats `n` simulated nodes once a second each, spread over the second, through the
/// bench's own connection: busy, holding nothing, so the scheduler sends them no work.
async fn sim_nodes(
    js: async_nats::jetstream::Context,
    n: usize,
    stop: tokio_util::sync::CancellationToken,
) {
    use ffleet_runtime::messages::{self, Heartbeat};
    use ffleet_runtime::{Capability, NodeId};
    let kv = js
        .get_key_value(subjects::BUCKET_WORKERS)
        .await
        .expect("workers bucket");
    let gap = Duration::from_secs(1) / n.max(1) as u32;
    let mut tick = tokio::time::interval(gap);
    let mut i = 0usize;
    while !stop.is_cancelled() {
        tick.tick().await;
        let node = format!("sim-{:05}", i % n);
        let hb = Heartbeat {
            slots_busy: 1,
            ..Heartbeat::new(
                NodeId::new(&node).expect("node id"),
                vec![Capability::cpu()],
                1,
            )
        };
        let kv = kv.clone();
        tokio::spawn(async move {
            let _ = kv.put(node, messages::encode(&hb)).await;
        });
        i += 1;
    }
}

/// CPU per second of each process and of the servers, and messages per second per service,
/// between two snapshots `secs` apart.
fn print_per_second(what: &str, secs: f64, before: &Snapshot, after: &Snapshot) {
    let per = |a: f64, b: f64| 1000.0 * (a - b) / secs;
    println!();
    println!("{what}, over {secs:.0} s: CPU ms per second (and messages in / out per second)");
    let mut total = 0.0;
    for name in ["splitter", "scheduler", "encoders", "merger"] {
        let c = per(
            after.cpu.get(name).copied().unwrap_or(0.0),
            before.cpu.get(name).copied().unwrap_or(0.0),
        );
        total += c;
        let a = after.msgs.get(name).copied().unwrap_or_default();
        let b = before.msgs.get(name).copied().unwrap_or_default();
        println!(
            "- {name}: {c:.1} ms/s ({:.1} / {:.1} msg/s)",
            a.0.saturating_sub(b.0) as f64 / secs,
            a.1.saturating_sub(b.1) as f64 / secs
        );
    }
    let servers = per(after.servers_cpu, before.servers_cpu);
    println!(
        "- servers (all): {servers:.1} ms/s, {:.1} % of one core; ffleet services {total:.1} ms/s",
        servers / 10.0
    );
}
