//! Which bucket holds a key. The fleet's own media (`keys::fleet_made`: cuts, encoded units,
//! copied sources) lives in the scratch bucket, which no client's credentials reach; what
//! clients store and fetch (uploads, outputs, other systems' objects) lives in the media bucket.
//!
//! A read of fleet media that the scratch bucket does not hold looks in the media bucket too:
//! an earlier release's services wrote it there, and a rolling upgrade runs both. Such a read is
//! checked against the digest the fleet recorded like any other, so a client's object under a
//! job's name there is refused, not used.

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

    /// Every bucket these credentials reach.
    fn buckets(&self) -> impl Iterator<Item = &ObjectStore> {
        std::iter::once(self).chain(self.scratch.as_deref())
    }

    /// The name of the bucket that holds `key` (tests and operators' tools).
    pub fn bucket_of(&self, key: &str) -> &str {
        &self.holder(key).0.bucket
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
        self.holder(key).0.commit_here(staged, key).await
    }

    async fn put_file(&self, file: &Path, key: &str) -> Result<Stored, StorageError> {
        self.holder(key).0.upload(file, key).await
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

    /// Removed from every bucket: an earlier release may have stored it in the media bucket.
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        for bucket in self.buckets() {
            ObjectStore::delete(bucket, key).await?;
        }
        Ok(())
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        for bucket in self.buckets() {
            bucket.delete_prefix_here(prefix).await?;
        }
        Ok(())
    }

    /// Both buckets' objects: a sweep judges them by name, wherever they are.
    async fn survey(&self, quiet: Duration) -> Result<Survey, StorageError> {
        let mut all = Survey::default();
        for bucket in self.buckets() {
            let one = ObjectStore::survey(bucket, quiet).await?;
            all.objects.extend(one.objects);
            all.orphans_removed += one.orphans_removed;
        }
        Ok(all)
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn work_dir(&self) -> &Path {
        self.work.path()
    }
}
