//! Cancelling jobs (`ffleet cancel JOB`, the cancel request on `ffleet.api.cancel`) on real
//! nats-server and ffmpeg, the services as processes: a cancel mid-encode leaves no ffmpeg
//! running 2 s later, no output, no scratch media and exactly one `cancelled` event, and a
//! second cancel changes nothing; a cancel racing the merge ends the job once, either with its
//! complete output or with none; a finished job is answered with its final state, an unknown
//! id and a malformed request with a clear error; and the fleet goes on working.

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
    let is_media = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| matches!(c.trim(), "ffmpeg" | "ffprobe"))
    };
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
    if storage.is_shared() {
        let dir = fleet
            .dir
            .path()
            .join("scratch")
            .join(keys::job_prefix(&JobId::new("job")?));
        ensure!(!dir.exists(), "{} is left", dir.display());
    }
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
async fn a_cancel_racing_the_merge_ends_the_job_once_with_all_of_its_output_or_none() -> Result<()>
{
    let mut fleet = ProcFleet::standard(2, &[]).await?;
    submit(&fleet, "job").await?;
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let state = fleet.job("job").await.map(|r| r.state);
        if state.is_some_and(|s| s == JobState::Merging || s.is_terminal()) {
            break;
        }
        ensure!(Instant::now() < deadline, "the job never merged");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let out = cli(&fleet, &["cancel", "job"]).await?;
    ensure!(out.status.success(), "cancel failed");
    let ended = fleet.wait_terminal("job", JOB_TIMEOUT).await?;
    fleet.settled().await?;
    match &ended {
        JobEvent::Completed(c) => {
            // The merge won: the whole, verified output, and the cancel said it changed nothing.
            let meta = std::fs::metadata(fleet.out_path("job.mp4"))?;
            ensure!(
                meta.len() == c.bytes,
                "output of {} bytes, the event says {}",
                meta.len(),
                c.bytes
            );
            ensure!(String::from_utf8_lossy(&out.stderr).contains("already ended"));
            println!("race: the merge completed first");
        }
        JobEvent::Cancelled(c) => {
            // The cancel won: the merge under way leaves nothing, not even a temporary.
            let dir = fleet.out_dir().to_path_buf();
            eventually(
                Duration::from_secs(30),
                "an output of the cancelled job is left",
                async || Ok(outputs_of(&dir, "job.mp4")?.is_empty()),
            )
            .await?;
            println!("race: the cancel came first, while {}", c.during.name());
        }
        other => bail!("terminal event {other:?}"),
    }
    ensure!(
        fleet.terminal_count("job").await? == 1,
        "more than one terminal event"
    );

    // A finished job is answered with its final state, unchanged.
    let again = cli(&fleet, &["cancel", "job"]).await?;
    ensure!(again.status.success(), "cancelling a finished job failed");
    ensure!(fleet.terminal_count("job").await? == 1);
    if let JobEvent::Completed(_) = ended {
        ensure!(
            fleet.out_path("job.mp4").exists(),
            "a cancel removed a completed output"
        );
        ensure!(String::from_utf8_lossy(&again.stdout).contains("state:    completed"));
    }

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
