//! `Local`: a fetched object as a file on this machine. A private copy (object store) is removed
//! when the handle drops, so a failed or cancelled step leaves nothing behind in the work dir.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Local {
    path: PathBuf,
    temporary: bool,
    /// An open file the path leads to (kept open as long as the path is used).
    _held: Option<std::fs::File>,
    /// Bytes that crossed the network to make this file local (0 for a shared file).
    pub bytes_moved: u64,
    /// The digest of the object these bytes were read and checked against (object store).
    pub digest: Option<String>,
}

impl Local {
    /// The shared file itself: never removed by the handle.
    pub fn shared(path: PathBuf) -> Self {
        Self {
            path,
            temporary: false,
            _held: None,
            bytes_moved: 0,
            digest: None,
        }
    }

    /// A private link to an open file (`path` leads to `file`'s descriptor): the link goes on
    /// drop, and the file is closed.
    pub fn held(path: PathBuf, file: std::fs::File) -> Self {
        Self {
            path,
            temporary: true,
            _held: Some(file),
            bytes_moved: 0,
            digest: None,
        }
    }

    /// A private copy, removed on drop.
    pub fn copy(path: PathBuf, bytes_moved: u64) -> Self {
        Self {
            path,
            temporary: true,
            _held: None,
            bytes_moved,
            digest: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
