//! Layouts across releases. Every KV record and message a released ffleet wrote is kept, byte
//! for byte as that release wrote it, in `tests/fixtures/layouts/<version>/`, and this build must
//! read every one of them: a fleet upgraded one process at a time holds records and messages of
//! the release before, and reads them with the new one.
//!
//! `releases.toml` names each release and the commit it was built from. `scripts/upgrade-check.sh`
//! builds a release and runs `capture_layouts` (ignored here: it needs that release's binary in
//! `FFLEET_LAYOUTS_BIN`) to write its fixtures from a real run: a job that completes (video and
//! audio units) and one whose damaged segment fails on two nodes (failed unit, dead letter,
//! failed job), with every record captured at every state it passes through.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::procs::ProcFleet;
use common::{JobClient, media};
use ffleet_runtime::messages::{
    self, CloudEvent, DeadLetter, Heartbeat, JobEvent, JobRecord, JobRequest, JobState,
    LiveProgress, SegmentRecord, SegmentState, Task,
};
use ffleet_runtime::subjects;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every fixture a release's directory holds: what a fleet stores and sends.
const KINDS: &[&str] = &[
    "job-request",
    "job-record.splitting",
    "job-record.encoding",
    "job-record.merging",
    "job-record.completed",
    "job-record.failed",
    "unit-record.planned",
    "unit-record.queued",
    "unit-record.running",
    "unit-record.done",
    "unit-record.failed",
    "heartbeat",
    "task.plan",
    "task.encode",
    "dead-letter",
    "event.accepted",
    "event.progress",
    "event.segment_done",
    "event.completed",
    "event.failed",
    "live-progress",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/layouts")
}

/// The releases `releases.toml` lists: (version, commit).
fn releases() -> Result<Vec<(String, String)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("releases.toml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let value = |line: &str, key: &str| -> Option<String> {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    };
    let mut out = Vec::new();
    let mut version = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = value(line, "version") {
            version = Some(v);
        } else if let Some(c) = value(line, "commit") {
            let v = version.take().context("a commit before its version")?;
            ensure!(
                c.len() == 40 && c.chars().all(|c| c.is_ascii_hexdigit()),
                "release {v}: commit {c:?} is not a full hash"
            );
            out.push((v, c));
        }
    }
    ensure!(!out.is_empty(), "releases.toml lists no release");
    Ok(out)
}

/// Decodes fixture `kind` with this build, checking it says what its name says.
fn decode(kind: &str, bytes: &[u8]) -> Result<()> {
    let (what, detail) = kind.split_once('.').unwrap_or((kind, ""));
    match what {
        "job-request" => {
            JobRequest::parse(bytes, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        "job-record" => {
            let r: JobRecord = messages::decode("job record", bytes)?;
            ensure!(state_name(&r.state) == detail, "a {:?} job record", r.state);
        }
        "unit-record" => {
            let r: SegmentRecord = messages::decode("unit record", bytes)?;
            ensure!(unit_state_name(&r.state) == detail, "a {:?} unit", r.state);
        }
        "heartbeat" => {
            let hb: Heartbeat = messages::decode("heartbeat", bytes)?;
            ensure!(
                !hb.capabilities.is_empty(),
                "a heartbeat with no capability"
            );
        }
        "task" => {
            let t: Task = messages::decode("task", bytes)?;
            ensure!(
                (detail == "plan") == t.capability.is_none(),
                "a {detail} task routed to {:?}",
                t.capability
            );
        }
        "dead-letter" => {
            let d: DeadLetter = messages::decode("dead letter", bytes)?;
            ensure!(!d.failures.is_empty(), "a dead letter without failures");
        }
        "live-progress" => {
            messages::decode::<LiveProgress>("live progress", bytes)?;
        }
        "event" => {
            let ce: CloudEvent = serde_json::from_slice(bytes)?;
            let ev = JobEvent::from_cloudevent(&ce)?;
            ensure!(event_name(&ev) == detail, "a {} event", event_name(&ev));
        }
        other => bail!("no decoder for fixture kind {other}"),
    }
    Ok(())
}

fn state_name(s: &JobState) -> String {
    format!("{s:?}").to_lowercase()
}

fn unit_state_name(s: &SegmentState) -> String {
    format!("{s:?}").to_lowercase()
}

fn event_name(ev: &JobEvent) -> &'static str {
    match ev {
        JobEvent::Accepted(_) => "accepted",
        JobEvent::Progress(_) => "progress",
        JobEvent::SegmentDone(_) => "segment_done",
        JobEvent::Completed(_) => "completed",
        JobEvent::Failed(_) => "failed",
        JobEvent::Cancelled(_) => "cancelled",
    }
}

#[test]
fn this_build_reads_every_layout_each_release_wrote() -> Result<()> {
    for (version, _) in releases()? {
        let dir = fixtures().join(&version);
        for kind in KINDS {
            let path = dir.join(format!("{kind}.json"));
            let bytes = std::fs::read(&path)
                .with_context(|| format!("release {version} has no {kind} fixture"))?;
            decode(kind, &bytes).with_context(|| format!("release {version}: {kind}"))?;
        }
    }
    Ok(())
}

#[test]
fn every_fixture_directory_is_a_listed_release() -> Result<()> {
    let listed: Vec<String> = releases()?.into_iter().map(|(v, _)| v).collect();
    for entry in std::fs::read_dir(fixtures())? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        ensure!(
            listed.contains(&name),
            "fixtures of {name}, which releases.toml does not list"
        );
    }
    Ok(())
}

/// The first message or record of each kind, as its writer wrote it.
type Captured = Arc<Mutex<BTreeMap<String, bytes::Bytes>>>;

fn keep(captured: &Captured, kind: String, bytes: &bytes::Bytes) {
    captured
        .lock()
        .expect("captured")
        .entry(kind)
        .or_insert_with(|| bytes.clone());
}

/// Whether `subject` is one of `wildcard`'s (a trailing `>` or `*` token).
fn under(subject: &str, wildcard: &str) -> bool {
    subject.starts_with(wildcard.trim_end_matches(['>', '*']))
}

/// Which fixture a message on `subject` is, if any.
fn message_kind(subject: &str, payload: &[u8]) -> Option<String> {
    if subject == subjects::JOBS_SUBMIT {
        return Some("job-request".into());
    }
    if subject == subjects::TASKS_PLAN {
        return Some("task.plan".into());
    }
    if under(subject, &subjects::tasks_encode_wildcard()) {
        return Some("task.encode".into());
    }
    if under(subject, &subjects::dead_wildcard()) {
        return Some("dead-letter".into());
    }
    if under(subject, &subjects::live_wildcard()) {
        return Some("live-progress".into());
    }
    if under(subject, &subjects::events_wildcard()) {
        let ce: CloudEvent = serde_json::from_slice(payload).ok()?;
        let ev = JobEvent::from_cloudevent(&ce).ok()?;
        return Some(format!("event.{}", event_name(&ev)));
    }
    None
}

/// Which fixture a KV entry is.
fn record_kind(bucket: &str, value: &[u8]) -> Option<String> {
    match bucket {
        subjects::BUCKET_JOBS => {
            let r: JobRecord = messages::decode("job record", value).ok()?;
            Some(format!("job-record.{}", state_name(&r.state)))
        }
        subjects::BUCKET_SEGMENTS => {
            let r: SegmentRecord = messages::decode("unit record", value).ok()?;
            Some(format!("unit-record.{}", unit_state_name(&r.state)))
        }
        subjects::BUCKET_WORKERS => Some("heartbeat".into()),
        _ => None,
    }
}

/// Writes the fixtures of the release whose binary is `FFLEET_LAYOUTS_BIN` into
/// `FFLEET_LAYOUTS_OUT` (default: its version's directory here) from a real run of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a release's binary in FFLEET_LAYOUTS_BIN: scripts/upgrade-check.sh runs it"]
async fn capture_layouts() -> Result<()> {
    let bin = std::env::var("FFLEET_LAYOUTS_BIN").context("FFLEET_LAYOUTS_BIN")?;
    let out = match std::env::var("FFLEET_LAYOUTS_OUT") {
        Ok(o) => PathBuf::from(o),
        Err(_) => {
            let v = std::process::Command::new(&bin).arg("--version").output()?;
            let v = String::from_utf8_lossy(&v.stdout);
            fixtures().join(v.split_whitespace().nth(1).context("a version")?)
        }
    };
    let mut fleet = ProcFleet::start(&[]).await?;
    fleet.bin = bin.clone().into();
    let captured: Captured = Arc::default();

    // Every message, as a core subscriber sees it (stream subjects are ordinary subjects).
    let client = fleet.ctx().client.clone();
    for subject in [
        subjects::JOBS_SUBMIT.to_owned(),
        subjects::tasks_wildcard(),
        subjects::events_wildcard(),
        subjects::live_wildcard(),
        subjects::dead_wildcard(),
    ] {
        let mut sub = client.subscribe(subject).await?;
        let captured = captured.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(kind) = message_kind(m.subject.as_str(), &m.payload) {
                    keep(&captured, kind, &m.payload);
                }
            }
        });
    }
    // Every revision of every record.
    let ctx = fleet.ctx().clone();
    for (bucket, store) in [
        (subjects::BUCKET_JOBS, ctx.jobs.store().clone()),
        (subjects::BUCKET_SEGMENTS, ctx.segments.store().clone()),
        (subjects::BUCKET_WORKERS, ctx.workers.store().clone()),
    ] {
        let mut watch = store.watch_all().await?;
        let captured = captured.clone();
        tokio::spawn(async move {
            while let Some(Ok(e)) = watch.next().await {
                if let Some(kind) = record_kind(bucket, &e.value) {
                    keep(&captured, kind, &e.value);
                }
            }
        });
    }
    client.flush().await?;

    for svc in ["splitter", "scheduler", "merger"] {
        fleet.spawn(svc, &[])?;
    }
    // Two nodes, so a damaged segment fails on two and its job ends as damaged input.
    fleet.spawn_encoder("enc-1")?;
    fleet.spawn_encoder("enc-2")?;
    fleet.wait_encoders(2, Duration::from_secs(30)).await?;

    let good = media::ntsc_source(&fleet.media(), "good.mp4", 4, "320x240")?;
    let poison = media::poison_source(&fleet.media(), "poison.mp4")?;
    // Submitted with the release's own client, so the request is its layout too.
    for (job, src) in [("layouts-good", &good), ("layouts-poison", &poison)] {
        let output = fleet.out_path(&format!("{job}.mp4"));
        let status = std::process::Command::new(&bin)
            .args(["-s", &fleet.url_of(), "submit"])
            .arg(src)
            .arg("-o")
            .arg(&output)
            .args(["--job-id", job, "--segment-seconds", "1"])
            .env_remove("NATS_URL")
            .status()?;
        ensure!(status.success(), "{bin} submit {job}: {status}");
    }
    fleet
        .wait_completed("layouts-good", Duration::from_secs(120))
        .await?;
    fleet
        .wait_failed("layouts-poison", Duration::from_secs(120))
        .await?;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<&str> = {
            let c = captured.lock().expect("captured");
            KINDS
                .iter()
                .copied()
                .filter(|k| !c.contains_key(*k))
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "not captured from {bin}: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::create_dir_all(&out)?;
    for (kind, bytes) in captured.lock().expect("captured").iter() {
        if KINDS.contains(&kind.as_str()) {
            std::fs::write(out.join(format!("{kind}.json")), bytes)?;
        }
    }
    println!("layouts of {bin} written to {}", out.display());
    fleet.passed();
    Ok(())
}
