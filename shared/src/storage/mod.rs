//! Media storage behind a trait: where cuts, encoded segments and concat lists live between
//! services, addressed by relative keys (`jobs/<job>/enc/v00001.a1.nut`).
//!
//! The first backend is a directory tree shared by every node (`SharedDir`). A later object-store
//! backend implements the same trait by staging objects in a local directory.

mod roots;
mod shared_dir;

pub use roots::{PathError, resolve_input, resolve_output};
pub use shared_dir::SharedDir;

use async_trait::async_trait;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage key {0:?}")]
    BadKey(String),
    #[error("object {0:?} does not exist")]
    Missing(String),
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// A local path from which the object can be read.
    async fn read_path(&self, key: &str) -> Result<PathBuf, StorageError>;
    /// A fresh local path (file or directory) to write into before `commit`.
    async fn staging_path(&self, key: &str) -> Result<PathBuf, StorageError>;
    /// Publishes what was written at `staged` under `key`, atomically, replacing any old value.
    async fn commit(&self, staged: &Path, key: &str) -> Result<(), StorageError>;
    /// Writes a small object in one go.
    async fn write(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;
    /// Removes every object under `prefix` (a job's scratch media).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError>;
}

/// Checks a key: relative, `/`-separated components of `[A-Za-z0-9._-]`, none of them `.`/`..`.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::BadKey(key.chars().take(100).collect()))
    }
}

/// Scratch key prefix of everything belonging to one job.
pub fn job_prefix(job: &crate::JobId) -> String {
    format!("jobs/{job}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_store() {
        for bad in [
            "", "/abs", "a/../b", "a//b", "a/./b", "a b", "..", "a/\u{e9}",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        check_key("jobs/j-1/enc/v00001.a1.nut").unwrap();
    }
}
