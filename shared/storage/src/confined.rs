//! Opening inputs and writing outputs inside the configured roots at the moment of use, never
//! trusting a path that was checked earlier or that a message carried.
//!
//! Each root is opened as a directory handle and every open, create and rename happens relative
//! to it (`cap-std`): symlinks are followed only while they stay inside the root, so a link, or a
//! directory swapped for a link after the job was accepted, cannot lead out. Inputs are opened
//! once (non-blocking, so a FIFO cannot hang the service) and checked as regular, non-empty
//! files with a single hard link (unless `storage.allow_hard_links`) through the open handle:
//! a hard link inside a root may be another name of a file outside it. ffmpeg then reads that very file through `/proc/<pid>/fd/<n>`.
//! Outputs are written to a temporary file with a random name created with `O_EXCL` (which never
//! follows a symlink) in the output's directory; before the final rename the name is checked to
//! still be the file that was written.

use super::config::StorageConfig;
use super::roots::{PathError, hard_links, normalize, to_path};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions, OpenOptionsExt};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The roots of one kind (inputs or outputs), opened as directory handles.
pub struct Roots {
    what: &'static str,
    roots: Vec<Root>,
    /// Whether an input with more than one hard link is opened.
    allow_hard_links: bool,
}

struct Root {
    lexical: PathBuf,
    canonical: PathBuf,
    dir: Dir,
}

impl Roots {
    /// The input roots of `cfg`, opened under its policy for hard-linked inputs.
    pub fn inputs(cfg: &StorageConfig) -> Roots {
        Roots {
            allow_hard_links: cfg.allow_hard_links,
            ..Roots::open("input", &cfg.input_roots)
        }
    }

    /// Opens every root; a root that cannot be opened is left out (and named in the log).
    /// Inputs with more than one hard link are refused (`Roots::inputs` follows the config).
    pub fn open(what: &'static str, paths: &[PathBuf]) -> Roots {
        let roots = paths
            .iter()
            .filter_map(|p| {
                let opened = Dir::open_ambient_dir(p, ambient_authority())
                    .and_then(|dir| Ok((std::fs::canonicalize(p)?, dir)));
                match opened {
                    Ok((canonical, dir)) => Some(Root {
                        lexical: normalize(p),
                        canonical,
                        dir,
                    }),
                    Err(e) => {
                        tracing::warn!(root = %p.display(), error = %e, "root cannot be opened");
                        None
                    }
                }
            })
            .collect();
        Roots {
            what,
            roots,
            allow_hard_links: false,
        }
    }

    /// Which root holds `uri`, and the path relative to it.
    fn locate(&self, uri: &str) -> Result<(&Root, PathBuf, String), PathError> {
        let what = self.what;
        if self.roots.is_empty() {
            return Err(PathError::NoRoots { what });
        }
        let lexical = normalize(&to_path(what, uri)?);
        let shown = lexical.display().to_string();
        for root in &self.roots {
            for base in [&root.canonical, &root.lexical] {
                if let Ok(rel) = lexical.strip_prefix(base) {
                    return Ok((root, rel.to_path_buf(), shown));
                }
            }
        }
        Err(PathError::OutsideRoots { what, path: shown })
    }

    /// Opens the input file `uri` names, inside the roots.
    pub fn open_input(&self, uri: &str) -> Result<File, PathError> {
        let (root, rel, shown) = self.locate(uri)?;
        if rel.as_os_str().is_empty() {
            return Err(PathError::NotAFile(shown));
        }
        let mut opts = OpenOptions::new();
        opts.read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
        let file = match root.dir.open_with(&rel, &opts) {
            Ok(f) => f,
            Err(e) => match open_error(e, self.what, &shown) {
                // An absolute symlink (which a directory handle never follows) may still
                // point inside a root: open its target, again through that root's handle.
                PathError::OutsideRoots { .. } => {
                    self.open_canonical(&root.lexical.join(&rel), &opts, &shown)?
                }
                other => return Err(other),
            },
        };
        let file = file.into_std();
        let meta = file
            .metadata()
            .map_err(|_| PathError::Missing(shown.clone()))?;
        if !meta.is_file() {
            return Err(PathError::NotAFile(shown));
        }
        hard_links(&meta, self.allow_hard_links, &shown)?;
        if meta.len() == 0 {
            return Err(PathError::Empty(shown));
        }
        Ok(file)
    }

    fn open_canonical(
        &self,
        path: &Path,
        opts: &OpenOptions,
        shown: &str,
    ) -> Result<cap_std::fs::File, PathError> {
        let outside = || PathError::OutsideRoots {
            what: self.what,
            path: shown.into(),
        };
        let real = std::fs::canonicalize(path).map_err(|_| outside())?;
        let (root, rel) = self
            .roots
            .iter()
            .find_map(|r| Some((r, real.strip_prefix(&r.canonical).ok()?.to_path_buf())))
            .ok_or_else(outside)?;
        root.dir
            .open_with(&rel, opts)
            .map_err(|e| open_error(e, self.what, shown))
    }

    /// Creates a fresh temporary file beside the output `uri` names, inside the roots.
    pub fn create_output(&self, uri: &str) -> Result<OutputFile, PathError> {
        let (root, rel, shown) = self.locate(uri)?;
        let bad = |why: &str| PathError::BadOutput {
            path: shown.clone(),
            why: why.into(),
        };
        let name = rel
            .file_name()
            .ok_or_else(|| bad("has no file name"))?
            .to_owned();
        let dir = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => root.dir.try_clone(),
            Some(parent) => root.dir.open_dir(parent),
        }
        .map_err(|e| match open_error(e, self.what, &shown) {
            PathError::Missing(_) => bad("its directory does not exist"),
            other => other,
        })?;
        if dir.symlink_metadata(&name).is_ok_and(|m| m.is_dir()) {
            return Err(bad("is a directory"));
        }
        let short: String = name.to_string_lossy().chars().take(100).collect();
        let tmp = PathBuf::from(format!(
            ".{short}.ffleet-{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        let mut opts = OpenOptions::new();
        opts.write(true).read(true).create_new(true).mode(0o644);
        let file = dir
            .open_with(&tmp, &opts)
            .map_err(|e| bad(&format!("cannot create a temporary file beside it: {e}")))?
            .into_std();
        Ok(OutputFile {
            dir,
            tmp,
            name: PathBuf::from(name),
            shown,
            file,
            done: false,
        })
    }
}

impl Roots {
    /// Removes the output `uri` names if it is still the file `placed` (a job that was
    /// cancelled while its output went into place): whatever else has taken the name since
    /// stays. Returns whether it removed the file.
    pub fn withdraw_output(&self, uri: &str, placed: Placed) -> Result<bool, PathError> {
        let (root, rel, shown) = self.locate(uri)?;
        let name = rel.file_name().ok_or_else(|| PathError::BadOutput {
            path: shown.clone(),
            why: "has no file name".into(),
        })?;
        let dir = match rel.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => root.dir.try_clone(),
            Some(parent) => root.dir.open_dir(parent),
        }
        .map_err(|e| open_error(e, self.what, &shown))?;
        let ours = dir
            .symlink_metadata(name)
            .is_ok_and(|m| m.is_file() && m.dev() == placed.dev && m.ino() == placed.ino);
        if !ours {
            return Ok(false);
        }
        dir.remove_file(name)
            .map_err(|_| PathError::Missing(shown))?;
        Ok(true)
    }
}

/// Whether `e` says the path led out of the root, else that it does not exist.
fn open_error(e: io::Error, what: &'static str, shown: &str) -> PathError {
    // cap-std reports a path that would leave its directory as "... outside of the filesystem";
    // anything else that stops the open means there is no such file for us.
    if e.kind() != io::ErrorKind::NotFound && e.to_string().contains("outside") {
        PathError::OutsideRoots {
            what,
            path: shown.into(),
        }
    } else {
        PathError::Missing(shown.into())
    }
}

/// A path ffmpeg can open that reaches exactly `file`, whatever happens to its name meanwhile.
pub fn fd_path(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ))
}

/// A temporary output beside its final name; removed on drop unless committed.
pub struct OutputFile {
    dir: Dir,
    tmp: PathBuf,
    name: PathBuf,
    shown: String,
    file: File,
    done: bool,
}

impl OutputFile {
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The final path, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Moves the written file onto its final name, if its temporary name still is that file.
    /// Returns which file it placed, so that it alone can be withdrawn later.
    pub fn commit(mut self) -> io::Result<Placed> {
        self.file.sync_all()?;
        let ours = self.file.metadata()?;
        let there = self.dir.symlink_metadata(&self.tmp)?;
        use std::os::unix::fs::MetadataExt as _;
        if there.dev() != ours.dev() || there.ino() != ours.ino() || !there.is_file() {
            return Err(io::Error::other(
                "the temporary output was replaced before it could be moved into place",
            ));
        }
        self.dir.rename(&self.tmp, &self.dir, &self.name)?;
        self.done = true;
        Ok(Placed {
            dev: ours.dev(),
            ino: ours.ino(),
        })
    }
}

/// The file an `OutputFile` put in place (device and inode): `Roots::withdraw_output` removes
/// the output's name only while it is still this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    dev: u64,
    ino: u64,
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.dir.remove_file(&self.tmp);
        }
    }
}

/// A name for an opened input in private directory `dir`, ending in `name` (demuxers use the
/// extension as a hint), that reaches exactly `file`: ffmpeg opens the link, the link leads to
/// the open descriptor. The returned handle keeps the file open and removes the link on drop.
pub fn open_input_link(file: File, dir: &Path, name: &str) -> io::Result<super::Local> {
    let link = dir.join(format!(
        "{}-{}",
        uuid::Uuid::new_v4().simple(),
        super::keys::sanitize_name(name)
    ));
    std::os::unix::fs::symlink(fd_path(&file), &link)?;
    Ok(super::Local::held(link, file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn links_out_of_a_root_are_refused_and_outputs_land_only_inside() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        let outside = base.path().join("secret.txt");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(&outside, b"secret").unwrap();
        std::fs::write(root.join("sub/in.mp4"), b"media").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link.mp4")).unwrap();
        std::os::unix::fs::symlink(base.path(), root.join("up")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/in.mp4"), root.join("inner.mp4")).unwrap();
        let roots = Roots::open("input", std::slice::from_ref(&root));
        let ok = roots.open_input(&root.join("sub/in.mp4").display().to_string());
        assert!(ok.is_ok());
        assert!(
            roots
                .open_input(&root.join("inner.mp4").display().to_string())
                .is_ok()
        );
        for bad in ["link.mp4", "up/secret.txt", "../secret.txt", "sub"] {
            let r = roots.open_input(&root.join(bad).display().to_string());
            assert!(r.is_err(), "{bad}: {r:?}");
        }
        let outs = Roots::open("output", std::slice::from_ref(&root));
        // A directory swapped for a link out of the root: no file is created outside.
        assert!(
            outs.create_output(&root.join("up/o.mp4").display().to_string())
                .is_err()
        );
        let o = outs
            .create_output(&root.join("sub/o.mp4").display().to_string())
            .unwrap();
        o.file().write_all(b"video").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(root.join("sub/o.mp4")).unwrap(), b"video");
        // A final name that is a link to a file outside is replaced, not followed.
        std::os::unix::fs::symlink(&outside, root.join("sub/victim.mp4")).unwrap();
        let o = outs
            .create_output(&root.join("sub/victim.mp4").display().to_string())
            .unwrap();
        o.file().write_all(b"video").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"secret");
        // A dropped output leaves nothing behind.
        let o = outs
            .create_output(&root.join("sub/gone.mp4").display().to_string())
            .unwrap();
        drop(o);
        let names: Vec<_> = std::fs::read_dir(root.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    }

    #[test]
    fn hard_linked_inputs_are_refused_unless_allowed() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = base.path().join("secret.mp4");
        std::fs::write(&outside, b"secret").unwrap();
        std::fs::hard_link(&outside, root.join("linked.mp4")).unwrap();
        std::fs::write(root.join("single.mp4"), b"media").unwrap();
        let linked = root.join("linked.mp4").display().to_string();
        let single = root.join("single.mp4").display().to_string();
        let mut cfg = StorageConfig {
            input_roots: vec![root.clone()],
            ..StorageConfig::default()
        };

        let refused = Roots::inputs(&cfg).open_input(&linked).unwrap_err();
        assert!(
            matches!(refused, PathError::HardLinked { links: 2, .. }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("storage.allow_hard_links"));
        assert!(
            Roots::open("input", std::slice::from_ref(&root))
                .open_input(&linked)
                .is_err()
        );
        assert!(Roots::inputs(&cfg).open_input(&single).is_ok());

        cfg.allow_hard_links = true;
        let mut read = String::new();
        std::io::Read::read_to_string(
            &mut Roots::inputs(&cfg).open_input(&linked).unwrap(),
            &mut read,
        )
        .unwrap();
        assert_eq!(read, "secret");
        assert!(Roots::inputs(&cfg).open_input(&single).is_ok());
    }
}
