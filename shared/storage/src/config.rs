//! The `[storage]` section: where media travels between services, and the directories jobs may
//! read and write. Owned here, gathered by the runtime.

use ffleet_protocol::settings::{Invalid, Section};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where media travels between services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageBackend {
    /// A directory every node mounts (`storage.scratch`): zero copies, one host or NFS.
    SharedDir,
    /// A JetStream Object Store bucket: nodes share nothing but the NATS URL.
    ObjectStore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `object-store` (the default for a fleet) or `shared-dir` (`ffleet transcode`).
    pub backend: StorageBackend,
    /// Scratch directory shared by every node (a compose volume, NFS): cuts and encoded segments.
    pub scratch: PathBuf,
    /// Private local directory for downloaded and staged media; each process takes its own
    /// subdirectory and removes those of processes that died.
    pub work_dir: PathBuf,
    /// Object Store bucket holding the media.
    pub bucket: String,
    /// Cap on the bucket's size in bytes (0: the server's JetStream storage limit), set when
    /// the bucket is created. JetStream reserves a stream's cap out of the server's storage,
    /// so the default reserves nothing. A job that does not fit fails with `storage_full`.
    pub max_bytes: u64,
    /// Bytes per object chunk (one NATS message each): memory per transfer is a few chunks.
    pub chunk_size: usize,
    /// Largest file `ffleet submit --upload` sends (checked before the upload starts).
    pub max_upload_bytes: u64,
    /// Directories inputs must resolve into (after following symlinks).
    pub input_roots: Vec<PathBuf>,
    /// Read inputs that have more than one hard link. Off by default: a hard link inside an
    /// input root may be another name of a file outside every root, and nothing on the opened
    /// file tells which of its names is the one inside.
    pub allow_hard_links: bool,
    /// Directories outputs must resolve into.
    pub output_roots: Vec<PathBuf>,
    /// Directories that hold one directory per tenant (`<root>/<tenant>`): a tenant's job reads
    /// and writes only there, and no other job does (they may not overlap the input and output
    /// roots). Empty: tenants have no files.
    pub tenant_roots: Vec<PathBuf>,
    /// Keep the scratch media of failed jobs for inspection (whichever service fails a job).
    pub keep_failed_scratch: bool,
    /// How long a failed job's encoded units (and its uploaded source) are kept for
    /// `ffleet retry` to reuse (0: removed when it fails, like the rest of its scratch). Its
    /// cuts and copies go at once; a retry that completes or is cancelled removes them, and a
    /// sweep removes them once untouched this long.
    pub keep_failed_results_secs: u64,
    /// How long an output stored in the bucket for its submitter to fetch
    /// (`submit --upload --wait`) stays: a submitter may not purge the media stream, so the
    /// fleet removes it (the merger that stored it, or a sweep).
    pub keep_outputs_secs: u64,
    /// How often a splitter sweeps the bucket for media nobody will remove (0: never): chunks of
    /// uploads that never finished, uploads no job claimed, outputs past `keep_outputs_secs`.
    /// Each sweep reads every object's metadata once.
    pub sweep_interval_secs: u64,
    /// How long media must have lain untouched before a sweep removes it as abandoned: an
    /// upload's chunks with no object, or a job's scratch with no live job. A request waiting
    /// in the queue longer than this finds its uploaded input gone (`input_missing`).
    pub abandoned_after_secs: u64,
}

/// `<tmp>/ffleet-work-<uid>`: private to the user (the directory is created mode 0700, so a
/// shared name would lock other users out).
fn default_work_dir() -> PathBuf {
    #[cfg(unix)]
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or_else(|_| "user".to_owned(), |m| m.uid().to_string())
    };
    #[cfg(not(unix))]
    let owner = "user".to_owned();
    std::env::temp_dir().join(format!("ffleet-work-{owner}"))
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::ObjectStore,
            scratch: std::env::temp_dir().join("ffleet-scratch"),
            work_dir: default_work_dir(),
            bucket: ffleet_protocol::subjects::BUCKET_MEDIA.into(),
            max_bytes: 0,
            chunk_size: 128 * 1024,
            max_upload_bytes: 64 << 30,
            input_roots: Vec::new(),
            allow_hard_links: false,
            output_roots: Vec::new(),
            tenant_roots: Vec::new(),
            keep_failed_scratch: false,
            keep_failed_results_secs: 24 * 3600,
            keep_outputs_secs: 3600,
            sweep_interval_secs: 600,
            abandoned_after_secs: 6 * 3600,
        }
    }
}

/// A path with symlinks resolved as far as it exists (the rest appended), for comparing
/// directories that may not exist yet.
fn normalized(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

impl StorageConfig {
    /// This configuration as `job` may use it: a tenant's job's input and output roots are both
    /// its own directory of each tenant root (`<tenant root>/<tenant>`), so no tenant names
    /// another's files; other jobs' are the input and output roots, which hold no tenant's.
    pub fn for_job(&self, job: &ffleet_protocol::JobId) -> std::borrow::Cow<'_, StorageConfig> {
        let Some(tenant) = job.tenant() else {
            return std::borrow::Cow::Borrowed(self);
        };
        let own: Vec<PathBuf> = self
            .tenant_roots
            .iter()
            .map(|r| r.join(tenant.as_str()))
            .collect();
        std::borrow::Cow::Owned(StorageConfig {
            input_roots: own.clone(),
            output_roots: own,
            ..self.clone()
        })
    }

    /// Refuses a directory ffleet writes to (`what`: scratch, the NATS store) that lies inside
    /// an input or output root, or contains one: a job could then name another job's cut, or
    /// the server's store, as its input.
    pub fn roots_must_not_contain(&self, dir: &Path, what: &str) -> Result<(), Invalid> {
        let dir = normalized(dir);
        for (key, root) in self.job_roots() {
            let root_n = normalized(root);
            if dir.starts_with(&root_n) || root_n.starts_with(&dir) {
                return Err(Invalid(format!(
                    "{what} {} overlaps {key} entry {}: keep ffleet's own data outside the \
                     directories jobs may read and write",
                    dir.display(),
                    root.display()
                )));
            }
        }
        Ok(())
    }

    /// Every directory jobs may read or write, by its setting's name.
    fn job_roots(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        self.input_roots
            .iter()
            .map(|r| ("storage.input_roots", r))
            .chain(
                self.output_roots
                    .iter()
                    .map(|r| ("storage.output_roots", r)),
            )
            .chain(
                self.tenant_roots
                    .iter()
                    .map(|r| ("storage.tenant_roots", r)),
            )
    }

    /// Refuses a tenant root that lies inside (or contains) an input or output root: a job of
    /// no tenant could then name a tenant's files, or a tenant another's.
    fn tenant_roots_apart(&self) -> Result<(), Invalid> {
        if let Some(bad) = self.tenant_roots.iter().find(|t| {
            !t.is_absolute()
                || t.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
        }) {
            return Err(Invalid(format!(
                "storage.tenant_roots entry {} must be an absolute path without `..`",
                bad.display()
            )));
        }
        for (i, a) in self.tenant_roots.iter().enumerate() {
            for b in &self.tenant_roots[i + 1..] {
                let (a_n, b_n) = (normalized(a), normalized(b));
                if a_n.starts_with(&b_n) || b_n.starts_with(&a_n) {
                    return Err(Invalid(format!(
                        "storage.tenant_roots entries {} and {} overlap: one tenant's directory \
                         of one would lie inside another's of the other",
                        a.display(),
                        b.display()
                    )));
                }
            }
        }
        for t in &self.tenant_roots {
            let t_n = normalized(t);
            for r in self.input_roots.iter().chain(&self.output_roots) {
                let r_n = normalized(r);
                if t_n.starts_with(&r_n) || r_n.starts_with(&t_n) {
                    return Err(Invalid(format!(
                        "storage.tenant_roots entry {} overlaps the input or output root {}: \
                         tenants' files must lie apart from every other job's",
                        t.display(),
                        r.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Section for StorageConfig {
    const KEY: &'static str = "storage";

    fn validate(&self) -> Result<(), Invalid> {
        // A chunk is one NATS message: within the servers' default 1 MiB max_payload.
        if self.chunk_size < 4096 || self.chunk_size > 1000 << 10 {
            return Err(Invalid(format!(
                "storage.chunk_size must be between 4096 and 1024000 bytes (got {})",
                self.chunk_size
            )));
        }
        if self.bucket.is_empty()
            || !self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(Invalid(format!(
                "storage.bucket {:?} must be letters, digits, - and _",
                self.bucket
            )));
        }
        // Another fleet on the account whose media bucket were named so would hand its
        // submitters this fleet's scratch.
        if self
            .bucket
            .ends_with(ffleet_protocol::subjects::SCRATCH_SUFFIX)
        {
            return Err(Invalid(format!(
                "storage.bucket {:?} must not end in {:?}, which names a fleet's scratch bucket",
                self.bucket,
                ffleet_protocol::subjects::SCRATCH_SUFFIX
            )));
        }
        self.tenant_roots_apart()?;
        self.roots_must_not_contain(&self.work_dir, "storage.work_dir")?;
        self.roots_must_not_contain(&self.scratch, "storage.scratch")
    }
}
