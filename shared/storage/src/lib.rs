//! Media storage behind a trait: where cuts, encoded segments and uploaded sources live between
//! services, addressed by relative keys (`jobs/<job>/enc/v00001.a1.nut`).
//!
//! Two backends: a directory tree every node mounts (`SharedDir`, zero-copy, one host or NFS) and
//! a JetStream Object Store bucket (`ObjectStore`), for nodes that share nothing but a NATS URL.
//! Callers see local files either way: `fetch` gives a readable file (the shared file itself, or
//! a private copy that disappears with its handle) and `commit` publishes a staged one.

pub mod config;
mod confined;
mod local;
mod object_store;
mod roots;
mod shared_dir;
mod uri;
mod work_dir;

pub use ffleet_protocol::keys;

pub use confined::{OutputFile, Placed, Roots, fd_path, open_input_link};
pub use local::Local;
pub use object_store::{ObjectStore, Placement};
pub use roots::{PathError, resolve_input, resolve_output};
pub use shared_dir::SharedDir;
pub use uri::{MediaUri, OBJECT_SCHEME, UriError};
pub use work_dir::WorkDir;

use async_trait::async_trait;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid storage key {0:?}")]
    BadKey(String),
    #[error("object {0:?} does not exist")]
    Missing(String),
    #[error("object {key:?} is not the one recorded (digest {found}, expected {expected})")]
    Corrupt {
        key: String,
        expected: String,
        found: String,
    },
    /// The media bucket is at its cap (`storage.max_bytes`): the job's media does not fit.
    #[error("media storage is full: {0}")]
    Full(#[source] ffleet_nats::BoxError),
    /// The NATS server has no room (`nats::Refusal::StoreFull`): transient, space can be freed.
    #[error("object store {op} {key:?}: {}", ffleet_nats::full_text(source))]
    StoreFull {
        op: &'static str,
        key: String,
        #[source]
        source: ffleet_nats::BoxError,
    },
    /// Fleet media (`keys::fleet_made`) written through a store without the scratch bucket: a
    /// client's credentials, which must not put it where clients can reach it.
    #[error(
        "object {0:?} is the fleet's own media, kept in the scratch bucket, which this store does not open"
    )]
    NoScratch(String),
    #[error("{what} is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("storage i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("object store {op} {key:?}: {source}")]
    Nats {
        op: &'static str,
        key: String,
        #[source]
        source: ffleet_nats::BoxError,
    },
}

impl StorageError {
    /// Whether trying again later can succeed (a broker hiccup, not a bad key or a full bucket).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Nats { .. } | StorageError::Io { .. } | StorageError::StoreFull { .. }
        )
    }

    /// Whether the NATS server refused for want of space (a client stops; a service waits).
    pub fn is_store_full(&self) -> bool {
        matches!(self, StorageError::StoreFull { .. })
    }

    /// The job failure this error means, `doing` saying what was being done.
    pub fn failure(&self, doing: &str) -> ffleet_protocol::reason::Failure {
        use ffleet_protocol::reason::{Failure, Reason};
        let reason = match self {
            StorageError::Full(_) => Reason::StorageFull,
            StorageError::TooLarge { .. } => Reason::LimitsExceeded,
            _ => Reason::Internal,
        };
        Failure::new(reason, format!("{doing}: {self}"))
    }
}

/// Wraps an i/o error on `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a bucket holds, as a sweep sees it (`Storage::survey`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Survey {
    /// Every object, with how long ago it was written.
    pub objects: Vec<Aged>,
    /// Sets of chunks removed because no object refers to them.
    pub orphans_removed: usize,
}

/// An object's name and age.
#[derive(Debug, Clone, PartialEq)]
pub struct Aged {
    pub name: String,
    pub age: std::time::Duration,
}

/// What a commit stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// `SHA-256=<base64url>` of the stored object, for backends that keep one (object store).
    pub digest: Option<String>,
    /// Every stored object's digest by key (a committed directory's files; one entry for a
    /// single object): what readers of each are told to expect.
    pub digests: std::collections::BTreeMap<String, String>,
    /// Bytes that crossed the network (0 for a shared directory).
    pub bytes_moved: u64,
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// The object at `key` as a readable local file. With `expect`, a backend that keeps digests
    /// refuses an object whose digest differs (`Corrupt`).
    async fn fetch(&self, key: &str, expect: Option<&str>) -> Result<Local, StorageError>;
    /// Makes the object at `key` readable at `dest` (a new name in a private directory): a copy,
    /// or a link to the shared file. Returns the bytes that crossed the network.
    async fn fetch_to(
        &self,
        key: &str,
        expect: Option<&str>,
        dest: &Path,
    ) -> Result<u64, StorageError>;
    /// A fresh local path (file or directory) to write into before `commit`.
    async fn staging_path(&self, key: &str) -> Result<PathBuf, StorageError>;
    /// Publishes what was written at `staged` under `key`, replacing any old value; a staged
    /// directory's files become `key/<file name>`. The staged path is gone afterwards.
    async fn commit(&self, staged: &Path, key: &str) -> Result<Stored, StorageError>;
    /// Stores a copy of `file` (left in place) under `key`.
    async fn put_file(&self, file: &Path, key: &str) -> Result<Stored, StorageError>;
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;
    /// Size of the object at `key` in bytes.
    async fn size(&self, key: &str) -> Result<u64, StorageError>;
    /// Removes every object under `prefix` (a job's media).
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError>;
    /// Removes the object at `key` (nothing when there is none).
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.delete_prefix(key).await
    }
    /// Every stored object with its age, for a sweep to judge; chunks that belong to no
    /// object and have been quiet for `quiet` (uploads that never finished) are removed on the
    /// way. A shared directory lists its jobs' scratch files (aged by modification time): its
    /// cleanups cannot half-fail, but a failed job's results are kept for a retry and swept
    /// later.
    async fn survey(&self, quiet: std::time::Duration) -> Result<Survey, StorageError> {
        let _ = quiet;
        Ok(Survey::default())
    }
    /// Whether objects are files every node sees in place (no copies, no digests).
    fn is_shared(&self) -> bool;
    /// The private directory for local copies and staging.
    fn work_dir(&self) -> &Path;
}

/// Checks a key: relative, `/`-separated components of `[A-Za-z0-9._=-]` (`=` is in a
/// tenant's job ids), none of them `.`/`..`.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'='))
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::BadKey(key.chars().take(100).collect()))
    }
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

    #[test]
    fn uploaded_names_become_keys_with_their_extension() {
        use keys::sanitize_name;
        assert_eq!(sanitize_name("my clip (1).MP4"), "my_clip__1_.MP4");
        assert_eq!(sanitize_name("../..//x.mkv"), "_..__x.mkv");
        assert_eq!(sanitize_name(""), "media");
        check_key(&keys::job_input(
            &ffleet_protocol::JobId::new("j1").unwrap(),
            "../a b.mov",
        ))
        .unwrap();
    }
}
