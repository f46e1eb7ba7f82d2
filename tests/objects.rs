//! Media through the JetStream Object Store: services that share no filesystem (each encoder has
//! only a private work dir and a NATS URL), uploads and downloads by `ffleet submit`, digests that
//! keep a wrong object out of an output, kills in the middle of transfers, and a full bucket.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::procs::ProcFleet;
use common::{FleetOptions, JobClient, TestFleet, media, objects, sources};
use ffleet_runtime::JobId;
use ffleet_runtime::config::StorageBackend;
use ffleet_runtime::messages::SegmentState;
use ffleet_runtime::nats::retry::Patience;
use ffleet_runtime::storage::{ObjectStore, Storage, WorkDir, keys};
use ffleet_runtime::subjects;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
const OBJECT_STORE: (&str, &str) = ("FFLEET_STORAGE__BACKEND", "object-store");

fn source(fleet: &ProcFleet, secs: u32) -> Result<PathBuf> {
    media::ntsc_source(&fleet.media(), "src.mp4", secs, "640x360")
}

async fn run_job(fleet: &impl JobClient, id: &str, src: &Path) -> Result<Vec<u8>> {
    let mut req = fleet.request(id, src, &format!("{id}.mp4"));
    req.segment_seconds = Some(1.6);
    fleet.submit(&req).await?;
    fleet.wait_completed(id, JOB_TIMEOUT).await?;
    Ok(std::fs::read(fleet.out_path(&format!("{id}.mp4")))?)
}

/// Objects of job `id` still in the bucket a few seconds after it ended (its media goes right
/// after its terminal event).
async fn job_objects(fleet: &impl JobClient, id: &str) -> Result<Vec<String>> {
    let prefix = format!("jobs/{id}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = objects::names(fleet.ctx())
            .await?
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoders_with_only_a_nats_url_give_the_shared_dir_output() -> Result<()> {
    let mut fleet = ProcFleet::standard(2, &[OBJECT_STORE]).await?;
    let src = source(&fleet, 5)?;
    let over_store = run_job(&fleet, "objects", &src).await?;
    let done = fleet.wait_completed("objects", JOB_TIMEOUT).await?;
    ensure!(
        done.media_bytes > 0,
        "no bytes moved through the store: {done:?}"
    );
    // Every unit ran on an encoder that could see nothing but its work dir.
    let owners: Vec<_> = fleet
        .units("objects")
        .await
        .into_iter()
        .filter_map(|(_, r)| r.owner.map(|o| o.to_string()))
        .collect();
    ensure!(!owners.is_empty(), "no unit records");
    for node in ["enc-1", "enc-2"] {
        let base = fleet.work_dir("encoder", &[("FFLEET_ENCODER__NODE_ID", node)]);
        let left = objects::leftovers(&base);
        ensure!(left.is_empty(), "{node} left {left:?} in its work dir");
    }
    let left = job_objects(&fleet, "objects").await?;
    ensure!(left.is_empty(), "job media left in the bucket: {left:?}");

    // The same job over a shared directory, in a fleet of its own.
    let shared = TestFleet::spawn_with(FleetOptions {
        tweak: Box::new(|c| c.storage.backend = StorageBackend::SharedDir),
        ..Default::default()
    })
    .await?;
    let copy = shared.media.path().join("src.mp4");
    std::fs::copy(&src, &copy)?;
    let over_dir = run_job(&shared, "shared", &copy).await?;
    ensure!(
        over_store == over_dir,
        "object-store output ({} bytes) differs from the shared-dir output ({} bytes)",
        over_store.len(),
        over_dir.len()
    );
    println!(
        "object store: {} bytes moved for a {}-byte output, byte-identical to the shared dir",
        done.media_bytes,
        over_store.len()
    );
    shared.stop().await;
    fleet.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_upload_wait_works_from_a_directory_the_fleet_cannot_see() -> Result<()> {
    let mut fleet = ProcFleet::standard(1, &[OBJECT_STORE]).await?;
    let private = tempfile::Builder::new().prefix("ffleet-user-").tempdir()?;
    let src = media::ntsc_source(private.path(), "holiday clip.mp4", 3, "320x240")?;
    let run = Command::new(env!("CARGO_BIN_EXE_ffleet"))
        .current_dir(private.path())
        .env_remove("NATS_URL")
        .env_remove("FFLEET_CONFIG")
        .env("FFLEET_STORAGE__WORK_DIR", private.path().join("work"))
        .args(["-s", &fleet.url_of(), "submit", "--upload", "--wait"])
        .args(["--job-id", "uploaded", "--segment-seconds", "1.6"])
        .args(["holiday clip.mp4", "-o", "result.mkv"])
        .output()?;
    ensure!(
        run.status.success(),
        "submit --upload --wait failed: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let out = private.path().join("result.mkv");
    ensure!(out.is_file(), "no output at {}", out.display());
    let (want, got) = (
        sources::decoded_frames(&src)?,
        sources::decoded_frames(&out)?,
    );
    ensure!(
        want == got,
        "{got} frames in the output, {want} in the source"
    );
    if let Some(verdict) = sources::check_output_tool(&src, &out) {
        println!("check-output.py: {}", verdict?);
    }
    // The upload went with the job, the output with the download.
    let left = job_objects(&fleet, "uploaded").await?;
    ensure!(left.is_empty(), "job media left in the bucket: {left:?}");
    let left = objects::names(fleet.ctx()).await?;
    ensure!(left.is_empty(), "objects left in the bucket: {left:?}");
    // The services never saw the user's directory.
    ensure!(!fleet.out_dir().join("result.mkv").exists());
    fleet.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_over_the_size_limit_is_refused_before_sending() -> Result<()> {
    let mut fleet = ProcFleet::start(&[OBJECT_STORE]).await?;
    let private = tempfile::Builder::new().prefix("ffleet-user-").tempdir()?;
    let src = media::tiny_source(private.path(), "in.mp4")?;
    let run = Command::new(env!("CARGO_BIN_EXE_ffleet"))
        .env_remove("NATS_URL")
        .env_remove("FFLEET_CONFIG")
        .env("FFLEET_STORAGE__WORK_DIR", private.path().join("work"))
        .env("FFLEET_STORAGE__MAX_UPLOAD_BYTES", "1000")
        .args(["-s", &fleet.url_of(), "submit", "--upload"])
        .arg(&src)
        .args(["-o", "out.mp4"])
        .output()?;
    let err = String::from_utf8_lossy(&run.stderr);
    ensure!(!run.status.success(), "an oversize upload was accepted");
    ensure!(err.contains("upload limit"), "unclear refusal: {err}");
    let left = objects::names(fleet.ctx()).await?;
    ensure!(left.is_empty(), "refused upload left {left:?}");
    fleet.passed();
    Ok(())
}

/// A job's cleanup removes its own media, found through the bucket's job index rather than a
/// listing of the bucket, and nothing else: not another job's (one whose id extends it
/// included), not a kept output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_cleanup_removes_its_media_and_nothing_else() -> Result<()> {
    let mut fleet = ProcFleet::start(&[OBJECT_STORE]).await?;
    let ctx = fleet.ctx();
    let work = tempfile::tempdir()?;
    let mut cfg = (*ctx.config).clone();
    cfg.storage.backend = StorageBackend::ObjectStore;
    cfg.storage.work_dir = work.path().join("work");
    let dir = Arc::new(WorkDir::open(&cfg.storage.work_dir)?);
    let store = ObjectStore::open(
        &ctx.js,
        ctx.retry,
        &cfg.storage,
        cfg.media_placement(),
        dir,
        Patience::For(Duration::from_secs(30)),
    )
    .await?;
    let file = work.path().join("media.bin");
    std::fs::write(&file, vec![7u8; 300_000])?;
    let (a, b, ab) = (
        JobId::new("job-a")?,
        JobId::new("job-b")?,
        JobId::new("job-ab")?,
    );
    let own = [
        keys::job_input(&a, "in.mp4"),
        keys::cut(&a, "c00000.nut"),
        keys::result(&a, "v00000", 1, "nut"),
        keys::result(&a, "v00000", 2, "nut"),
    ];
    let mut others = vec![
        keys::job_input(&b, "in.mp4"),
        keys::job_input(&ab, "in.mp4"),
        keys::cut(&ab, "c00000.nut"),
        keys::kept_output(&a, "out.mp4"),
    ];
    for key in own.iter().chain(&others) {
        store.put_file(&file, key).await?;
    }
    // What the fleet made (cuts, results) is in the scratch bucket, which no client's
    // credentials reach; what clients store (uploads, kept outputs) in the media bucket.
    let scratch = subjects::scratch_bucket(&cfg.storage.bucket);
    let mut made = own[1..].to_vec();
    made.push(keys::cut(&ab, "c00000.nut"));
    made.sort();
    let in_scratch = objects::names_in(ctx, &scratch).await?;
    ensure!(
        in_scratch == made,
        "scratch holds {in_scratch:?}, expected {made:?}"
    );
    for key in own.iter().chain(&others) {
        let want = if keys::fleet_made(key) {
            &scratch
        } else {
            &cfg.storage.bucket
        };
        ensure!(
            store.bucket_of(key) == want,
            "{key} is kept in {}",
            store.bucket_of(key)
        );
    }
    // A cut an earlier release stored in the media bucket (before the scratch bucket): the
    // job's cleanup removes it there too.
    let earlier = keys::cut(&a, "c00001.nut");
    store.upload(&file, &earlier).await?;
    ensure!(
        objects::names_in(ctx, &cfg.storage.bucket)
            .await?
            .contains(&earlier)
    );
    // A superseded attempt's result already removed: its index entry is skipped.
    Storage::delete(&store, &own[2]).await?;
    store.delete_prefix(&keys::job_prefix(&a)).await?;
    others.sort();
    let left = objects::names(ctx).await?;
    ensure!(left == others, "left {left:?}, expected {others:?}");
    let scratch_stream = ctx.js.get_stream(subjects::object_stream(&scratch)).await?;
    for filter in [
        subjects::object_chunks(&scratch, &format!("{a}.>")),
        subjects::object_meta(&scratch, &format!("{a}.>")),
    ] {
        let mut left = scratch_stream.info_with_subjects(&filter).await?;
        ensure!(
            left.next().await.transpose()?.is_none(),
            "job-a's messages are still in the scratch stream ({filter})"
        );
    }
    // The job's index went with it; the others' stay (one entry per upload, naming the object
    // and its chunks).
    // (The scratch bucket has no index: its subjects carry each object's job, and the job's
    // cleanup purged them, chunks of superseded uploads included.)
    let bucket = &cfg.storage.bucket;
    let index = ctx
        .js
        .get_stream(subjects::media_index_stream(bucket))
        .await?;
    for (job, expected) in [(&a, 0), (&b, 1), (&ab, 1)] {
        let mut n = 0;
        let mut entries = index
            .info_with_subjects(subjects::media_index_of_job(bucket, job.as_str()))
            .await?;
        while let Some(e) = entries.next().await {
            e?;
            n += 1;
        }
        ensure!(
            n == expected,
            "{job}: {n} index entries, expected {expected}"
        );
    }
    fleet.passed();
    Ok(())
}

/// What an encoder was doing when it was killed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Download,
    Upload,
}

/// Files in the encoder's work dirs (not the lock), with their sizes.
fn work_files(base: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(base).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n != ".lock" {
                out.push((n, f.metadata().map_or(0, |m| m.len())));
            }
        }
    }
    out
}

/// Polls encoder `node` until it is in `phase` (a fetched cut growing before ffmpeg starts, or
/// a staged result with ffmpeg gone), then SIGKILLs it. Returns whether it caught the phase.
async fn kill_in(
    fleet: &mut ProcFleet,
    node: &str,
    phase: Phase,
    within: Duration,
) -> Result<bool> {
    let idx = fleet.encoder(node)?;
    let base = fleet.work_dir("encoder", &[("FFLEET_ENCODER__NODE_ID", node)]);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let files = work_files(&base);
        let busy = !fleet.children(idx).is_empty();
        let caught = match phase {
            Phase::Download => {
                !busy
                    && files
                        .iter()
                        .any(|(n, _)| n.ends_with(".nut") && !n.contains("stage-"))
            }
            Phase::Upload => !busy && files.iter().any(|(n, s)| n.contains("stage-") && *s > 0),
        };
        if caught {
            fleet.kill(idx);
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    Ok(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoders_killed_mid_download_and_mid_upload_leave_no_trace() -> Result<()> {
    // Small chunks make each transfer take long enough to be caught in the middle.
    let mut fleet =
        ProcFleet::standard(2, &[OBJECT_STORE, ("FFLEET_STORAGE__CHUNK_SIZE", "4096")]).await?;
    let src = source(&fleet, 8)?;
    let reference = run_job(&fleet, "reference", &src).await?;
    let mut caught = Vec::new();
    for (i, phase) in [Phase::Download, Phase::Upload].into_iter().enumerate() {
        let job = format!("killed-{i}");
        let mut req = fleet.request(&job, &src, &format!("{job}.mp4"));
        req.segment_seconds = Some(1.6);
        fleet.submit(&req).await?;
        let hit = kill_in(&mut fleet, "enc-1", phase, Duration::from_secs(60)).await?;
        let started = Instant::now();
        // The restarted node starts by removing what its killed predecessor left.
        fleet.spawn_encoder("enc-1")?;
        let out = {
            fleet.wait_completed(&job, JOB_TIMEOUT).await?;
            std::fs::read(fleet.out_path(&format!("{job}.mp4")))?
        };
        ensure!(
            out == reference,
            "output after a kill mid-{phase:?} differs from the fault-free run"
        );
        ensure!(
            fleet.terminal_count(&job).await? == 1,
            "{job}: terminal events"
        );
        let base = fleet.work_dir("encoder", &[("FFLEET_ENCODER__NODE_ID", "enc-1")]);
        let dirs = std::fs::read_dir(&base)?.count();
        let left = objects::leftovers(&base);
        ensure!(
            dirs == 1 && left.is_empty(),
            "restarted enc-1's work dir holds {dirs} process dirs and {left:?}"
        );
        let left = job_objects(&fleet, &job).await?;
        ensure!(left.is_empty(), "{job} media left in the bucket: {left:?}");
        println!(
            "killed mid-{phase:?} (caught in the act: {hit}); completed {:.1} s later, byte-identical",
            started.elapsed().as_secs_f64()
        );
        caught.push(hit);
    }
    ensure!(
        caught.iter().all(|c| *c),
        "the kills did not land in the transfers: {caught:?}"
    );
    fleet.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_segment_overwritten_before_the_merge_is_encoded_again() -> Result<()> {
    let mut fleet = ProcFleet::standard(1, &[OBJECT_STORE]).await?;
    let src = source(&fleet, 5)?;
    let reference = run_job(&fleet, "reference", &src).await?;
    let merger = fleet
        .services_named("merger")
        .first()
        .copied()
        .context("no merger")?;
    fleet.terminate(merger, Duration::from_secs(10));

    let mut req = fleet.request("tampered", &src, "tampered.mp4");
    req.segment_seconds = Some(1.6);
    fleet.submit(&req).await?;
    let deadline = Instant::now() + JOB_TIMEOUT;
    let victim = loop {
        let units = fleet.units("tampered").await;
        if !units.is_empty() && units.iter().all(|(_, r)| r.state == SegmentState::Done) {
            let (key, rec) = units.into_iter().next().context("no unit")?;
            break (key, rec);
        }
        if Instant::now() > deadline {
            bail!("units of the job did not all finish");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (unit_key, rec) = victim;
    let result = rec.result_key.clone().context("done without a result")?;
    objects::overwrite(fleet.ctx(), &result, b"not the encoded segment").await?;

    fleet.spawn("merger", &[])?;
    fleet.wait_completed("tampered", JOB_TIMEOUT).await?;
    let out = std::fs::read(fleet.out_path("tampered.mp4"))?;
    ensure!(out == reference, "output with a re-encoded unit differs");
    let (after, _) = fleet
        .ctx()
        .segments
        .get(&unit_key)
        .await?
        .context("unit record gone")?;
    ensure!(
        after.attempt > rec.attempt,
        "the tampered unit was not encoded again (attempt {})",
        after.attempt
    );
    fleet.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bucket_fails_the_job_and_the_next_small_job_completes() -> Result<()> {
    let mut fleet =
        ProcFleet::standard(1, &[OBJECT_STORE, ("FFLEET_STORAGE__MAX_BYTES", "400000")]).await?;
    let big = media::ntsc_source(&fleet.media(), "big.mp4", 8, "960x540")?;
    ensure!(std::fs::metadata(&big)?.len() > 400_000, "source too small");
    let req = fleet.request("big", &big, "big.mp4");
    fleet.submit(&req).await?;
    let failed = fleet.wait_failed("big", JOB_TIMEOUT).await?;
    ensure!(
        failed.reason.code() == "storage_full",
        "{}: {}",
        failed.reason,
        failed.message
    );
    let left = job_objects(&fleet, "big").await?;
    ensure!(left.is_empty(), "failed job's media kept: {left:?}");
    let small = media::tiny_source(&fleet.media(), "small.mp4")?;
    let req = fleet.request("small", &small, "small.mp4");
    fleet.submit(&req).await?;
    fleet.wait_completed("small", JOB_TIMEOUT).await?;
    fleet.passed();
    Ok(())
}

/// Objects are read one message get per chunk (the server's answer carries the chunk in
/// base64): the largest chunk size allowed (`storage.chunk_size`) still comes back whole, and an
/// empty object as nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_chunks_round_trip_through_message_gets() -> Result<()> {
    let server = ffleet::local::NatsServer::start_temp()?;
    let mut cfg = ffleet_runtime::config::Config::default();
    cfg.nats.url = server.url.clone();
    cfg.storage.backend = StorageBackend::ObjectStore;
    cfg.storage.chunk_size = 1000 << 10;
    cfg.storage.max_bytes = 64 << 20;
    let work = tempfile::tempdir()?;
    cfg.storage.work_dir = work.path().join("work");
    let store = objects::open(&cfg, Duration::from_secs(10)).await?;
    let data: Vec<u8> = (0..3_500_000u32).map(|i| (i % 253) as u8).collect();
    let file = work.path().join("in.bin");
    std::fs::write(&file, &data)?;
    let stored = store.upload(&file, "jobs/big/src/c.nut").await?;
    let back = work.path().join("back.bin");
    let n = store
        .download("jobs/big/src/c.nut", stored.digest.as_deref(), &back)
        .await?;
    ensure!(n == data.len() as u64, "read {n} bytes");
    ensure!(std::fs::read(&back)? == data, "different bytes");
    // An empty object too.
    let empty = work.path().join("empty.bin");
    std::fs::write(&empty, b"")?;
    let stored = store.upload(&empty, "jobs/big/src/empty").await?;
    let n = store
        .download(
            "jobs/big/src/empty",
            stored.digest.as_deref(),
            &work.path().join("e"),
        )
        .await?;
    ensure!(n == 0);
    Ok(())
}
