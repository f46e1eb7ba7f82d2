//! Retrying jobs (`ffleet retry JOB`, the retry request on `ffleet.api.retry`) on real
//! nats-server and ffmpeg, the services as processes. A job fails because one of its segments
//! cannot be encoded (the encoders' ffmpeg refuses it while a flag file exists); its retry
//! runs as a new job linked to it, encodes only the units the failed run had not finished
//! (counted from every ffmpeg run the encoders made), and completes with every frame; the old
//! run's kept results go once the retry completes. A retry asked twice answers the same job; a
//! completed or unknown job is refused; a submit that names `retry_of` itself fails.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::JobClient;
use common::cli::{ffleet, output};
use common::media;
use common::procs::ProcFleet;
use ffleet_runtime::Unit;
use ffleet_runtime::messages::{JobEvent, JobState, SegmentState};
use ffleet_runtime::reason::Reason;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// The segment the encoders' ffmpeg refuses while the flag exists.
const REFUSED: &str = "v00002.nut";

async fn cli(fleet: &ProcFleet, args: &[&str]) -> Result<Output> {
    let mut c = ffleet();
    c.args(["-s", &fleet.url_of()]).args(args);
    tokio::task::spawn_blocking(move || output(&mut c)).await?
}

/// An ffmpeg that logs every run's arguments to `log`, and fails the encode of `REFUSED`
/// (after a moment, so the job's other units finish first) while `flag` exists.
fn wrapper(dir: &Path, log: &Path, flag: &Path) -> Result<PathBuf> {
    let real = which("ffmpeg")?;
    let path = dir.join("ffmpeg-logged");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n\
             echo \"$*\" >> '{log}'\n\
             case \"$*\" in *{REFUSED}*) if [ -e '{flag}' ]; then sleep 1; \
             echo 'refused by the test' >&2; exit 1; fi;; esac\n\
             exec '{real}' \"$@\"\n",
            log = log.display(),
            flag = flag.display(),
            real = real.display(),
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn which(tool: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| format!("no {tool} on PATH"))
}

/// The units encoded by the runs logged from line `from` on: video units by their cut's name,
/// the tracks unit by its result's.
fn encoded_since(log: &Path, from: usize) -> Result<Vec<Unit>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut units = Vec::new();
    for line in text.lines().skip(from) {
        for word in line.split_whitespace() {
            let name = word.rsplit('/').next().unwrap_or(word);
            let name = name.rsplit_once('-').map_or(name, |(_, n)| n);
            if let Some(i) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".nut"))
                && let Ok(i) = i.parse::<u32>()
            {
                units.push(Unit::Video(i));
            }
            if name.starts_with("audio.a") {
                units.push(Unit::Audio);
            }
        }
    }
    Ok(units)
}

fn lines(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

#[tokio::test]
async fn a_failed_job_runs_again_reusing_what_it_encoded() -> Result<()> {
    let mut fleet = ProcFleet::start(&[]).await?;
    let tools = fleet.dir.path().join("tools");
    std::fs::create_dir_all(&tools)?;
    let (log, flag) = (tools.join("ffmpeg.log"), tools.join("refuse"));
    std::fs::write(&flag, b"")?;
    let ffmpeg = wrapper(&tools, &log, &flag)?;
    let ffmpeg = ffmpeg.to_string_lossy().into_owned();
    // Segments on keyframes only: the test tells an encode's unit by its cut's name, which
    // segments between keyframes share.
    fleet.spawn("splitter", &[("FFLEET_SPLITTER__CUT_ANYWHERE", "false")])?;
    for svc in ["scheduler", "merger"] {
        fleet.spawn(svc, &[])?;
    }
    for node in ["enc-1", "enc-2"] {
        fleet.spawn(
            "encoder",
            &[
                ("FFLEET_ENCODER__NODE_ID", node),
                ("FFLEET_FFMPEG__FFMPEG", &ffmpeg),
            ],
        )?;
    }
    fleet.wait_encoders(2, Duration::from_secs(30)).await?;

    let src = media::ntsc_source(&fleet.media(), "src.mp4", 5, "320x240")?;
    let mut req = fleet.request("job", &src, "job.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    match fleet.wait_terminal("job", JOB_TIMEOUT).await? {
        JobEvent::Failed(f) => println!("first run failed: {} {}", f.reason, f.message),
        other => bail!("the first run ended {other:?}"),
    }
    // What the failed run finished: reused by the retry, never encoded again.
    let units = fleet.units("job").await;
    let done: BTreeSet<Unit> = units
        .iter()
        .filter(|(_, r)| r.state == SegmentState::Done)
        .filter_map(|(k, _)| k.rsplit('.').next().and_then(|u| u.parse().ok()))
        .collect();
    let all: BTreeSet<Unit> = units
        .iter()
        .filter_map(|(k, _)| k.rsplit('.').next().and_then(|u| u.parse().ok()))
        .collect();
    ensure!(
        !done.contains(&Unit::Video(2)),
        "the refused segment was done"
    );
    ensure!(
        !done.is_empty(),
        "the failed run finished nothing: {units:?}"
    );
    let kept: Vec<String> = units
        .iter()
        .filter(|(_, r)| r.state == SegmentState::Done)
        .filter_map(|(_, r)| r.result_key.clone())
        .collect();
    let storage = fleet.ctx().storage.clone();
    for k in &kept {
        ensure!(storage.exists(k).await?, "{k} was not kept for a retry");
    }

    // The retry encodes only what is missing and completes with every frame.
    std::fs::remove_file(&flag)?;
    let from = lines(&log);
    let out = cli(&fleet, &["retry", "job", "--wait"]).await?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "retry failed: {said}");
    ensure!(said.lines().next() == Some("job-r1"), "retry said: {said}");
    let encoded = encoded_since(&log, from)?;
    // The retry's own records say which units it reused (a unit of the failed run that
    // finished after the failure was seen may be among them): every other unit, and only
    // those, was encoded, once each.
    let reused: BTreeSet<Unit> = fleet
        .units("job-r1")
        .await
        .into_iter()
        .filter(|(_, r)| r.reused_from.is_some())
        .filter_map(|(k, _)| k.rsplit('.').next().and_then(|u| u.parse().ok()))
        .collect();
    let missing: BTreeSet<Unit> = all.difference(&reused).copied().collect();
    println!(
        "retry: {} of {} units reused, encoded {encoded:?}",
        reused.len(),
        all.len()
    );
    ensure!(
        reused.is_superset(&done),
        "reused {reused:?}, done {done:?}"
    );
    ensure!(
        encoded.len() == missing.len()
            && encoded.iter().copied().collect::<BTreeSet<_>>() == missing,
        "the retry encoded {encoded:?}; it reused {reused:?} of {all:?}"
    );
    let c = match fleet.wait_terminal("job-r1", JOB_TIMEOUT).await? {
        JobEvent::Completed(c) => c,
        other => bail!("the retry ended {other:?}"),
    };
    ensure!(c.frames == 150, "{c:?}");
    ensure!(fleet.out_dir().join("job.mp4").is_file(), "no output");
    let rec = fleet.job("job-r1").await.context("the retry's record")?;
    ensure!(rec.request.retry_of.as_ref().map(|j| j.as_str()) == Some("job"));
    // The old run's kept results go with the retry's completion (just after its event).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for k in &kept {
        while storage.exists(k).await? {
            ensure!(
                std::time::Instant::now() < deadline,
                "{k} is left after the retry"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Asked again: the same retry, nothing new.
    let again = cli(&fleet, &["retry", "job"]).await?;
    ensure!(again.status.success());
    ensure!(String::from_utf8_lossy(&again.stdout).trim() == "job-r1");
    let status = cli(&fleet, &["status", "job"]).await?;
    ensure!(String::from_utf8_lossy(&status.stdout).contains("job-r1"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(fleet.job("job-r2").await.is_none(), "a second retry ran");
    ensure!(fleet.terminal_count("job-r1").await? == 1);
    // Nor was the retry's request sent again (it would be refused as a duplicate).
    let duplicates = fleet
        .events(None)
        .await?
        .into_iter()
        .filter(|e| matches!(e, JobEvent::Failed(f) if f.reason == Reason::DuplicateJob))
        .count();
    ensure!(duplicates == 0, "the retry's request went out again");

    // A completed job and an unknown one are refused, with a reason.
    let completed = cli(&fleet, &["retry", "job-r1"]).await?;
    let why = String::from_utf8_lossy(&completed.stderr).into_owned();
    ensure!(!completed.status.success(), "a completed job was retried");
    ensure!(why.contains("only a failed or cancelled job"), "{why}");
    let unknown = cli(&fleet, &["retry", "nope"]).await?;
    ensure!(!unknown.status.success(), "an unknown job was retried");

    // A submit may not name retry_of itself: the job it names was retried as another.
    let mut forged = fleet.request("forged", &src, "forged.mp4");
    forged.retry_of = Some(ffleet_runtime::JobId::new("job")?);
    fleet.submit(&forged).await?;
    match fleet.wait_terminal("forged", JOB_TIMEOUT).await? {
        JobEvent::Failed(f) => ensure!(f.reason == Reason::InvalidRequest, "{f:?}"),
        other => bail!("the forged retry ended {other:?}"),
    }
    ensure!(fleet.job("job").await.map(|r| r.state) == Some(JobState::Failed));
    // A job that failed before it was cut has nothing to reuse: its retry runs in full.
    let out = cli(&fleet, &["retry", "forged", "--wait"]).await?;
    ensure!(
        out.status.success(),
        "retry of the forged job: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(String::from_utf8_lossy(&out.stdout).lines().next() == Some("forged-r1"));
    ensure!(fleet.out_dir().join("forged.mp4").is_file(), "no output");
    fleet.settled().await?;
    fleet.passed();
    Ok(())
}
