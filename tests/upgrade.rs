//! A rolling upgrade from the previous release to this build, with jobs flowing: a fleet of the
//! previous release's processes (`FFLEET_PREVIOUS_BIN`; `scripts/upgrade-check.sh` builds it
//! from `releases.toml`) makes a reference output, then takes jobs while each of its processes
//! is replaced, one at a time, by this build's (the new one started first, the old one stopped
//! with SIGTERM). Every job submitted before, during and after completes exactly once, with an
//! output byte-identical to the old fleet's reference. Ignored in the test suite: building the
//! previous release does not fit CI's time.

mod common;

use anyhow::{Context, Result, ensure};
use common::procs::ProcFleet;
use common::{JobClient, media};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// Fixed segment lengths: the pool's size changes as processes are replaced, and a job cut
/// for another pool would not be byte-identical to the reference.
const ENV: &[(&str, &str)] = &[("FFLEET_SPLITTER__MIN_SEGMENT_SECS", "1.6")];

async fn submit(fleet: &ProcFleet, id: &str, src: &Path) -> Result<()> {
    let mut req = fleet.request(id, src, &format!("{id}.mp4"));
    req.segment_seconds = Some(1.6);
    fleet.submit(&req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's binary in FFLEET_PREVIOUS_BIN: scripts/upgrade-check.sh"]
async fn a_fleet_upgraded_one_process_at_a_time_loses_no_job() -> Result<()> {
    let previous =
        PathBuf::from(std::env::var("FFLEET_PREVIOUS_BIN").context("FFLEET_PREVIOUS_BIN")?);
    let current = PathBuf::from(env!("CARGO_BIN_EXE_ffleet"));
    let mut fleet = ProcFleet::start(ENV).await?;
    fleet.bin = previous.clone();
    // Readers of the fleet's media before its writers (docs/operations.md): this release keeps
    // cuts and encoded units in a scratch bucket an earlier one does not read, and reads the
    // earlier one's where it wrote them.
    let plan: [(&str, &[(&str, &str)]); 6] = [
        ("merger", &[]),
        ("encoder", &[("FFLEET_ENCODER__NODE_ID", "enc-1")]),
        ("encoder", &[("FFLEET_ENCODER__NODE_ID", "enc-2")]),
        ("scheduler", &[]),
        ("scheduler", &[]),
        ("splitter", &[]),
    ];
    let mut old = Vec::new();
    for (svc, env) in plan {
        old.push(fleet.spawn(svc, env)?);
    }
    fleet.wait_encoders(2, Duration::from_secs(30)).await?;

    let src = media::ntsc_source(&fleet.media(), "src.mp4", 8, "640x360")?;
    submit(&fleet, "reference", &src).await?;
    fleet.wait_completed("reference", JOB_TIMEOUT).await?;
    let reference = std::fs::read(fleet.out_path("reference.mp4"))?;

    // Jobs flow throughout: two before the first replacement, then two per replaced process.
    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..2 {
        let id = format!("up-{i:02}");
        submit(&fleet, &id, &src).await?;
        jobs.push(id);
    }
    fleet.bin = current.clone();
    for (n, ((svc, env), idx)) in plan.iter().zip(old).enumerate() {
        // The new process first, so the fleet never lacks the role; for encoders with a node
        // id of their own, as a new machine would come up.
        let node = format!("enc-new-{n}");
        let env: Vec<(&str, &str)> = match *svc {
            "encoder" => vec![("FFLEET_ENCODER__NODE_ID", node.as_str())],
            _ => env.to_vec(),
        };
        fleet.spawn(svc, &env)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let code = fleet.terminate(idx, Duration::from_secs(30));
        ensure!(
            code == Some(0),
            "the previous release's {svc} exited {code:?} on SIGTERM"
        );
        for k in 0..2 {
            let id = format!("up-{n}-{k}");
            submit(&fleet, &id, &src).await?;
            jobs.push(id);
        }
    }
    for id in &jobs {
        fleet.wait_completed(id, JOB_TIMEOUT).await?;
        ensure!(
            fleet.terminal_count(id).await? == 1,
            "{id} has more than one terminal event"
        );
        let out = std::fs::read(fleet.out_path(&format!("{id}.mp4")))?;
        ensure!(
            out == reference,
            "{id}'s output ({} bytes) differs from the previous release's ({} bytes)",
            out.len(),
            reference.len()
        );
    }
    println!(
        "upgrade: {} jobs completed, byte-identical to the previous release's output, in {:.1} s while 6 processes were replaced",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
    fleet.passed();
    Ok(())
}
