//! Resolving the input and output URIs of a job into local paths inside the configured roots.
//!
//! Accepted forms: `file:///abs/path` (percent-decoded) and `/abs/path`. Everything else,
//! including relative paths and other schemes (`http:`, `concat:`, `pipe:` ...), is refused.
//! Roots are checked twice: lexically (so `..` cannot climb out) and after symlinks are followed
//! (so a link inside a root cannot point outside it).

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PathError {
    #[error("{what} {uri:?}: only file:// URIs and absolute paths are accepted")]
    Scheme { what: &'static str, uri: String },
    #[error("{what} {uri:?} is not an absolute path")]
    Relative { what: &'static str, uri: String },
    #[error("{what} {path} is outside the allowed {what} roots")]
    OutsideRoots { what: &'static str, path: String },
    #[error("no {what} roots are configured (storage.{what}_roots)")]
    NoRoots { what: &'static str },
    #[error("input {0} does not exist")]
    Missing(String),
    #[error("input {0} is not a regular file")]
    NotAFile(String),
    #[error(
        "input {path} has {links} hard links, and another of its names may lie outside the input \
         roots (storage.allow_hard_links allows it)"
    )]
    HardLinked { path: String, links: u64 },
    #[error("input {0} is empty")]
    Empty(String),
    #[error("output {path}: {why}")]
    BadOutput { path: String, why: String },
}

pub(super) fn to_path(what: &'static str, uri: &str) -> Result<PathBuf, PathError> {
    let path = if let Some(rest) = uri.strip_prefix("file:") {
        if !rest.starts_with("//") {
            return Err(PathError::Scheme {
                what,
                uri: uri.into(),
            });
        }
        let url = url::Url::parse(uri).map_err(|_| PathError::Scheme {
            what,
            uri: uri.into(),
        })?;
        match url.host_str() {
            None | Some("") | Some("localhost") => {}
            Some(_) => {
                return Err(PathError::Scheme {
                    what,
                    uri: uri.into(),
                });
            }
        }
        url.to_file_path().map_err(|_| PathError::Scheme {
            what,
            uri: uri.into(),
        })?
    } else if uri.starts_with('/') {
        PathBuf::from(uri)
    } else if uri
        .split('/')
        .next()
        .is_some_and(|first| first.contains(':'))
    {
        return Err(PathError::Scheme {
            what,
            uri: uri.into(),
        });
    } else {
        return Err(PathError::Relative {
            what,
            uri: uri.into(),
        });
    };
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(PathError::Scheme {
            what,
            uri: uri.into(),
        });
    }
    Ok(path)
}

/// Removes `.` and resolves `..` without touching the file system.
pub(super) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn within(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(normalize(r)))
        || roots.iter().any(|r| {
            std::fs::canonicalize(r)
                .map(|c| path.starts_with(c))
                .unwrap_or(false)
        })
}

fn within_canonical(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| {
        std::fs::canonicalize(r)
            .map(|c| path.starts_with(c))
            .unwrap_or(false)
    })
}

/// Resolves an input URI to an existing, non-empty regular file inside `roots`, with a single
/// hard link unless `allow_hard_links`.
pub fn resolve_input(
    uri: &str,
    roots: &[PathBuf],
    allow_hard_links: bool,
) -> Result<PathBuf, PathError> {
    const WHAT: &str = "input";
    if roots.is_empty() {
        return Err(PathError::NoRoots { what: WHAT });
    }
    let lexical = normalize(&to_path(WHAT, uri)?);
    let shown = lexical.display().to_string();
    if !within(&lexical, roots) {
        return Err(PathError::OutsideRoots {
            what: WHAT,
            path: shown,
        });
    }
    let real = std::fs::canonicalize(&lexical).map_err(|_| PathError::Missing(shown.clone()))?;
    if !within_canonical(&real, roots) {
        return Err(PathError::OutsideRoots {
            what: WHAT,
            path: shown,
        });
    }
    let meta = std::fs::metadata(&real).map_err(|_| PathError::Missing(shown.clone()))?;
    if !meta.is_file() {
        return Err(PathError::NotAFile(shown));
    }
    hard_links(&meta, allow_hard_links, &shown)?;
    if meta.len() == 0 {
        return Err(PathError::Empty(shown));
    }
    Ok(real)
}

/// Refuses a file with more than one hard link unless `allowed`. A hard link needs no access to
/// the directory its target lies in, so one planted inside a root can name a file outside every
/// root; symlinks are resolved and checked, but a hard link is the file itself and cannot be.
pub(super) fn hard_links(
    meta: &std::fs::Metadata,
    allowed: bool,
    shown: &str,
) -> Result<(), PathError> {
    use std::os::unix::fs::MetadataExt;
    match meta.nlink() {
        links if links > 1 && !allowed => Err(PathError::HardLinked {
            path: shown.into(),
            links,
        }),
        _ => Ok(()),
    }
}

/// Resolves an output URI to a path whose directory exists inside `roots`. The file itself is
/// written later, atomically.
pub fn resolve_output(uri: &str, roots: &[PathBuf]) -> Result<PathBuf, PathError> {
    const WHAT: &str = "output";
    if roots.is_empty() {
        return Err(PathError::NoRoots { what: WHAT });
    }
    let lexical = normalize(&to_path(WHAT, uri)?);
    let shown = lexical.display().to_string();
    let bad = |why: &str| PathError::BadOutput {
        path: shown.clone(),
        why: why.into(),
    };
    let name = lexical
        .file_name()
        .ok_or_else(|| bad("has no file name"))?
        .to_owned();
    if !within(&lexical, roots) {
        return Err(PathError::OutsideRoots {
            what: WHAT,
            path: shown,
        });
    }
    let parent = lexical.parent().ok_or_else(|| bad("has no directory"))?;
    let real_parent =
        std::fs::canonicalize(parent).map_err(|_| bad("its directory does not exist"))?;
    let real = real_parent.join(&name);
    if !within_canonical(&real, roots) {
        return Err(PathError::OutsideRoots {
            what: WHAT,
            path: shown,
        });
    }
    if real.is_dir() {
        return Err(bad("is a directory"));
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_resolve_only_inside_roots() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = vec![root.path().to_path_buf()];
        let f = root.path().join("a b.mp4");
        std::fs::write(&f, b"data").unwrap();
        std::fs::write(outside.path().join("secret.mp4"), b"data").unwrap();
        std::fs::write(root.path().join("empty.mp4"), b"").unwrap();

        let uri = url::Url::from_file_path(&f).unwrap().to_string();
        assert!(uri.contains("%20"));
        assert_eq!(
            resolve_input(&uri, &roots, false).unwrap(),
            f.canonicalize().unwrap()
        );
        assert_eq!(
            resolve_input(f.to_str().unwrap(), &roots, false).unwrap(),
            f.canonicalize().unwrap()
        );

        let climb = format!(
            "{}/../{}/secret.mp4",
            root.path().display(),
            outside.path().file_name().unwrap().to_str().unwrap()
        );
        assert!(matches!(
            resolve_input(&climb, &roots, false),
            Err(PathError::OutsideRoots { .. })
        ));
        let link = root.path().join("link.mp4");
        std::os::unix::fs::symlink(outside.path().join("secret.mp4"), &link).unwrap();
        assert!(matches!(
            resolve_input(link.to_str().unwrap(), &roots, false),
            Err(PathError::OutsideRoots { .. })
        ));

        for scheme in [
            "http://example.com/a.mp4",
            "concat:/a|/b",
            "pipe:0",
            "file:a.mp4",
            "file://host/a.mp4",
        ] {
            assert!(
                matches!(
                    resolve_input(scheme, &roots, false),
                    Err(PathError::Scheme { .. })
                ),
                "{scheme}"
            );
        }
        assert!(matches!(
            resolve_input("a.mp4", &roots, false),
            Err(PathError::Relative { .. })
        ));
        let missing = root.path().join("missing.mp4");
        assert!(matches!(
            resolve_input(missing.to_str().unwrap(), &roots, false),
            Err(PathError::Missing(_))
        ));
        let empty = root.path().join("empty.mp4");
        assert!(matches!(
            resolve_input(empty.to_str().unwrap(), &roots, false),
            Err(PathError::Empty(_))
        ));
        assert!(matches!(
            resolve_input(root.path().to_str().unwrap(), &roots, false),
            Err(PathError::NotAFile(_))
        ));
        assert!(matches!(
            resolve_input(f.to_str().unwrap(), &[], false),
            Err(PathError::NoRoots { .. })
        ));
    }

    #[test]
    fn hard_linked_inputs_resolve_only_when_allowed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let roots = vec![root.path().to_path_buf()];
        let secret = outside.path().join("secret.mp4");
        std::fs::write(&secret, b"secret").unwrap();
        let linked = root.path().join("linked.mp4");
        std::fs::hard_link(&secret, &linked).unwrap();
        let single = root.path().join("single.mp4");
        std::fs::write(&single, b"media").unwrap();

        assert!(matches!(
            resolve_input(linked.to_str().unwrap(), &roots, false),
            Err(PathError::HardLinked { links: 2, .. })
        ));
        assert_eq!(
            resolve_input(linked.to_str().unwrap(), &roots, true).unwrap(),
            linked.canonicalize().unwrap()
        );
        for allowed in [false, true] {
            assert!(resolve_input(single.to_str().unwrap(), &roots, allowed).is_ok());
        }
    }

    #[test]
    fn outputs_must_land_in_an_existing_directory_inside_roots() {
        let root = tempfile::tempdir().unwrap();
        let roots = vec![root.path().to_path_buf()];
        let ok = root.path().join("out.mp4");
        assert_eq!(
            resolve_output(ok.to_str().unwrap(), &roots).unwrap(),
            root.path().canonicalize().unwrap().join("out.mp4")
        );
        let up = format!("{}/../out.mp4", root.path().display());
        assert!(matches!(
            resolve_output(&up, &roots),
            Err(PathError::OutsideRoots { .. })
        ));
        let nodir = root.path().join("nope/out.mp4");
        assert!(matches!(
            resolve_output(nodir.to_str().unwrap(), &roots),
            Err(PathError::BadOutput { .. })
        ));
        assert!(matches!(
            resolve_output(root.path().to_str().unwrap(), &roots),
            Err(PathError::BadOutput { .. } | PathError::OutsideRoots { .. })
        ));
    }
}
