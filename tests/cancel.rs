//! Cancelling jobs (`ffleet cancel JOB`, the cancel request on `ffleet.api.cancel`) on real
//! nats-server and ffmpeg, the services as processes: a cancel mid-encode leaves no ffmpeg
//! running 2 s later (and none starts after), no output, no scratch media and exactly one
//! `cancelled` event, and a second cancel changes nothing; a cancel while the merge runs (its
//! ffmpeg frozen) kills the merge and no output ever appears; a cancel while the job is cut
//! kills the split and leaves no cuts; a finished job is
//! answered with its final state and keeps its output; an unknown id and malformed requests get
//! clear errors; and the fleet goes on working.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::JobClient;
use common::cli::{ffleet, output};
use common::media;
use common::procs::ProcFleet;
use ffleet_runtime::messages::{JobEvent, JobState, SegmentState};
use ffleet_runtime::storage::keys;
use ffleet_runtime::{JobId, Unit, subjects};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// How soon after the cancel's answer no ffmpeg of the job may run (issue 25).
const STOPPED_WITHIN: Duration = Duration::from_secs(2);

/// `ffleet -s URL ARGS...`, run off the test's runtime threads.
async fn cli(fleet: &ProcFleet, args: &[&str]) -> Result<Output> {
    let mut c = ffleet();
    c.args(["-s", &fleet.url_of()]).args(args);
    tokio::task::spawn_blocking(move || output(&mut c)).await?
}

/// 8 s of 640x360 with B-frames and audio cut at 1.6 s: five video segments of a second or
/// so of encoding each on these machines.
async fn submit(fleet: &ProcFleet, id: &str) -> Result<()> {
    let src = fleet.media().join("src.mp4");
    if !src.exists() {
        media::ntsc_source(&fleet.media(), "src.mp4", 8, "640x360")?;
    }
    let mut req = fleet.request(id, &src, &format!("{id}.mp4"));
    req.segment_seconds = Some(1.6);
    fleet.submit(&req).await
}

/// ffmpeg and ffprobe processes the encoders run now.
fn media_children(fleet: &ProcFleet) -> Vec<u32> {
    fleet
        .services_named("encoder")
        .into_iter()
        .flat_map(|i| fleet.children(i))
        .filter(is_media)
        .collect()
}

/// What the job keeps in media storage, as its records name it: its source copy, its cuts and
/// its units' results.
async fn scratch_keys(fleet: &ProcFleet, job: &str) -> Vec<String> {
    let mut out: Vec<String> = fleet
        .job(job)
        .await
        .and_then(|r| r.plan?.source_key)
        .into_iter()
        .collect();
    for (_, rec) in fleet.units(job).await {
        out.extend(rec.cut.map(|c| c.source_key));
        out.extend(rec.result_key);
    }
    out
}

/// Files in the out dir that belong to `name`: the output, or a temporary beside it.
fn outputs_of(dir: &Path, name: &str) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n == name || n.starts_with(&format!(".{name}.")) {
            found.push(n);
        }
    }
    Ok(found)
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

/// Cancels `job` with the CLI and checks frozen process `pid` (`what`) is killed within
/// `STOPPED_WITHIN` of the answer.
async fn cancel_killing(fleet: &ProcFleet, job: &str, pid: u32, what: &str) -> Result<()> {
    let out = cli(fleet, &["cancel", job]).await?;
    let answered = Instant::now();
    ensure!(out.status.success(), "cancel failed");
    ensure!(String::from_utf8_lossy(&out.stdout).contains("state:    cancelled"));
    while alive(pid) {
        ensure!(
            answered.elapsed() < STOPPED_WITHIN,
            "{what} still runs {:?} after the cancel",
            answered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Whether process `pid` is an ffmpeg or ffprobe.
fn is_media(pid: &u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| matches!(c.trim(), "ffmpeg" | "ffprobe"))
}

/// With a shared directory, the job's scratch directory is gone (the object store's keys are
/// checked by name where the test knows them).
fn no_scratch_dir(fleet: &ProcFleet, job: &str) -> Result<()> {
    if fleet.ctx().storage.is_shared() {
        let dir = fleet
            .dir
            .path()
            .join("scratch")
            .join(keys::job_prefix(&JobId::new(job)?));
        ensure!(!dir.exists(), "{} is left", dir.display());
    }
    Ok(())
}

/// Polls `check` every 50 ms until it holds or `within` passes.
async fn eventually(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_cancel_mid_encode_stops_every_ffmpeg_and_leaves_nothing_behind() -> Result<()> {
    // No stall kill within the test: only the cancel can stop a frozen encode.
    let mut fleet =
        ProcFleet::standard(2, &[("FFLEET_ENCODER__STALL_TIMEOUT_SECS", "120")]).await?;
    submit(&fleet, "job").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while media_children(&fleet).is_empty() {
        ensure!(Instant::now() < deadline, "no encode started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Frozen, the encodes cannot end on their own before the cancel stops them.
    let frozen = media_children(&fleet);
    for pid in &frozen {
        common::procs::signal_pid(*pid, "STOP")?;
    }
    let stored = scratch_keys(&fleet, "job").await;
    ensure!(!stored.is_empty(), "the job stored no media");
    let running: Vec<Unit> = fleet
        .units("job")
        .await
        .into_iter()
        .filter(|(_, r)| r.state == SegmentState::Running)
        .filter_map(|(k, _)| k.rsplit('.').next().and_then(|u| u.parse().ok()))
        .collect();

    let out = cli(&fleet, &["cancel", "job"]).await?;
    let answered = Instant::now();
    ensure!(out.status.success(), "cancel failed");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(said.contains("state:    cancelled"), "cancel said: {said}");

    // Every ffmpeg of the job is gone within 2 s of the answer.
    let mut left = media_children(&fleet);
    while !left.is_empty() {
        ensure!(
            answered.elapsed() < STOPPED_WITHIN,
            "ffmpeg processes {left:?} still run {:?} after the cancel",
            answered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = media_children(&fleet);
    }
    println!(
        "cancel: the last ffmpeg of the job was gone {:.2} s after the answer ({} frozen)",
        answered.elapsed().as_secs_f64(),
        frozen.len()
    );
    // And none starts again: the job's queued tasks are let go by every node.
    let quiet = Instant::now();
    while quiet.elapsed() < STOPPED_WITHIN {
        let again = media_children(&fleet);
        ensure!(
            again.is_empty(),
            "ffmpeg processes {again:?} started after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The frozen encodes were killed, not finished: none of their units reported a result.
    for ev in fleet.events(Some("job")).await? {
        if let JobEvent::SegmentDone(d) = ev {
            ensure!(
                !running.contains(&d.unit),
                "{} ran to its end after the cancel",
                d.unit
            );
        }
    }

    // One terminal event, `cancelled`, saying what it stopped.
    match fleet.wait_terminal("job", Duration::from_secs(10)).await? {
        JobEvent::Cancelled(c) => ensure!(c.during == JobState::Encoding, "{c:?}"),
        other => bail!("terminal event {other:?}"),
    }
    // No output, no temporary beside it, no scratch media: the units stopped before storing
    // a result, and a result stored after the cleanup goes when its report arrives.
    ensure!(outputs_of(fleet.out_dir(), "job.mp4")?.is_empty());
    let storage = fleet.ctx().storage.clone();
    eventually(
        Duration::from_secs(10),
        "scratch media of the job was not removed",
        async || {
            for k in &stored {
                if storage.exists(k).await? {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )
    .await?;
    no_scratch_dir(&fleet, "job")?;
    fleet.settled().await?;

    // A second cancel answers the same and changes nothing.
    let again = cli(&fleet, &["cancel", "job"]).await?;
    ensure!(again.status.success(), "second cancel failed");
    ensure!(String::from_utf8_lossy(&again.stdout).contains("state:    cancelled"));
    let status = cli(&fleet, &["status", "job"]).await?;
    ensure!(String::from_utf8_lossy(&status.stdout).contains("Cancelled"));
    ensure!(
        fleet.terminal_count("job").await? == 1,
        "more than one terminal event"
    );
    ensure!(
        fleet.job("job").await.context("record")?.state == JobState::Cancelled,
        "the record is not cancelled"
    );

    // Every service still runs, and the next job is encoded as usual.
    submit(&fleet, "after").await?;
    fleet.wait_completed("after", JOB_TIMEOUT).await?;
    for i in 0..fleet.services.len() {
        ensure!(fleet.running(i), "{} exited", fleet.services[i].name);
    }
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn a_cancel_during_the_merge_leaves_no_output_ever_and_a_finished_job_as_it_is() -> Result<()>
{
    let mut fleet = ProcFleet::standard(2, &[]).await?;
    let merger = fleet.services_named("merger")[0];
    // The merge's ffmpeg, frozen as soon as it runs: the cancel lands while the job merges.
    // A merge that slips through before it is seen is tried again with the next job.
    let mut frozen = None;
    for attempt in 0..3 {
        let id = format!("job{attempt}");
        submit(&fleet, &id).await?;
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            if let Some(pid) = fleet.children(merger).into_iter().find(is_media) {
                common::procs::signal_pid(pid, "STOP")?;
                frozen = Some((id.clone(), pid));
                break;
            }
            if fleet.job(&id).await.is_some_and(|r| r.state.is_terminal()) {
                break;
            }
            ensure!(Instant::now() < deadline, "{id} never merged");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if frozen.is_some() {
            break;
        }
    }
    let (job, pid) = frozen.context("no merge was caught running in three jobs")?;
    ensure!(
        fleet
            .job(&job)
            .await
            .is_some_and(|r| r.state == JobState::Merging),
        "the job is not merging"
    );
    // The merge stops: its frozen ffmpeg is killed, not left to finish.
    cancel_killing(&fleet, &job, pid, "the merge's ffmpeg").await?;
    let _ = common::procs::signal_pid(pid, "CONT");
    // The merge runs to its end and puts nothing in place, not even for a moment.
    let name = format!("{job}.mp4");
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        let found = outputs_of(fleet.out_dir(), &name)?;
        ensure!(found.is_empty(), "{found:?} appeared after the cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    match fleet.wait_terminal(&job, JOB_TIMEOUT).await? {
        JobEvent::Cancelled(c) => ensure!(c.during == JobState::Merging, "{c:?}"),
        other => bail!("terminal event {other:?}"),
    }
    fleet.settled().await?;
    ensure!(outputs_of(fleet.out_dir(), &name)?.is_empty());
    ensure!(
        fleet.terminal_count(&job).await? == 1,
        "more than one terminal event"
    );

    // A completed job: cancelling it changes nothing and keeps its output.
    submit(&fleet, "done").await?;
    fleet.wait_completed("done", JOB_TIMEOUT).await?;
    let again = cli(&fleet, &["cancel", "done"]).await?;
    ensure!(again.status.success(), "cancelling a finished job failed");
    ensure!(String::from_utf8_lossy(&again.stderr).contains("already ended"));
    ensure!(String::from_utf8_lossy(&again.stdout).contains("state:    completed"));
    ensure!(
        fleet.out_path("done.mp4").exists(),
        "a cancel removed a completed output"
    );
    ensure!(fleet.terminal_count("done").await? == 1);

    // An unknown id: a clear error and a non-zero exit.
    let unknown = cli(&fleet, &["cancel", "no-such-job"]).await?;
    ensure!(
        !unknown.status.success(),
        "cancelling an unknown job succeeded"
    );
    let said = String::from_utf8_lossy(&unknown.stderr).into_owned();
    ensure!(said.contains("no job \"no-such-job\""), "it said: {said}");
    // Malformed requests from another system: service errors, and the mergers go on.
    for body in [
        &b"{not json"[..],
        br#"{"version":1}"#,
        br#"{"version":9,"job_id":"job"}"#,
    ] {
        let reply = fleet
            .ctx()
            .client
            .request(subjects::API_CANCEL, body.to_vec().into())
            .await?;
        let (code, text) = ffleet::cli::service_error(&reply).context("no service error")?;
        ensure!(code == "400", "{code}: {text}");
    }
    for i in fleet.services_named("merger") {
        ensure!(fleet.running(i), "a merger exited");
    }
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn a_cancel_while_the_job_is_cut_stops_the_split_and_leaves_nothing() -> Result<()> {
    let mut fleet = ProcFleet::standard(1, &[]).await?;
    let splitter = fleet.services_named("splitter")[0];
    // The split's first ffprobe or ffmpeg, frozen as soon as it runs.
    submit(&fleet, "job").await?;
    let deadline = Instant::now() + JOB_TIMEOUT;
    let pid = loop {
        if let Some(pid) = fleet.children(splitter).into_iter().find(is_media) {
            common::procs::signal_pid(pid, "STOP")?;
            break pid;
        }
        ensure!(Instant::now() < deadline, "the split never ran");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    cancel_killing(&fleet, "job", pid, "the split's process").await?;
    match fleet.wait_terminal("job", Duration::from_secs(10)).await? {
        JobEvent::Cancelled(c) => ensure!(c.during == JobState::Splitting, "{c:?}"),
        other => bail!("terminal event {other:?}"),
    }
    fleet.settled().await?;
    ensure!(
        fleet.terminal_count("job").await? == 1,
        "more than one terminal event"
    );
    let rec = fleet.job("job").await.context("record")?;
    ensure!(
        rec.state == JobState::Cancelled && rec.plan.is_none(),
        "{:?}",
        rec.state
    );
    no_scratch_dir(&fleet, "job")?;
    // The splitter goes on: the next job completes.
    submit(&fleet, "after").await?;
    fleet.wait_completed("after", JOB_TIMEOUT).await?;
    fleet.passed();
    Ok(())
}
