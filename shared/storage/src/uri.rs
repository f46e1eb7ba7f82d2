//! Media URIs in job requests: `file://` paths (and bare absolute paths) inside the splitter's
//! and merger's roots, or `object:<key>` naming an object in the media bucket, for submitters
//! that share no filesystem with the fleet (`ffleet submit --upload`).
//!
//! Object keys under `jobs/` are the fleet's own scratch: a request may name only its own job's
//! uploaded input there (`jobs/<its job>/in/...`), never another job's media, and no output.

use super::check_key;
use super::keys;
use ffleet_protocol::JobId;

/// The scheme of object-store media URIs.
pub const OBJECT_SCHEME: &str = "object:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaUri {
    /// A path to resolve against this machine's roots.
    File(String),
    /// An object in the media bucket.
    Object(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UriError {
    #[error("object key {0:?} is not valid (relative, `/`-separated, [A-Za-z0-9._-])")]
    BadKey(String),
    #[error("object key {0:?} belongs to another job's media")]
    OtherJob(String),
    #[error("object key {0:?} is in the fleet's scratch space (jobs/), which outputs may not use")]
    Scratch(String),
}

impl MediaUri {
    /// Splits a request's input URI, refusing object keys of other jobs.
    pub fn input(uri: &str, job: &JobId) -> Result<MediaUri, UriError> {
        match uri.strip_prefix(OBJECT_SCHEME) {
            None => Ok(MediaUri::File(uri.to_owned())),
            Some(key) => {
                check(key)?;
                if key.starts_with(keys::SCRATCH) && !key.starts_with(&keys::job_input_prefix(job))
                {
                    return Err(UriError::OtherJob(shown(key)));
                }
                Ok(MediaUri::Object(key.to_owned()))
            }
        }
    }

    /// Splits a request's output URI, refusing object keys in the scratch space.
    pub fn output(uri: &str) -> Result<MediaUri, UriError> {
        match uri.strip_prefix(OBJECT_SCHEME) {
            None => Ok(MediaUri::File(uri.to_owned())),
            Some(key) => {
                check(key)?;
                if key.starts_with(keys::SCRATCH) {
                    return Err(UriError::Scratch(shown(key)));
                }
                Ok(MediaUri::Object(key.to_owned()))
            }
        }
    }

    /// The URI naming object `key`.
    pub fn object_uri(key: &str) -> String {
        format!("{OBJECT_SCHEME}{key}")
    }
}

fn shown(key: &str) -> String {
    key.chars().take(200).collect()
}

fn check(key: &str) -> Result<(), UriError> {
    check_key(key).map_err(|_| UriError::BadKey(shown(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_uris_stay_out_of_other_jobs_media() {
        let job = JobId::new("j1").unwrap();
        assert_eq!(
            MediaUri::input("object:up/a.mp4", &job),
            Ok(MediaUri::Object("up/a.mp4".into()))
        );
        assert_eq!(
            MediaUri::input("object:jobs/j1/in/a.mp4", &job),
            Ok(MediaUri::Object("jobs/j1/in/a.mp4".into()))
        );
        assert!(matches!(
            MediaUri::input("object:jobs/j2/src/c00000.nut", &job),
            Err(UriError::OtherJob(_))
        ));
        assert!(matches!(
            MediaUri::input("object:jobs/j1/src/c00000.nut", &job),
            Err(UriError::OtherJob(_))
        ));
        for bad in [
            "object:",
            "object:../x",
            "object:/abs",
            "object:a//b",
            "object:a b",
        ] {
            assert!(
                matches!(MediaUri::input(bad, &job), Err(UriError::BadKey(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            MediaUri::output("object:jobs/j1/out.mp4"),
            Err(UriError::Scratch(_))
        ));
        assert_eq!(
            MediaUri::output("file:///data/o.mp4"),
            Ok(MediaUri::File("file:///data/o.mp4".into()))
        );
    }
}
