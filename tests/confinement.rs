//! Files only inside the roots, whatever a message or a race says: a forged task naming a file
//! outside the input roots, a job record rewritten to an output outside the output roots, a
//! symlink planted where the old predictable temporary name was, and the output directory
//! swapped for a symlink again and again while jobs run.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::procs::ProcFleet;
use common::{JobClient, TestFleet, media};
use ffleet_runtime::messages::{JobEvent, SegmentRecord, SegmentState, Task, TaskInput};
use ffleet_runtime::nats::publish;
use ffleet_runtime::{Capability, JobId, Unit, subjects};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_task_naming_a_file_outside_the_roots_is_refused() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::tiny_source(fleet.media.path(), "in.mp4")?;
    let req = fleet.request("real", &src, "real.mp4");
    fleet.submit(&req).await?;
    fleet.wait_completed("real", JOB_TIMEOUT).await?;

    // Someone with publish rights on the task queue and write rights on the unit records.
    let outside = tempfile::tempdir()?;
    let secret = media::tiny_source(outside.path(), "secret.mp4")?;
    let (rec, _) = fleet.ctx().jobs.get("real").await?.context("no record")?;
    let mut task = Task::for_unit(&rec, Unit::Audio, None, 1).context("no audio task")?;
    task.job_id = JobId::new("forged")?;
    task.input = TaskInput::Source {
        uri: format!("file://{}", secret.display()),
    };
    task.capability = Some(Capability::cpu());
    let key = subjects::segment_key(&task.job_id, Unit::Audio);
    fleet
        .ctx()
        .segments
        .create(&key, &SegmentRecord::planned(None))
        .await?;
    publish::task(
        &fleet.ctx().js,
        fleet.ctx().retry,
        subjects::tasks_encode(&Capability::cpu()),
        &task,
        "forged",
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        if let Some((r, _)) = fleet.ctx().segments.get(&key).await?
            && let Some(f) = r.failures.first()
        {
            break f.message.clone();
        }
        ensure!(Instant::now() < deadline, "the forged task was not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        refusal.contains("refused") && refusal.contains("outside"),
        "unclear refusal: {refusal}"
    );
    // No result was made from it.
    let (r, _) = fleet
        .ctx()
        .segments
        .get(&key)
        .await?
        .context("record gone")?;
    ensure!(r.state != SegmentState::Done, "the forged unit was encoded");
    ensure!(
        !fleet.ctx().storage.exists(&task.result_key()).await?,
        "a result of the forged task was stored"
    );
    let mut fleet = fleet;
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_record_rewritten_to_an_outside_output_is_refused_by_the_merger() -> Result<()> {
    let mut fleet = ProcFleet::standard(1, &[]).await?;
    let merger = *fleet
        .services_named("merger")
        .first()
        .context("no merger")?;
    fleet.terminate(merger, Duration::from_secs(10));
    let src = media::tiny_source(&fleet.media(), "in.mp4")?;
    let req = fleet.request("rewritten", &src, "rewritten.mp4");
    fleet.submit(&req).await?;
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let units = fleet.units("rewritten").await;
        if !units.is_empty() && units.iter().all(|(_, r)| r.state == SegmentState::Done) {
            break;
        }
        ensure!(Instant::now() < deadline, "units did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Someone with write rights on the jobs bucket points the output elsewhere.
    let outside = tempfile::tempdir()?;
    let stolen = outside.path().join("stolen.mp4");
    let uri = format!("file://{}", stolen.display());
    fleet
        .ctx()
        .jobs
        .modify("rewritten", |r| {
            let mut r = r.cloned().expect("record");
            r.request.output = uri.clone();
            if let Some(p) = r.plan.as_mut() {
                p.output_path = stolen.display().to_string();
            }
            ffleet_runtime::nats::kv::Change::Write(r, ())
        })
        .await?;
    fleet.spawn("merger", &[])?;
    let failed = fleet.wait_failed("rewritten", JOB_TIMEOUT).await?;
    ensure!(
        failed.reason.code() == "output_not_allowed" && failed.message.contains("outside"),
        "{}: {}",
        failed.reason,
        failed.message
    );
    ensure!(!stolen.exists(), "the merger wrote outside the roots");
    ensure!(
        std::fs::read_dir(outside.path())?.count() == 0,
        "something was written outside the roots"
    );
    fleet.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_and_a_swapped_output_directory_write_nothing_outside() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::tiny_source(fleet.media.path(), "in.mp4")?;
    let outside = tempfile::tempdir()?;
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"precious")?;

    // The old predictable temporary name, and the final name itself, as links to the victim.
    let out = fleet.out.path();
    std::os::unix::fs::symlink(&victim, out.join(".planted.mp4.ffleet-planted.tmp"))?;
    std::os::unix::fs::symlink(&victim, out.join("linked.mp4"))?;
    for (id, name) in [("planted", "planted.mp4"), ("linked", "linked.mp4")] {
        let req = fleet.request(id, &src, name);
        fleet.submit(&req).await?;
        fleet.wait_completed(id, JOB_TIMEOUT).await?;
        let meta = std::fs::symlink_metadata(out.join(name))?;
        ensure!(meta.is_file(), "{name} is not a regular file");
    }
    ensure!(
        std::fs::read(&victim)? == b"precious",
        "the victim was overwritten"
    );

    // The output directory swapped for a link out of the roots, over and over, while jobs run.
    let sub = out.join("sub");
    let real = out.join("sub.real");
    std::fs::create_dir(&sub)?;
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, sub, real, target) = (
            stop.clone(),
            sub.clone(),
            real.clone(),
            outside.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            let mut swaps = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                if std::fs::rename(&sub, &real).is_ok() {
                    let _ = std::os::unix::fs::symlink(&target, &sub);
                    std::thread::sleep(Duration::from_micros(200));
                    let _ = std::fs::remove_file(&sub);
                    let _ = std::fs::rename(&real, &sub);
                    swaps += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            swaps
        })
    };
    let mut outcomes = Vec::new();
    for i in 0..3 {
        let id = format!("swap-{i}");
        let mut req = fleet.request(&id, &src, "x.mp4");
        req.output = format!("file://{}", sub.join(format!("{id}.mp4")).display());
        fleet.submit(&req).await?;
        let ev = fleet.wait_terminal(&id, JOB_TIMEOUT).await?;
        outcomes.push(match ev {
            JobEvent::Completed(_) => "completed".to_owned(),
            JobEvent::Failed(f) => format!("failed ({})", f.reason),
            other => bail!("unexpected {other:?}"),
        });
        ensure!(
            fleet.terminal_count(&id).await? == 1,
            "{id}: terminal events"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    let written: Vec<_> = std::fs::read_dir(outside.path())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "victim.txt")
        .collect();
    ensure!(written.is_empty(), "written outside the roots: {written:?}");
    ensure!(
        std::fs::read(&victim)? == b"precious",
        "the victim was overwritten"
    );
    println!("{swaps} directory swaps during 3 jobs: {outcomes:?}");
    let mut fleet = fleet;
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}
