//! `ffleet submit --upload`: the input streams from this machine into the media bucket before the
//! job is submitted, and with `--wait` the output streams back when the job completes. The size
//! limit is checked before a byte is sent; memory stays at a few chunks whatever the file size.
//! A transfer cut short by the broker (the server this client was on restarting, an election)
//! starts again for up to `nats.op_retry_secs`: both directions are idempotent.

use anyhow::{Context, Result, bail};
use ffleet_runtime::config::Config;
use ffleet_runtime::messages::JobRequest;
use ffleet_runtime::nats::retry::{Patience, Policy};
use ffleet_runtime::storage::{self, MediaUri, ObjectStore, WorkDir};
use ffleet_runtime::{JobId, storage::Storage};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where the uploaded input goes: the job's own media, removed when the job ends.
pub fn input_key(job: &JobId, input: &Path) -> String {
    storage::keys::job_input(job, &name_of(input))
}

/// Where the output is stored until `--wait` fetches it (kept when nobody waits).
pub fn output_key(job: &JobId, output: &Path) -> String {
    storage::keys::kept_output(job, &name_of(output))
}

/// The media bucket, whatever backend this machine's configuration names, retrying under
/// `policy`.
pub async fn open(
    js: &async_nats::jetstream::Context,
    policy: Policy,
    cfg: &Config,
) -> Result<ObjectStore> {
    let work = Arc::new(
        WorkDir::open(&cfg.storage.work_dir)
            .with_context(|| format!("work dir {}", cfg.storage.work_dir.display()))?,
    );
    let wait = Patience::For(Duration::from_secs_f64(cfg.nats.startup_wait_secs));
    ObjectStore::open(js, policy, &cfg.storage, cfg.media_placement(), work, wait)
        .await
        .context("opening the media bucket")
}

fn key_of(uri: &str) -> Result<&str> {
    uri.strip_prefix(storage::OBJECT_SCHEME)
        .with_context(|| format!("{uri} is not an object URI"))
}

/// Streams `input` into the bucket under the request's input key; returns the digest it was
/// stored with.
pub async fn send(
    cfg: &Config,
    store: &ObjectStore,
    input: &Path,
    req: &JobRequest,
) -> Result<Option<String>> {
    let meta =
        std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
    if !meta.is_file() {
        bail!("{} is not a file", input.display());
    }
    let limit = cfg.storage.max_upload_bytes;
    if meta.len() > limit {
        bail!(
            "{} is {} bytes, over the upload limit of {limit} bytes (storage.max_upload_bytes)",
            input.display(),
            meta.len()
        );
    }
    let key = key_of(&req.input)?;
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.nats.op_retry_secs);
    loop {
        match store.put_file(input, key).await {
            Ok(stored) => return Ok(stored.digest),
            Err(e) if e.is_transient() && !e.is_store_full() && Instant::now() < deadline => {
                tracing::warn!(key, error = %e, "upload interrupted, sending again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => return Err(e).with_context(|| format!("uploading {}", input.display())),
        }
    }
}

/// Removes the uploaded input of a request that was never submitted (best effort: said, not
/// failed on).
pub async fn discard(store: &ObjectStore, req: &JobRequest) {
    let Ok(key) = key_of(&req.input) else { return };
    if !store.may_delete() {
        // A submitter may not purge the media stream: the upload sits in a job's scratch that
        // no job will clean, and goes at the bucket's max age.
        tracing::info!(key, "uploaded input of an unsubmitted job left to expire");
        return;
    }
    // Bounded: the user is waiting to hear why the submit failed.
    match tokio::time::timeout(Duration::from_secs(5), store.delete(key)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(key, error = %e, "uploaded input of an unsubmitted job not removed")
        }
        Err(_) => tracing::warn!(
            key,
            "uploaded input of an unsubmitted job not removed in 5 s"
        ),
    }
}

/// Pause before a transfer starts again (the client reconnects meanwhile).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Streams the completed job's output to `dest` (through a temporary name beside it), checked
/// against `expect` (the digest the completed event names, as the merger stored it), then
/// removes it from the bucket where these credentials may.
pub async fn receive(
    cfg: &Config,
    store: &ObjectStore,
    req: &JobRequest,
    dest: &Path,
    expect: Option<&str>,
) -> Result<()> {
    let key = match MediaUri::output(&req.output)? {
        MediaUri::Object(k) => k,
        MediaUri::File(_) => return Ok(()),
    };
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.ffleet-{}.part",
        name_of(dest),
        uuid::Uuid::new_v4().simple()
    ));
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.nats.op_retry_secs);
    let fetched = loop {
        match store.download(&key, expect, &tmp).await {
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tracing::warn!(key, error = %e, "download interrupted, fetching again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            done => break done,
        }
    };
    if let Err(e) = fetched {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("downloading the output to {}", dest.display()));
    }
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("moving the output to {}", dest.display()))?;
    if !store.may_delete() {
        // The fleet removes it (`storage.keep_outputs_secs` after the job completed): these
        // credentials may not purge the media stream.
        return Ok(());
    }
    if let Err(e) = store.delete(&key).await {
        eprintln!("note: the output stays in the media bucket as {key}: {e}");
    }
    Ok(())
}
