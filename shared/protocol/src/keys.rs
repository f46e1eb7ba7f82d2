//! The key layout of media storage (bucket or scratch directory). Every key ffleet writes, and
//! every prefix it checks a key against, is made here:
//!
//! - `jobs/<job>/in/<name>`: a job's uploaded source (the submitter's)
//! - `jobs/<job>/copy/<name>`: a file source the splitter copied for nodes without the file
//! - `jobs/<job>/src/<cut>`: the splitter's cuts
//! - `jobs/<job>/enc/<unit>.a<attempt>.<ext>`: each attempt's encoded unit (attempts never
//!   overwrite each other)
//! - `outputs/<job>/<name>`: outputs kept for `submit --upload --wait` to fetch
//!
//! Everything under `jobs/<job>` is the job's scratch and goes when the job ends. All of it but
//! the submitter's upload is the fleet's own (`fleet_made`), kept on the object-store backend in
//! a bucket no client may touch.

use crate::JobId;
use std::fmt::Display;

/// The scratch space: requests may name keys here only as their own job's input.
pub const SCRATCH: &str = "jobs/";

/// Within a job's scratch: its inputs.
const INPUTS: &str = "/in/";

/// Everything belonging to one job (removed when it ends).
pub fn job_prefix(job: &JobId) -> String {
    format!("{SCRATCH}{job}")
}

/// The job whose scratch holds `key` (`jobs/<job>/...`, or the prefix `jobs/<job>` itself).
pub fn job_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(SCRATCH)?;
    let job = rest.split('/').next()?;
    JobId::new(job).ok().map(|_| job)
}

/// The job whose own input `key` is (`jobs/<job>/in/...`).
pub fn input_job_of(key: &str) -> Option<&str> {
    let job = job_of(key)?;
    key[SCRATCH.len() + job.len()..]
        .starts_with(INPUTS)
        .then_some(job)
}

/// Whether the fleet wrote `key` (a cut, an encoded unit, a copied source, or a job's whole
/// scratch prefix), rather than a client (an upload, an output, another system's object).
pub fn fleet_made(key: &str) -> bool {
    job_of(key).is_some() && input_job_of(key).is_none()
}

/// The prefix of the splitter's copies of a job's sources.
pub fn copies_prefix(job: &JobId) -> String {
    format!("{}/copy", job_prefix(job))
}

/// Where the splitter stores a copy of a job's file source, for nodes that do not share the file.
pub fn source_copy(job: &JobId, name: &str) -> String {
    format!("{}/{}", copies_prefix(job), sanitize_name(name))
}

/// Where a job's uploaded source lives.
pub fn job_input(job: &JobId, name: &str) -> String {
    format!("{}{}", job_input_prefix(job), sanitize_name(name))
}

/// The prefix of a job's own inputs, the only scratch keys its request may name.
pub fn job_input_prefix(job: &JobId) -> String {
    format!("{}{INPUTS}", job_prefix(job))
}

/// The prefix the splitter stages and stores a job's cuts under.
pub fn cuts_prefix(job: &JobId) -> String {
    format!("{}/src", job_prefix(job))
}

/// One cut, named `name` by the splitter.
pub fn cut(job: &JobId, name: &str) -> String {
    format!("{}/{name}", cuts_prefix(job))
}

/// One attempt's encoded unit.
pub fn result(job: &JobId, unit: impl Display, attempt: u32, ext: &str) -> String {
    format!("{}/enc/{unit}.a{attempt}.{ext}", job_prefix(job))
}

/// An output stored for the submitter to fetch.
pub fn kept_output(job: &JobId, name: &str) -> String {
    format!("{OUTPUTS}{job}/{}", sanitize_name(name))
}

/// Where kept outputs live.
const OUTPUTS: &str = "outputs/";

/// The job whose kept output `key` is (`outputs/<job>/...`).
pub fn kept_output_job(key: &str) -> Option<&str> {
    let job = key.strip_prefix(OUTPUTS)?.split('/').next()?;
    JobId::new(job).ok().map(|_| job)
}

/// A file name reduced to key characters, keeping its extension (demuxers probe by it).
pub fn sanitize_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    let s: String = s
        .chars()
        .rev()
        .take(120)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if s.is_empty() { "media".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_of_a_key_is_its_scratch_owner() {
        let job = JobId::new("j-1").unwrap();
        assert_eq!(job_of(&job_prefix(&job)), Some("j-1"));
        assert_eq!(job_of(&result(&job, "v00001", 2, "nut")), Some("j-1"));
        assert_eq!(job_of(&job_input(&job, "a b.mp4")), Some("j-1"));
        assert_eq!(job_of(&kept_output(&job, "out.mp4")), None);
        assert_eq!(
            kept_output_job(&kept_output(&job, "out.mp4")),
            Some(job.as_str())
        );
        assert_eq!(kept_output_job(&cut(&job, "c.nut")), None);
        assert_eq!(job_of("jobs/"), None);
        assert_eq!(job_of("jobs/bad.id/x"), None);
        assert_eq!(input_job_of(&job_input(&job, "x.mp4")), Some("j-1"));
        assert_eq!(input_job_of(&cut(&job, "c00000.nut")), None);
        assert_eq!(input_job_of(&source_copy(&job, "a.mp4")), None);
    }

    #[test]
    fn only_what_the_fleet_writes_is_fleet_made() {
        let job = JobId::new("acme=j-1").unwrap();
        for key in [
            cut(&job, "v00001.nut"),
            result(&job, "v00001", 1, "nut"),
            source_copy(&job, "a b.mp4"),
            job_prefix(&job),
        ] {
            assert!(fleet_made(&key), "{key}");
        }
        for key in [
            job_input(&job, "a.mp4"),
            kept_output(&job, "out.mp4"),
            "library/film.mov".to_owned(),
            "jobs/".to_owned(),
        ] {
            assert!(!fleet_made(&key), "{key}");
        }
    }
}
