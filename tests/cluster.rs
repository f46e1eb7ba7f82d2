//! A three-node JetStream cluster on loopback (replicas 3), the services as separate processes
//! given all three URLs. The services start together with the servers and serve the first job;
//! then nodes are SIGKILLed mid-job (the meta leader, the task stream's leader, the jobs
//! bucket's leader, a follower), restarted on their stores, restarted one by one while jobs
//! flow, and two of three are killed at once. Every job completes exactly once with an output
//! byte-identical to the fault-free run. Recovery times are printed (`--no-capture`).

mod common;

use anyhow::{Context, Result, ensure};
use common::nats_cluster::{NatsCluster, stream_leader};
use common::procs::{Nats, ProcFleet};
use common::{JobClient, media};
use ffleet_runtime::messages::{JobEvent, SegmentState};
use ffleet_runtime::subjects;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
const SETTLE: Duration = Duration::from_secs(60);

/// Replicas 3; a short JetStream request timeout so that a request lost with its server is
/// retried within seconds.
const ENV: &[(&str, &str)] = &[
    ("FFLEET_STREAMS__REPLICAS", "3"),
    ("FFLEET_NATS__REQUEST_TIMEOUT_SECS", "3"),
];

/// Three planned nodes, the services (splitter, scheduler, merger, two encoders) started first,
/// then the servers, then the test's client: nobody waits for anybody before starting.
async fn fleet() -> Result<ProcFleet> {
    let cluster = NatsCluster::plan(3)?;
    let mut f = ProcFleet::prepare(Nats::Cluster(cluster), ENV)?;
    // FFLEET_TEST_SERVICE_LOG sets the services' log level (e.g. `debug,async_nats=info`).
    let level = std::env::var("FFLEET_TEST_SERVICE_LOG").unwrap_or_else(|_| "info".into());
    for svc in ["splitter", "scheduler", "merger"] {
        f.spawn(svc, &[("FFLEET_LOG__LEVEL", level.as_str())])?;
    }
    for n in ["enc-1", "enc-2"] {
        f.spawn_encoder(n)?;
    }
    f.cluster().start_all()?;
    f.connect_client().await?;
    Ok(f)
}

async fn submit(f: &ProcFleet, id: &str, src: &Path, segment: f64) -> Result<()> {
    let mut req = f.request(id, src, &format!("{id}.mp4"));
    req.segment_seconds = Some(segment);
    f.submit(&req).await
}

/// Completed with exactly one terminal event, output equal to `reference`.
async fn check(f: &ProcFleet, job: &str, reference: &[u8]) -> Result<()> {
    if let Err(e) = f.wait_completed(job, JOB_TIMEOUT).await {
        common::nats_cluster::dump(&f.ctx().js).await;
        eprintln!("job {job}: {:?}", f.job(job).await);
        for (key, unit) in f.units(job).await {
            eprintln!("  unit {key}: {unit:?}");
        }
        return Err(e);
    }
    f.once_and_identical(job, reference).await
}

fn all_running(f: &mut ProcFleet) -> Result<()> {
    for i in 0..f.services.len() {
        ensure!(f.running(i), "{} exited", f.services[i].name);
    }
    Ok(())
}

/// Units of `job` already done.
async fn done_units(f: &ProcFleet, job: &str) -> HashSet<String> {
    f.units(job)
        .await
        .into_iter()
        .filter(|(_, r)| r.state == SegmentState::Done)
        .map(|(k, _)| k)
        .collect()
}

/// Which node to kill, by role.
#[derive(Debug, Clone, Copy)]
enum Victim {
    MetaLeader,
    TasksLeader,
    JobsBucketLeader,
    Follower,
}

async fn pick(f: &mut ProcFleet, v: Victim) -> Result<(String, String)> {
    let js = f.ctx().js.clone();
    let meta = f.cluster().meta_leader().context("no meta leader")?;
    let tasks = stream_leader(&js, subjects::STREAM_TASKS, SETTLE).await?;
    let jobs_stream = subjects::kv_stream(subjects::BUCKET_JOBS);
    let jobs = stream_leader(&js, &jobs_stream, SETTLE).await?;
    let roles = |n: &str| {
        let mut r = Vec::new();
        for (who, role) in [(&meta, "meta"), (&tasks, "tasks"), (&jobs, "jobs-bucket")] {
            if who == n {
                r.push(role);
            }
        }
        if r.is_empty() {
            "follower of all".to_owned()
        } else {
            format!("leader of {}", r.join("+"))
        }
    };
    let name = match v {
        Victim::MetaLeader => meta.clone(),
        Victim::TasksLeader => tasks.clone(),
        Victim::JobsBucketLeader => jobs.clone(),
        Victim::Follower => {
            let nodes: Vec<String> = f.cluster().nodes.iter().map(|n| n.name.clone()).collect();
            // Leading none of the three if there is such a node, else neither meta nor tasks.
            nodes
                .iter()
                .find(|n| **n != meta && **n != tasks && **n != jobs)
                .or_else(|| nodes.iter().find(|n| **n != meta && **n != tasks))
                .context("no follower")?
                .clone()
        }
    };
    let what = roles(&name);
    Ok((name, what))
}

#[tokio::test]
async fn starts_with_the_cluster_and_survives_losing_any_node_mid_job() -> Result<()> {
    let started = Instant::now();
    let mut f = fleet().await?;
    let src = media::ntsc_source(&f.media(), "src.mp4", 6, "320x180")?;
    submit(&f, "reference", &src, 1.6).await?;
    f.wait_completed("reference", JOB_TIMEOUT).await?;
    println!(
        "cluster: services started with the servers; first job completed {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    let reference = std::fs::read(f.out_path("reference.mp4"))?;

    for (i, v) in [
        Victim::MetaLeader,
        Victim::TasksLeader,
        Victim::JobsBucketLeader,
        Victim::Follower,
    ]
    .into_iter()
    .enumerate()
    {
        let job = format!("job-{i}");
        submit(&f, &job, &src, 1.6).await?;
        f.wait_unit(&job, Duration::from_secs(60), |_, r| {
            (r.state == SegmentState::Running).then_some(())
        })
        .await?;
        let (name, what) = pick(&mut f, v).await?;
        let before = done_units(&f, &job).await;
        let idx = f.cluster().index(&name)?;
        f.cluster().kill(idx);
        let killed = Instant::now();
        f.wait_unit(&job, JOB_TIMEOUT, |k, r| {
            (r.state == SegmentState::Done && !before.contains(k)).then_some(())
        })
        .await?;
        let next = killed.elapsed();
        check(&f, &job, &reference).await?;
        println!(
            "cluster: {v:?} {name} ({what}) SIGKILLed mid-job -> next segment done after {:.2} s, job completed after {:.2} s",
            next.as_secs_f64(),
            killed.elapsed().as_secs_f64()
        );
        // Back on its store; it must catch up before the next node is lost.
        f.cluster().start(idx)?;
        let back = Instant::now();
        let js = f.ctx().js.clone();
        f.cluster().wait_settled(&js, SETTLE).await?;
        println!(
            "cluster: {name} restarted on its store, every stream current on it after {:.2} s",
            back.elapsed().as_secs_f64()
        );
    }
    all_running(&mut f)?;
    f.passed();
    Ok(())
}

/// Every job completed exactly once, each output equal to `reference`.
async fn all_completed(f: &ProcFleet, ids: &[String], reference: &[u8]) -> Result<()> {
    for id in ids {
        check(f, id, reference).await?;
    }
    Ok(())
}

fn tiny(f: &ProcFleet) -> Result<PathBuf> {
    media::tiny_source(&f.media(), "tiny.mp4")
}

#[tokio::test]
async fn rolling_restart_and_quorum_loss_lose_no_job() -> Result<()> {
    let mut f = fleet().await?;
    let src = tiny(&f)?;
    submit(&f, "reference", &src, 1.0).await?;
    f.wait_completed("reference", JOB_TIMEOUT).await?;
    let reference = std::fs::read(f.out_path("reference.mp4"))?;
    let js = f.ctx().js.clone();
    f.cluster().wait_settled(&js, SETTLE).await?;

    // Rolling restart: each server stopped (SIGTERM) and started again in turn, each caught up
    // before the next goes, while ten jobs are submitted across it.
    let ids: Vec<String> = (0..10).map(|i| format!("roll-{i}")).collect();
    let rolling = Instant::now();
    let mut next = ids.iter();
    for (node, batch) in [(0, 3), (1, 3), (2, 4)] {
        for id in next.by_ref().take(batch) {
            submit(&f, id, &src, 1.0).await?;
        }
        f.cluster().stop(node);
        f.cluster().start(node)?;
        f.cluster().wait_settled(&js, SETTLE).await?;
    }
    all_completed(&f, &ids, &reference).await?;
    println!(
        "cluster: rolling restart of 3 servers with 10 jobs -> 0 failed, all completed once, {:.1} s",
        rolling.elapsed().as_secs_f64()
    );

    // Quorum lost: two of three killed while jobs run. Nothing ends while it is gone.
    let ids: Vec<String> = (0..3).map(|i| format!("quorum-{i}")).collect();
    for id in &ids {
        submit(&f, id, &src, 1.0).await?;
    }
    f.wait_unit(&ids[0], Duration::from_secs(60), |_, r| {
        (r.state == SegmentState::Running).then_some(())
    })
    .await?;
    let ended_before = ended(&f, &ids).await;
    f.cluster().kill(0);
    f.cluster().kill(1);
    tokio::time::sleep(Duration::from_secs(5)).await;
    f.cluster().start(1)?;
    let back = Instant::now();
    all_completed(&f, &ids, &reference).await?;
    println!(
        "cluster: 2 of 3 servers killed for 5 s ({} of 3 jobs had ended before) -> all completed once {:.2} s after the second server was back",
        ended_before,
        back.elapsed().as_secs_f64()
    );
    f.cluster().start(0)?;
    f.cluster().wait_settled(&js, SETTLE).await?;
    all_running(&mut f)?;
    f.passed();
    Ok(())
}

/// How many of `ids` have a terminal event.
async fn ended(f: &ProcFleet, ids: &[String]) -> usize {
    let mut n = 0;
    for id in ids {
        let evs = f.events(Some(id)).await.unwrap_or_default();
        if evs.iter().any(JobEvent::is_terminal) {
            n += 1;
        }
    }
    n
}

/// Object transfers through a node loss: an upload and then a download of the media bucket,
/// each with the leader of the bucket's stream SIGKILLed while it moves, come out whole (the
/// bytes read back equal the file, checked against the digest the upload recorded).
#[tokio::test]
async fn transfers_cut_by_a_node_loss_are_sent_again_and_arrive_whole() -> Result<()> {
    let mut env = ENV.to_vec();
    env.push(("FFLEET_STORAGE__BACKEND", "object-store"));
    let mut f = ProcFleet::prepare(Nats::Cluster(NatsCluster::plan(3)?), &env)?;
    f.cluster().start_all()?;
    f.connect_client().await?;
    let js = f.ctx().js.clone();
    f.cluster().wait_settled(&js, SETTLE).await?;
    // Large enough that the transfer is still moving when its leader dies.
    let file = f.dir.path().join("big.bin");
    let mut bytes = vec![0u8; 96 << 20];
    for (i, chunk) in bytes.chunks_mut(4096).enumerate() {
        chunk.fill((i * 7919 % 251) as u8);
    }
    std::fs::write(&file, &bytes)?;
    let media = subjects::object_stream(&f.ctx().config.storage.bucket);

    let storage = f.ctx().storage.clone();
    let (path, key) = (file.clone(), "jobs/transfer/in/big.bin".to_owned());
    let upload = tokio::spawn(async move { storage.put_file(&path, &key).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let leader = stream_leader(&js, &media, SETTLE).await?;
    let i = f.cluster().index(&leader)?;
    ensure!(!upload.is_finished(), "the upload ended before the kill");
    let killed = Instant::now();
    f.cluster().kill(i);
    let stored = upload.await??;
    println!(
        "cluster: leader {leader} of {media} SIGKILLed mid-upload -> 96 MiB stored whole {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    f.cluster().start(i)?;
    f.cluster().wait_settled(&js, SETTLE).await?;

    let storage = f.ctx().storage.clone();
    let dest = f.dir.path().join("back.bin");
    let (to, digest) = (dest.clone(), stored.digest.clone());
    let download = tokio::spawn(async move {
        storage
            .fetch_to("jobs/transfer/in/big.bin", digest.as_deref(), &to)
            .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let leader = stream_leader(&js, &media, SETTLE).await?;
    let i = f.cluster().index(&leader)?;
    ensure!(
        !download.is_finished(),
        "the download ended before the kill"
    );
    let killed = Instant::now();
    f.cluster().kill(i);
    download.await??;
    ensure!(
        std::fs::read(&dest)? == bytes,
        "the bytes read back differ from the file"
    );
    println!(
        "cluster: leader {leader} of {media} SIGKILLed mid-download -> read back whole {:.2} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    f.cluster().start(i)?;
    f.passed();
    Ok(())
}
