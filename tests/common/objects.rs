//! Looking into the media bucket from tests: opening it as a configuration's client does,
//! which objects exist, and overwriting one.

use anyhow::Result;
use ffleet_runtime::config::Config;
use ffleet_runtime::nats::retry::{Patience, Policy};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::{ObjectStore, WorkDir};
use futures::StreamExt;
use std::time::Duration;

/// The media bucket as a client of `cfg` opens it (its credentials and role, its work dir),
/// waiting up to `wait` for the bucket.
pub async fn open(cfg: &Config, wait: Duration) -> Result<ObjectStore> {
    let client = ffleet_runtime::nats::connect(&cfg.nats, "test-media", false).await?;
    let js = ffleet_runtime::nats::connect::jetstream(client, &cfg.nats);
    let work = std::sync::Arc::new(WorkDir::open(&cfg.storage.work_dir)?);
    Ok(ObjectStore::open(
        &js,
        Policy::from_config(&cfg.nats),
        &cfg.storage,
        cfg.media_placement(),
        work,
        Patience::For(wait),
    )
    .await?)
}

/// `open` with the configuration moved in (for a closure that makes one per call).
pub async fn open_owned(cfg: Config, wait: Duration) -> Result<ObjectStore> {
    open(&cfg, wait).await
}

/// Names of every object in the fleet's media and scratch buckets.
pub async fn names(ctx: &Ctx) -> Result<Vec<String>> {
    let media = &ctx.config.storage.bucket;
    let mut out = names_in(ctx, media).await?;
    out.extend(names_in(ctx, &ffleet_runtime::subjects::scratch_bucket(media)).await?);
    out.sort();
    Ok(out)
}

/// Names of every object in bucket `bucket`.
pub async fn names_in(ctx: &Ctx, bucket: &str) -> Result<Vec<String>> {
    let store = ctx.js.get_object_store(bucket).await?;
    let mut list = store.list().await?;
    let mut out = Vec::new();
    // A listing whose last message was purged meanwhile never ends by itself.
    while let Ok(Some(info)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), list.next()).await
    {
        out.push(info?.name);
    }
    out.sort();
    Ok(out)
}

/// Overwrites object `key` with `bytes` (a new digest), as any writer of the bucket can.
pub async fn overwrite(ctx: &Ctx, key: &str, bytes: &[u8]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bytes");
    std::fs::write(&file, bytes)?;
    ctx.storage.put_file(&file, key).await?;
    Ok(())
}

/// Files left in a service's work dir base, other than the live processes' own directories.
pub fn leftovers(base: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(base) else {
        return out;
    };
    for d in dirs.flatten() {
        match std::fs::read_dir(d.path()) {
            Ok(files) => out.extend(files.flatten().filter_map(|f| {
                let n = f.file_name().to_string_lossy().into_owned();
                (n != ".lock").then(|| format!("{}/{n}", d.file_name().to_string_lossy()))
            })),
            Err(_) => out.push(d.file_name().to_string_lossy().into_owned()),
        }
    }
    out
}
