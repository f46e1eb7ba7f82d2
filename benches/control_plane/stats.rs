//! The control-plane benchmark's measuring: the raw JetStream baseline, snapshots of CPU (from
//! /proc), operation counts (from the services) and server counters (/varz, /jsz), and the
//! printed table.

use super::Svc;
pub use super::common::cpu_secs;
use super::common::http_json;
use async_nats::jetstream::{self, consumer::pull, stream};
use ffleet_runtime::nats::ops::Counts;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Raw JetStream rates on this server, msg/s.
pub struct Baseline {
    pub publish1: f64,
    pub publish256: f64,
    pub fetch1: f64,
    pub fetch100: f64,
}

pub async fn baseline(ctx: &ffleet_runtime::runtime::Ctx) -> Baseline {
    let js = &ctx.js;
    let s = js
        .create_stream(stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["bench.raw".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .expect("bench stream");
    let payload = bytes::Bytes::from(vec![b'x'; 300]);
    let n = 3000;
    let t = Instant::now();
    for _ in 0..n {
        js.publish("bench.raw", payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let publish1 = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut acks = Vec::with_capacity(256);
    for _ in 0..n {
        acks.push(js.publish("bench.raw", payload.clone()).await.unwrap());
        if acks.len() == 256 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
    }
    for a in acks.drain(..) {
        a.await.unwrap();
    }
    let publish256 = n as f64 / t.elapsed().as_secs_f64();
    let c = s
        .create_consumer(pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let mut b = c.fetch().max_messages(1).messages().await.unwrap();
        let m = b.next().await.unwrap().unwrap();
        m.ack().await.unwrap();
    }
    let fetch1 = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        let mut b = c.fetch().max_messages(100).messages().await.unwrap();
        while let Some(m) = b.next().await {
            m.unwrap().ack().await.unwrap();
            got += 1;
        }
    }
    let fetch100 = n as f64 / t.elapsed().as_secs_f64();
    let _ = js.delete_stream("BENCH_RAW").await;
    Baseline {
        publish1,
        publish256,
        fetch1,
        fetch100,
    }
}

/// CPU seconds, operation counts and server counters at one moment.
pub struct Snapshot {
    pub cpu: HashMap<String, f64>,
    pub ops: HashMap<String, Counts>,
    pub dispatch: Vec<f64>,
    /// The server's messages in and out.
    pub varz: (u64, u64),
    /// Last sequence of each stream.
    pub streams: HashMap<String, u64>,
}

impl Snapshot {
    pub fn take(svcs: &mut [Svc], server_pid: u32, mport: u16) -> Snapshot {
        let mut cpu = HashMap::new();
        let mut ops = HashMap::new();
        let mut dispatch = Vec::new();
        for s in svcs.iter_mut() {
            let (o, d) = s.dump();
            let role = role(&s.name);
            *cpu.entry(role.clone()).or_insert(0.0) += s.cpu();
            ops.entry(role).or_insert_with(Counts::default).add(&o);
            dispatch.extend(d);
        }
        cpu.insert("nats-server".into(), cpu_secs(server_pid));
        let v = http_json(mport, "/varz");
        let varz = (
            v["in_msgs"].as_u64().unwrap_or(0),
            v["out_msgs"].as_u64().unwrap_or(0),
        );
        let j = http_json(mport, "/jsz?streams=true");
        let mut streams = HashMap::new();
        for acc in j["account_details"].as_array().into_iter().flatten() {
            for st in acc["stream_detail"].as_array().into_iter().flatten() {
                if let (Some(n), Some(seq)) =
                    (st["name"].as_str(), st["state"]["last_seq"].as_u64())
                {
                    streams.insert(n.to_owned(), seq);
                }
            }
        }
        Snapshot {
            cpu,
            ops,
            dispatch,
            varz,
            streams,
        }
    }
}

/// Encoders count as one row.
fn role(name: &str) -> String {
    if name.starts_with("enc-") {
        "encoders".into()
    } else {
        name.into()
    }
}

pub fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

pub struct Report<'a> {
    pub segs: f64,
    pub jobs: f64,
    pub wall: f64,
    pub base: &'a Baseline,
    pub before: &'a Snapshot,
    pub after: &'a Snapshot,
    pub e2e: &'a mut Vec<f64>,
    pub idle_dispatch: &'a mut Vec<f64>,
    pub load_dispatch: &'a mut Vec<f64>,
}

pub fn report(r: &Report) {
    let (segs, base) = (r.segs, r.base);
    let rate = segs / r.wall;
    println!();
    println!("| figure | value | vs raw fetch(1)+ack |");
    println!("| --- | --- | --- |");
    println!("| segments/s | {rate:.0} | {:.3} |", rate / base.fetch1);
    println!("| jobs/s | {:.1} | |", r.jobs / r.wall);
    let (mut idle, mut load) = (r.idle_dispatch.clone(), r.load_dispatch.clone());
    let mut e2e = r.e2e.clone();
    println!(
        "| dispatch p50 / p99, one job at a time (ms) | {:.2} / {:.2} | |",
        pct(&mut idle, 0.5),
        pct(&mut idle, 0.99)
    );
    println!(
        "| dispatch p50 / p99, all jobs at once (ms) | {:.2} / {:.2} | |",
        pct(&mut load, 0.5),
        pct(&mut load, 0.99)
    );
    println!(
        "| end-to-end per job, one at a time, p50 / p99 (ms) | {:.1} / {:.1} | |",
        pct(&mut e2e, 0.5),
        pct(&mut e2e, 0.99)
    );
    // A raw fetch(1)+ack costs the server this much CPU, by the baseline rate on 2 cores at most.
    println!();
    println!("CPU per segment, all jobs at once:");
    println!("| process | CPU ms/segment |");
    println!("| --- | --- |");
    let mut total = 0.0;
    let mut ffleet = 0.0;
    for name in ["splitter", "scheduler", "encoders", "merger", "nats-server"] {
        let ms = (r.after.cpu.get(name).copied().unwrap_or(0.0)
            - r.before.cpu.get(name).copied().unwrap_or(0.0))
            * 1000.0
            / segs;
        total += ms;
        if name != "nats-server" {
            ffleet += ms;
        }
        println!("| {name} | {ms:.3} |");
    }
    println!("| ffleet services | {ffleet:.3} |");
    println!("| all (target <= 2) | {total:.3} |");
    println!(
        "| one raw fetch(1)+ack at the baseline rate, 2 cores busy | {:.3} |",
        2000.0 / base.fetch1
    );

    println!();
    println!("operations per segment, all jobs at once (counted in the services):");
    println!(
        "| service | publishes | acks | in-progress acks | fetches | KV reads | KV writes | watch deliveries | core publishes | other API |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut sum = Counts::default();
    for name in ["splitter", "scheduler", "encoders", "merger"] {
        let (Some(a), Some(b)) = (r.after.ops.get(name), r.before.ops.get(name)) else {
            continue;
        };
        let d = a.since(b);
        sum.add(&d);
        print_ops(name, &d, segs);
    }
    print_ops("all", &sum, segs);
    println!();
    let d = |k: &str| {
        (r.after.streams.get(k).copied().unwrap_or(0)
            - r.before.streams.get(k).copied().unwrap_or(0)) as f64
            / segs
    };
    println!(
        "stored per segment (server): tasks {:.2}, events {:.2}, job records {:.2}, segment records {:.2}, heartbeats {:.2}; server msgs in {:.1} / out {:.1} per segment",
        d("FFLEET_TASKS"),
        d("FFLEET_EVENTS"),
        d("KV_ffleet-jobs"),
        d("KV_ffleet-segments"),
        d("KV_ffleet-workers"),
        (r.after.varz.0 - r.before.varz.0) as f64 / segs,
        (r.after.varz.1 - r.before.varz.1) as f64 / segs,
    );
    let _ = Duration::ZERO;
}

fn print_ops(name: &str, d: &Counts, segs: f64) {
    let f = |x: u64| x as f64 / segs;
    println!(
        "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        f(d.publishes),
        f(d.acks),
        f(d.progress_acks),
        f(d.fetches),
        f(d.kv_reads),
        f(d.kv_writes),
        f(d.watch_deliveries),
        f(d.core_publishes),
        f(d.api)
    );
}
