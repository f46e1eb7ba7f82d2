//! `SharedDir`: storage as a directory tree every node mounts (compose volume, NFS). Commits are
//! renames within the tree, so readers never see half-written media.

use super::{Aged, Local, Storage, StorageError, Stored, Survey, WorkDir, check_key, io};
use async_trait::async_trait;
use ffleet_protocol::keys;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct SharedDir {
    root: PathBuf,
    work: Arc<WorkDir>,
}

impl SharedDir {
    /// Opens (and creates) the root directory.
    pub fn open(root: impl Into<PathBuf>, work: Arc<WorkDir>) -> Result<Self, StorageError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self { root, work })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    async fn ensure_parent(path: &Path) -> Result<(), StorageError> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io(parent))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for SharedDir {
    async fn fetch(&self, key: &str, _expect: Option<&str>) -> Result<Local, StorageError> {
        let p = self.path(key)?;
        match tokio::fs::metadata(&p).await {
            Ok(_) => Ok(Local::shared(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::Missing(key.into()))
            }
            Err(e) => Err(io(&p)(e)),
        }
    }

    async fn fetch_to(
        &self,
        key: &str,
        expect: Option<&str>,
        dest: &Path,
    ) -> Result<u64, StorageError> {
        let shared = self.fetch(key, expect).await?;
        tokio::fs::symlink(shared.path(), dest)
            .await
            .map_err(io(dest))?;
        Ok(0)
    }

    async fn staging_path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let p = self.path(key)?;
        Self::ensure_parent(&p).await?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple());
        Ok(p.with_file_name(tmp))
    }

    async fn commit(&self, staged: &Path, key: &str) -> Result<Stored, StorageError> {
        let p = self.path(key)?;
        Self::ensure_parent(&p).await?;
        // A directory cannot be renamed over a non-empty one: clear a previous commit first.
        if tokio::fs::metadata(staged)
            .await
            .map_err(io(staged))?
            .is_dir()
        {
            match tokio::fs::remove_dir_all(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        tokio::fs::rename(staged, &p).await.map_err(io(&p))?;
        Ok(Stored::default())
    }

    async fn put_file(&self, file: &Path, key: &str) -> Result<Stored, StorageError> {
        let staged = self.staging_path(key).await?;
        tokio::fs::copy(file, &staged).await.map_err(io(file))?;
        self.commit(&staged, key).await
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let p = self.path(key)?;
        match tokio::fs::metadata(&p).await {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::Missing(key.into()))
            }
            Err(e) => Err(io(&p)(e)),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let p = self.path(key)?;
        tokio::fs::try_exists(&p).await.map_err(io(&p))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        let p = self.path(prefix)?;
        match tokio::fs::remove_dir_all(&p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                tokio::fs::remove_file(&p).await.map_err(io(&p))
            }
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// Every file under the jobs' scratch (`jobs/`), aged by its modification time: what a
    /// sweep judges (failed jobs' kept results, cleanups that never ran). Nothing else here
    /// is the fleet's to remove.
    async fn survey(&self, _quiet: std::time::Duration) -> Result<Survey, StorageError> {
        let root = self.root.clone();
        let objects = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            walk(&root, &root.join(keys::SCRATCH), &mut found);
            found
        })
        .await
        .map_err(|e| StorageError::Io {
            path: self.root.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(Survey {
            objects,
            orphans_removed: 0,
        })
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn work_dir(&self) -> &Path {
        self.work.path()
    }
}

/// Appends every file under `dir` (named by its path below `root`, `/`-separated) with its
/// age. What cannot be read is skipped: a sweep judges what it sees.
fn walk(root: &Path, dir: &Path, found: &mut Vec<Aged>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, found);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            found.push(Aged { name, age });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn staged_writes_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let work = Arc::new(WorkDir::open(&dir.path().join("work")).unwrap());
        let s = SharedDir::open(dir.path().join("scratch"), work).unwrap();
        let staged = s.staging_path("jobs/j/enc/a.nut").await.unwrap();
        tokio::fs::write(&staged, b"x").await.unwrap();
        assert!(!s.exists("jobs/j/enc/a.nut").await.unwrap());
        s.commit(&staged, "jobs/j/enc/a.nut").await.unwrap();
        assert_eq!(
            std::fs::read(s.fetch("jobs/j/enc/a.nut", None).await.unwrap().path()).unwrap(),
            b"x"
        );
        s.delete_prefix("jobs/j").await.unwrap();
        assert!(matches!(
            s.fetch("jobs/j/enc/a.nut", None).await,
            Err(StorageError::Missing(_))
        ));
        s.delete_prefix("jobs/j").await.unwrap();
    }

    #[tokio::test]
    async fn a_survey_lists_the_jobs_scratch_only() {
        let dir = tempfile::tempdir().unwrap();
        let work = Arc::new(WorkDir::open(&dir.path().join("work")).unwrap());
        let s = SharedDir::open(dir.path().join("scratch"), work).unwrap();
        assert!(
            s.survey(Default::default())
                .await
                .unwrap()
                .objects
                .is_empty()
        );
        for key in ["jobs/j/enc/v00000.a1.nut", "jobs/k/src/seg00000.nut"] {
            let staged = s.staging_path(key).await.unwrap();
            tokio::fs::write(&staged, b"x").await.unwrap();
            s.commit(&staged, key).await.unwrap();
        }
        std::fs::write(dir.path().join("scratch").join("other.txt"), b"y").unwrap();
        let mut names: Vec<_> = s
            .survey(Default::default())
            .await
            .unwrap()
            .objects
            .into_iter()
            .map(|o| o.name)
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["jobs/j/enc/v00000.a1.nut", "jobs/k/src/seg00000.nut"]
        );
    }
}
