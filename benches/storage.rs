//! `cargo bench --bench storage`: media through the JetStream Object Store against a shared
//! directory.
//!
//! Part 1, the 60 s 720p job: the splitter, scheduler, merger and two encoders as processes
//! around a private nats-server, once per backend per round, alternating which backend goes
//! first. Over the object store the encoders have no roots and no shared directory, only their
//! own work dirs. Prints per run the wall time (submit → completed), the bytes nats-server took
//! in and sent out (its monitoring `/varz`) per source byte, the job's `media_bytes`, and the
//! peak RSS (`VmHWM`) of nats-server and of every service; then the ratio of the medians, and
//! whether both backends wrote the same bytes.
//!
//! Part 2, one object alone: a file of `FFLEET_BENCH_OBJECT_MB` MiB (1024) and one of 64 MiB,
//! each uploaded and downloaded by this process: MB/s, and the peak RSS of this process (its
//! peak reset before each transfer) and of nats-server (likewise).
//!
//! Part 2 runs on one server and on three at replicas 3, and downloads each object twice: by
//! message gets (how ffleet reads) and by async-nats's consumer-based reader (how earlier
//! releases read), alternating which goes first.
//!
//! Environment: `FFLEET_BENCH_ROUNDS` (2; 0 runs part 2 only), `FFLEET_BENCH_SECS` (60),
//! `FFLEET_BENCH_OBJECT_MB` (1024).

mod common;

use common::*;

use ffleet_runtime::config::Config;
use ffleet_runtime::messages::JobState;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::{ObjectStore, WorkDir};
use ffleet_runtime::{JobId, subjects};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BACKENDS: [&str; 2] = ["shared-dir", "object-store"];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = env_or("FFLEET_BENCH_ROUNDS", 2);
    let secs: u32 = env_or("FFLEET_BENCH_SECS", 60);
    let object_mb: u64 = env_or("FFLEET_BENCH_OBJECT_MB", 1024);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let media = tempfile::tempdir().expect("tempdir");
    if rounds == 0 {
        objects(&rt, media.path(), object_mb);
        return;
    }
    let src = source_720p(media.path(), secs);
    let src_bytes = std::fs::metadata(&src).expect("source").len();
    println!("source: {secs} s 1280x720, {src_bytes} bytes; {rounds} rounds\n");

    println!(
        "| round | backend | wall | NATS bytes / source byte | media_bytes | peak RSS MB: nats-server, splitter, scheduler, merger, enc-1, enc-2 |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut walls: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut outputs: [Option<Vec<u8>>; 2] = [None, None];
    for round in 1..=rounds {
        let order: [usize; 2] = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for b in order {
            let run = rt.block_on(job(BACKENDS[b], &src, round));
            println!(
                "| {round} | {} | {:.2} s | {:.2} | {} | {} |",
                BACKENDS[b],
                run.wall,
                run.nats_bytes as f64 / src_bytes as f64,
                run.media_bytes,
                run.rss_mb
                    .iter()
                    .map(|m| format!("{m:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            walls[b].push(run.wall);
            outputs[b] = Some(run.output);
        }
    }
    let [shared, object] = walls.map(|mut w| median(&mut w));
    println!(
        "\nmedian wall: shared-dir {shared:.2} s, object-store {object:.2} s; ratio {:.3} (target <= 1.05)",
        object / shared
    );
    println!(
        "outputs byte-identical across backends: {}\n",
        outputs[0] == outputs[1]
    );

    objects(&rt, media.path(), object_mb);
}

/// Part 2: one object alone, on one server and on three at replicas 3.
fn objects(rt: &tokio::runtime::Runtime, dir: &Path, object_mb: u64) {
    println!(
        "| object | servers (replicas) | upload | download (message gets) | download by a consumer, as earlier releases (gets / consumer) | client peak RSS up / down (gets) | nats-server peak RSS up / down (gets; largest) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    // Which download goes first alternates from row to row.
    let mut gets_first = true;
    for servers in [1, 3] {
        for mb in [64, object_mb] {
            rt.block_on(transfer(dir, mb, servers, gets_first));
            gets_first = !gets_first;
        }
    }
}

struct Run {
    wall: f64,
    nats_bytes: u64,
    media_bytes: u64,
    rss_mb: Vec<f64>,
    output: Vec<u8>,
}

/// One job of `src` on a fresh fleet over `backend`.
async fn job(backend: &str, src: &Path, round: usize) -> Run {
    let monitor = free_port();
    let server = ffleet::local::NatsServer::start_temp_with(vec!["-m".into(), monitor.to_string()])
        .expect("nats-server starts");
    let root = tempfile::tempdir().expect("root");
    let input = root.path().join("in.mp4");
    std::fs::copy(src, &input).expect("source copied");
    let scratch = scratch_of(root.path());
    let work = tempfile::tempdir().expect("work dirs");
    let url = server.url.clone();
    let mut procs = Procs(Vec::new());
    for svc in ["splitter", "scheduler", "merger", "enc-1", "enc-2"] {
        let encoder = svc.starts_with("enc-");
        let mut env = vec![
            ("FFLEET_STORAGE__BACKEND", backend.to_owned()),
            (
                "FFLEET_STORAGE__WORK_DIR",
                work.path().join(svc).display().to_string(),
            ),
        ];
        if encoder && backend == "object-store" {
            // An encoder on another machine: nothing but NATS.
            env.push(("FFLEET_STORAGE__INPUT_ROOTS", "[]".into()));
            env.push(("FFLEET_STORAGE__OUTPUT_ROOTS", "[]".into()));
            env.push((
                "FFLEET_STORAGE__SCRATCH",
                work.path().join("none").display().to_string(),
            ));
        }
        let (name, node) = if encoder {
            ("encoder", Some(svc))
        } else {
            (svc, None)
        };
        procs
            .0
            .push((svc.into(), spawn(&url, root.path(), name, node, &env)));
    }
    let mut cfg = Config::default();
    cfg.nats.url = url.clone();
    cfg.storage.scratch = scratch;
    let ctx = Ctx::connect(Arc::new(cfg), "bench", true)
        .await
        .expect("connects");
    while ctx.workers.keys().await.unwrap_or_default().len() < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = JobId::new(format!("storage-{round}")).unwrap();
    let output = root.path().join("out.mp4");
    let req = serde_json::json!({
        "version": 1, "job_id": id.as_str(), "input": input.display().to_string(),
        "output": output.display().to_string()
    });
    let before = nats_bytes(monitor);
    let started = Instant::now();
    ffleet_runtime::nats::publish::raw(
        &ctx.js,
        ctx.retry,
        subjects::JOBS_SUBMIT.into(),
        serde_json::to_vec(&req).unwrap().into(),
        id.as_str(),
    )
    .await
    .expect("submitted");
    let rec = loop {
        if let Ok(Some((r, _))) = ctx.jobs.get(id.as_str()).await
            && r.state.is_terminal()
        {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "job hung");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(rec.state, JobState::Completed, "{:?}", rec.failure);
    let nats = nats_bytes(monitor) - before;
    let mut rss_mb = vec![server.pid().map_or(0.0, peak_mb)];
    rss_mb.extend(
        procs
            .0
            .iter()
            .map(|(_, c): &(String, Child)| peak_mb(c.id())),
    );
    drop(procs);
    Run {
        wall,
        nats_bytes: nats,
        media_bytes: rec.media_bytes,
        rss_mb,
        output: std::fs::read(&output).expect("output"),
    }
}

/// Uploads and downloads one object of `mb` MiB on fresh servers (`servers`: one, or three at
/// replicas 3), printing a table row. The download runs twice, alternating which goes first:
/// the way ffleet reads (a message get per chunk, no consumer) and the way earlier releases read
/// (async-nats's reader, an ordered push consumer), so the row carries its own baseline.
async fn transfer(dir: &Path, mb: u64, servers: usize, gets_first: bool) {
    let sdir = dir.join(format!("servers-{mb}-{servers}"));
    std::fs::create_dir_all(&sdir).expect("server dir");
    let nodes = start_servers(&sdir, servers, false);
    let url = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.port))
        .collect::<Vec<_>>()
        .join(",");
    let file = dir.join(format!("object-{mb}.bin"));
    write_noise(&file, mb << 20);
    let mut cfg = Config::default();
    cfg.nats.url = url;
    cfg.streams.replicas = servers;
    let cfg = Arc::new(cfg);
    let client = ffleet_runtime::nats::connect(&cfg.nats, "bench", true)
        .await
        .expect("connects");
    let js = ffleet_runtime::nats::connect::jetstream(client, &cfg.nats);
    let work = tempfile::tempdir().expect("work");
    let work = Arc::new(WorkDir::open(work.path()).expect("work dir"));
    let policy = ffleet_runtime::nats::retry::Policy::from_config(&cfg.nats);
    let store = ObjectStore::open(
        &js,
        policy,
        &cfg.storage,
        cfg.media_placement(),
        work,
        ffleet_runtime::nats::retry::Patience::For(Duration::from_secs(60)),
    )
    .await
    .expect("bucket");
    let pids: Vec<u32> = nodes.iter().map(|n| n.child.id()).collect();
    let server_peak = |pids: &[u32]| pids.iter().map(|p| peak_mb(*p)).fold(0.0, f64::max);
    let bytes = (mb << 20) as f64;

    reset_peak(std::process::id());
    pids.iter().for_each(|p| reset_peak(*p));
    let t = Instant::now();
    let stored = store.upload(&file, "bench/object").await.expect("upload");
    let up = bytes / t.elapsed().as_secs_f64() / 1e6;
    let (client_up, server_up) = (peak_mb(std::process::id()), server_peak(&pids));

    let dest = dir.join(format!("object-{mb}.back"));
    let reader = js
        .get_object_store(&cfg.storage.bucket)
        .await
        .expect("object store");
    let mut gets = (0.0, 0.0, 0.0);
    let mut consumer = 0.0;
    let order = if gets_first {
        [true, false]
    } else {
        [false, true]
    };
    for by_gets in order {
        let _ = std::fs::remove_file(&dest);
        reset_peak(std::process::id());
        pids.iter().for_each(|p| reset_peak(*p));
        let t = Instant::now();
        if by_gets {
            store
                .download("bench/object", stored.digest.as_deref(), &dest)
                .await
                .expect("download");
            let rate = bytes / t.elapsed().as_secs_f64() / 1e6;
            gets = (rate, peak_mb(std::process::id()), server_peak(&pids));
        } else {
            let mut obj = reader.get("bench/object").await.expect("get");
            let mut out = tokio::fs::File::create(&dest).await.expect("dest");
            tokio::io::copy(&mut obj, &mut out).await.expect("read");
            // As the gets' download does: the bytes on disk before it returns.
            out.sync_all().await.expect("synced");
            consumer = bytes / t.elapsed().as_secs_f64() / 1e6;
        }
        assert_eq!(
            std::fs::metadata(&dest).expect("downloaded").len(),
            mb << 20
        );
    }
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&dest);
    println!(
        "| {mb} MiB | {servers} | {up:.0} MB/s | {:.0} MB/s | {consumer:.0} MB/s ({:.2}) | {client_up:.0} / {:.0} MB | {server_up:.0} / {:.0} MB |",
        gets.0,
        gets.0 / consumer,
        gets.1,
        gets.2
    );
}

/// `len` bytes that do not compress (xorshift), written 1 MiB at a time.
fn write_noise(path: &PathBuf, len: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("object file"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0_u8; 1 << 20];
    for _ in 0..len >> 20 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block).expect("object written");
    }
    f.flush().expect("object flushed");
}

/// Peak resident set (`VmHWM`) of `pid` in MB.
fn peak_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets `pid`'s peak resident set to its current one (Linux `clear_refs` 5).
fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Bytes nats-server has taken in and sent out, from its monitoring endpoint.
fn nats_bytes(port: u16) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("monitoring port");
    s.write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("varz asked");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("varz read");
    let json = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(json).expect("varz is JSON");
    v["in_bytes"].as_u64().unwrap_or(0) + v["out_bytes"].as_u64().unwrap_or(0)
}
