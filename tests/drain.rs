//! Draining an encoder node (`ffleet drain NODE`, `ffleet undrain NODE`), on real nats-server
//! and ffmpeg: the drained node finishes what it runs and takes nothing new (a job submitted
//! after the drain runs wholly on the other node, the running job completes), its heartbeat
//! says so, and after an undrain it takes work again. Unknown and malformed node ids get a
//! clear error and a non-zero exit.

mod common;

use anyhow::{Context, Result, ensure};
use common::cli::{ffleet, output};
use common::{FleetOptions, JobClient, TestFleet, media};
use ffleet_runtime::messages::JobEvent;
use ffleet_runtime::{NodeId, Unit};
use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// `ffleet -s URL ARGS...`, run off the test's runtime threads.
async fn cli(url: &str, args: &[&str]) -> Result<Output> {
    let mut c = ffleet();
    c.args(["-s", url]).args(args);
    tokio::task::spawn_blocking(move || output(&mut c)).await?
}

/// Units of `job` each node reported done.
async fn done_by(fleet: &TestFleet, job: &str) -> Result<Vec<(NodeId, Unit)>> {
    Ok(fleet
        .events(Some(job))
        .await?
        .into_iter()
        .filter_map(|e| match e {
            JobEvent::SegmentDone(d) => Some((d.node, d.unit)),
            _ => None,
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_node_finishes_its_units_and_takes_no_new_ones_until_undrained() -> Result<()> {
    let fleet = TestFleet::spawn_with(FleetOptions {
        encoders: 2,
        slots: Some(1),
        ..Default::default()
    })
    .await?;
    let url = fleet.config.nats.url.clone();
    let nodes = fleet.cluster.as_ref().context("cluster")?.node_ids.clone();
    let (drained, other) = (nodes[0].clone(), nodes[1].clone());
    let src = fleet.media.path().join("src.mp4");
    media::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-t",
        "10",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        src.to_str().context("utf-8 path")?,
    ])?;
    let submit = |id: &'static str| {
        let mut req = fleet.request(id, &src, &format!("{id}.mkv"));
        req.segment_seconds = Some(1.0);
        req
    };

    // Drained while it runs a unit of job a.
    fleet.submit(&submit("a")).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hb = fleet.ctx().workers.get(drained.as_str()).await?;
        if hb.is_some_and(|(h, _)| !h.holding.is_empty()) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "node {drained} never took a unit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done_on_drained = |all: Vec<(NodeId, Unit)>| -> BTreeSet<Unit> {
        all.into_iter()
            .filter(|(n, _)| *n == drained)
            .map(|(_, u)| u)
            .collect()
    };
    let out = cli(&url, &["drain", drained.as_str()]).await?;
    ensure!(out.status.success(), "drain failed");
    let at_drain = done_on_drained(done_by(&fleet, "a").await?);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(said.contains("draining"), "drain said: {said}");
    // What it had in hand when it answered: those may still finish there, nothing else may.
    let running: usize = said
        .split(", ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("running count in the answer")?;
    // `--wait` returns once the node runs nothing.
    let out = cli(&url, &["drain", "--wait", drained.as_str()]).await?;
    ensure!(out.status.success(), "drain --wait failed");
    ensure!(String::from_utf8_lossy(&out.stdout).contains("nothing runs"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hb = fleet.ctx().workers.get(drained.as_str()).await?;
        if hb
            .as_ref()
            .is_some_and(|(h, _)| h.draining && h.holding.is_empty())
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "heartbeat never said drained and idle: {hb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = done_on_drained(done_by(&fleet, "a").await?);
    let after_answer = before.difference(&at_drain).count();
    ensure!(
        after_answer <= running,
        "the drained node finished {after_answer} units after its answer, which had {running} in hand"
    );

    // Job a completes on the other node; job b, submitted now, runs wholly there.
    fleet.submit(&submit("b")).await?;
    fleet.wait_completed("a", JOB_TIMEOUT).await?;
    fleet.wait_completed("b", JOB_TIMEOUT).await?;
    for job in ["a", "b"] {
        for (node, unit) in done_by(&fleet, job).await? {
            ensure!(
                node == other || (job == "a" && before.contains(&unit)),
                "{job}: {unit} ran on the drained node {node}"
            );
        }
    }

    // Undrained, it takes work again.
    let out = cli(&url, &["undrain", drained.as_str()]).await?;
    ensure!(out.status.success(), "undrain failed");
    ensure!(String::from_utf8_lossy(&out.stdout).contains("taking work"));
    fleet.submit(&submit("c")).await?;
    fleet.wait_completed("c", JOB_TIMEOUT).await?;
    let on_drained = done_by(&fleet, "c")
        .await?
        .into_iter()
        .filter(|(n, _)| *n == drained)
        .count();
    ensure!(
        on_drained > 0,
        "the undrained node took none of job c's units"
    );

    // Ids that name no running node, or no node at all: a clear error, exit non-zero.
    let out = cli(&url, &["drain", "no-such-node"]).await?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("no node no-such-node is running"));
    let out = cli(&url, &["undrain", "not a node!"]).await?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("is not a node id"));
    fleet.stop().await;
    Ok(())
}
