//! Which bucket holds a key. The fleet's own media (`keys::fleet_made`: cuts, encoded units,
//! copied sources) lives in the scratch bucket, which no client's credentials reach; what
//! clients store and fetch (uploads, outputs, other systems' objects) lives in the media bucket.
//!
//! A read of fleet media that the scratch bucket does not hold looks in the media bucket too:
//! an earlier release's services wrote it there, and a rolling upgrade runs both. Such a read is
//! checked against the digest the fleet recorded, so a client's object under a job's name there
//! is refused. Only an earlier release's task names a cut without a digest (0.1's carry none;
//! this release's always do): that read is as trusting as it was in that release, for as long as
//! jobs it split are in flight.
//!
//! A store without the scratch bucket (a client's) refuses to write fleet media rather than put
//! it where clients can reach it.

use super::ObjectStore;
use crate::{Local, Storage, StorageError, Stored, Survey, check_key, keys};
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl ObjectStore {
    /// The bucket that holds `key`, and the one to read it from when that one has no such object.
    fn holder(&self, key: &str) -> (&ObjectStore, Option<&ObjectStore>) {
        match &self.scratch {
            Some(scratch) if keys::fleet_made(key) => (scratch, Some(self)),
            _ => (self, None),
        }
    }

    /// Every bucket these credentials reach, the scratch bucket first.
    fn buckets(&self) -> impl Iterator<Item = &ObjectStore> {
        self.scratch.as_deref().into_iter().chain([self])
    }

    /// The name of the bucket that holds `key` (tests and operators' tools).
    pub fn bucket_of(&self, key: &str) -> &str {
        &self.holder(key).0.bucket
    }

    /// The bucket to write `key` to: never fleet media into the media bucket.
    fn writer(&self, key: &str) -> Result<&ObjectStore, StorageError> {
        match self.holder(key) {
            (_, None) if keys::fleet_made(key) => {
                Err(StorageError::NoScratch(key.chars().take(200).collect()))
            }
            (holder, _) => Ok(holder),
        }
    }
}

/// Whether a read that found nothing should look in the earlier bucket.
fn missing<T>(r: &Result<T, StorageError>) -> bool {
    matches!(r, Err(StorageError::Missing(_)))
}

#[async_trait]
impl Storage for ObjectStore {
    async fn fetch(&self, key: &str, expect: Option<&str>) -> Result<Local, StorageError> {
        let (holder, earlier) = self.holder(key);
        let got = holder.fetch_here(key, expect).await;
        match earlier {
            Some(media) if missing(&got) => media.fetch_here(key, expect).await,
            _ => got,
        }
    }

    async fn fetch_to(
        &self,
        key: &str,
        expect: Option<&str>,
        dest: &Path,
    ) -> Result<u64, StorageError> {
        let (holder, earlier) = self.holder(key);
        let got = holder.download(key, expect, dest).await;
        match earlier {
            Some(media) if missing(&got) => media.download(key, expect, dest).await,
            _ => got,
        }
    }

    async fn staging_path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        let name = key.rsplit('/').next().unwrap_or("object");
        Ok(self.work.temp_path(&format!("stage-{name}")))
    }

    async fn commit(&self, staged: &Path, key: &str) -> Result<Stored, StorageError> {
        self.writer(key)?.commit_here(staged, key).await
    }

    async fn put_file(&self, file: &Path, key: &str) -> Result<Stored, StorageError> {
        self.writer(key)?.upload(file, key).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let (holder, earlier) = self.holder(key);
        match (holder.exists_here(key).await?, earlier) {
            (false, Some(media)) => media.exists_here(key).await,
            (found, _) => Ok(found),
        }
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let (holder, earlier) = self.holder(key);
        let got = holder.size_here(key).await;
        match earlier {
            Some(media) if missing(&got) => media.size_here(key).await,
            _ => got,
        }
    }

    /// Removed from the bucket that holds it and, for fleet media, from the media bucket too
    /// (where an earlier release stored it). Both are tried; the first error is returned.
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (holder, earlier) = self.holder(key);
        let first = ObjectStore::delete(holder, key).await;
        let second = match earlier {
            Some(media) => ObjectStore::delete(media, key).await,
            None => Ok(()),
        };
        first.and(second)
    }

    /// A job's scratch goes from every bucket, the scratch bucket first: a failure in one (the
    /// media bucket's index is anyone's to write) does not keep the other's objects.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let mut first = Ok(());
        for bucket in self.buckets() {
            let done = bucket.delete_prefix_here(prefix).await;
            if first.is_ok() {
                first = done;
            }
        }
        first
    }

    /// Both buckets' objects: a sweep judges them by name, wherever they are. A bucket that
    /// cannot be surveyed leaves the other's to be judged (a job's fate comes from its record,
    /// and its removal reaches both buckets); only when neither can is the survey an error.
    async fn survey(&self, quiet: Duration) -> Result<Survey, StorageError> {
        let mut all = Survey::default();
        let mut failed = None;
        let mut surveyed = 0;
        for bucket in self.buckets() {
            match ObjectStore::survey(bucket, quiet).await {
                Ok(one) => {
                    all.objects.extend(one.objects);
                    all.orphans_removed += one.orphans_removed;
                    surveyed += 1;
                }
                Err(e) => {
                    tracing::warn!(bucket = %bucket.bucket, error = %e, "bucket not surveyed");
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) if surveyed == 0 => Err(e),
            _ => Ok(all),
        }
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn work_dir(&self) -> &Path {
        self.work.path()
    }
}
