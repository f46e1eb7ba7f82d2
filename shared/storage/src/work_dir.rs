//! `WorkDir`: this process's private directory for downloaded and staged media. Each process takes
//! a fresh `w-<uuid>` under the configured base and holds an exclusive lock on a file inside it;
//! at start it removes every sibling whose lock nobody holds (a process that crashed or was
//! killed), so a restarted node's disk is clean while live neighbours keep theirs.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

const LOCK: &str = ".lock";
const PREFIX: &str = "w-";

#[derive(Debug)]
pub struct WorkDir {
    dir: PathBuf,
    _lock: File,
}

impl WorkDir {
    /// Creates this process's directory under `base`, after removing abandoned ones.
    pub fn open(base: &Path) -> io::Result<Self> {
        create_private(base)?;
        sweep(base);
        // Made and locked under a name sweeps ignore, then renamed into view: a neighbour's
        // sweep never sees it unlocked.
        let id = uuid::Uuid::new_v4().simple();
        let making = base.join(format!("new-{id}"));
        create_private(&making)?;
        let lock = File::create(making.join(LOCK))?;
        lock.lock()?;
        let dir = base.join(format!("{PREFIX}{id}"));
        std::fs::rename(&making, &dir)?;
        Ok(Self { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh path inside the directory, ending in `name` (its extension matters to ffmpeg).
    pub fn temp_path(&self, name: &str) -> PathBuf {
        self.dir
            .join(format!("{}-{name}", uuid::Uuid::new_v4().simple()))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(unix)]
fn create_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Removes every `w-*` directory whose lock can be taken (its owner is gone), and `new-*`
/// directories a process left while making its own (older than a minute).
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let dir = e.path();
        if name.starts_with("new-") && older_than_a_minute(&dir) {
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        if !name.starts_with(PREFIX) {
            continue;
        }
        let abandoned = match File::open(dir.join(LOCK)) {
            // Held while removing, so a process that just created it is never swept.
            Ok(f) => f.try_lock().is_ok().then_some(f),
            // No lock file (made by hand, or its lock removed): gone once it is old.
            Err(_) => older_than_a_minute(&dir)
                .then(|| File::open(&dir).ok())
                .flatten(),
        };
        if let Some(_held) = abandoned {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "removed work dir of a stopped process")
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove an abandoned work dir")
                }
            }
        }
    }
}

fn older_than_a_minute(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_process_dir_is_swept_and_a_live_one_kept() {
        let base = tempfile::tempdir().unwrap();
        let live = WorkDir::open(base.path()).unwrap();
        std::fs::write(live.temp_path("a.nut"), b"x").unwrap();
        // A crashed process: its directory exists but nobody holds its lock.
        let dead = base.path().join("w-dead");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(LOCK), b"").unwrap();
        std::fs::write(dead.join("cut.nut"), b"x").unwrap();
        let other = WorkDir::open(base.path()).unwrap();
        assert!(!dead.exists());
        assert!(live.path().exists());
        let (lp, op) = (live.path().to_path_buf(), other.path().to_path_buf());
        drop(live);
        assert!(!lp.exists());
        assert!(op.exists());
    }
}
