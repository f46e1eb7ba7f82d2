//! Checks that need configuration but no media: profile, quality override, input and output
//! locations. Failures here end the job before anything is read.

use crate::inspect;
use ffleet_runtime::JobId;
use ffleet_runtime::config::Config;
use ffleet_runtime::config::StorageBackend;
use ffleet_runtime::messages::JobRequest;
use ffleet_runtime::messages::records::Container;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::storage::{self, MediaUri, PathError};
use std::path::PathBuf;

/// Where the source is.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A file inside this splitter's input roots.
    File(PathBuf),
    /// An object in the media bucket (fetched when the job is split).
    Object(String),
}

/// Where the output goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A path inside the merger's output roots (checked against this machine's roots here).
    File(PathBuf),
    /// An object in the media bucket.
    Object(String),
}

impl Input {
    pub fn shown(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Object(k) => MediaUri::object_uri(k),
        }
    }
}

/// A request that passed every static check.
#[derive(Debug, Clone)]
pub struct Validated {
    pub profile: String,
    pub input: Input,
    pub output: Output,
    pub container: Container,
}

pub(crate) fn path_failure(e: PathError, input: bool) -> Failure {
    let reason = match &e {
        PathError::Missing(_) | PathError::NotAFile(_) => Reason::InputMissing,
        PathError::Empty(_) => Reason::InputEmpty,
        _ if input => Reason::InputNotAllowed,
        _ => Reason::OutputNotAllowed,
    };
    Failure::new(reason, e.to_string())
}

#[tracing::instrument(name = "validate", skip_all, err(Display, level = "warn"), fields(ffleet.service = crate::SERVICE))]
pub fn validate(cfg: &Config, req: &JobRequest) -> Result<Validated, Failure> {
    let profile = req
        .profile
        .clone()
        .unwrap_or_else(|| cfg.default_profile.clone());
    let Some(p) = cfg.profile(&profile) else {
        return Err(Failure::new(
            Reason::UnknownProfile,
            format!(
                "unknown profile {profile:?}; available: {}",
                cfg.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    };
    p.check_quality(&profile, req.overrides.quality)
        .map_err(|e| Failure::new(Reason::OverrideOutOfRange, e.to_string()))?;

    let (input, output) = media_of(cfg, req)?;
    let container = container_of(&output)?;
    let same = match (&input, &output) {
        (Input::File(i), Output::File(o)) => i == o,
        (Input::Object(i), Output::Object(o)) => i == o,
        _ => false,
    };
    if same {
        return Err(Failure::new(
            Reason::OutputNotAllowed,
            "output would overwrite the input",
        ));
    }
    Ok(Validated {
        profile,
        input,
        output,
        container,
    })
}

/// The request's input and output, resolved inside this fleet's roots or bucket.
fn media_of(cfg: &Config, req: &JobRequest) -> Result<(Input, Output), Failure> {
    let object_store = cfg.storage.backend == StorageBackend::ObjectStore;
    let storage = cfg.storage.for_job(&req.job_id);
    // A tenant's media is files under its own directory of each tenant root: the media bucket
    // is one namespace every writer shares (object names are one token no permission splits).
    let tenant_refuses = |uri: &str, reason: Reason| match req.job_id.tenant() {
        Some(t) if uri.starts_with(storage::OBJECT_SCHEME) => Err(Failure::new(
            reason,
            format!(
                "tenant {t} may not use the media bucket ({uri:?}): name files under its \
                 directory of storage.tenant_roots (<tenant root>/{t}) instead"
            ),
        )),
        _ => Ok(()),
    };
    tenant_refuses(&req.input, Reason::InputNotAllowed)?;
    tenant_refuses(&req.output, Reason::OutputNotAllowed)?;
    let no_store = |what: &str| {
        Failure::new(
            if what == "input" {
                Reason::InputNotAllowed
            } else {
                Reason::OutputNotAllowed
            },
            format!("object-store {what}s need `storage.backend = \"object-store\"` on this fleet"),
        )
    };
    // A retry reads the upload of the job it runs again (`reuse::check` holds it to that
    // job's own input), not one of its own.
    let uploaded_by = match (
        &req.retry_of,
        req.input.strip_prefix(storage::OBJECT_SCHEME),
    ) {
        (Some(_), Some(key)) => storage::keys::input_job_of(key).and_then(|j| JobId::new(j).ok()),
        _ => None,
    };
    let input = match MediaUri::input(&req.input, uploaded_by.as_ref().unwrap_or(&req.job_id))
        .map_err(|e| Failure::new(Reason::InputNotAllowed, e.to_string()))?
    {
        MediaUri::Object(_) if !object_store => return Err(no_store("input")),
        MediaUri::Object(key) => Input::Object(key),
        MediaUri::File(uri) => Input::File(
            storage::resolve_input(&uri, &storage.input_roots, storage.allow_hard_links)
                .map_err(|e| path_failure(e, true))?,
        ),
    };
    let output = match MediaUri::output(&req.output)
        .map_err(|e| Failure::new(Reason::OutputNotAllowed, e.to_string()))?
    {
        MediaUri::Object(_) if !object_store => return Err(no_store("output")),
        MediaUri::Object(key) => Output::Object(key),
        MediaUri::File(uri) => Output::File(
            storage::resolve_output(&uri, &storage.output_roots)
                .map_err(|e| path_failure(e, false))?,
        ),
    };
    Ok((input, output))
}

/// The output container, from the output's extension.
fn container_of(output: &Output) -> Result<Container, Failure> {
    let (ext, shown) = match output {
        Output::File(p) => (
            p.extension()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
            p.display().to_string(),
        ),
        Output::Object(k) => (
            k.rsplit_once('.')
                .map(|(_, e)| e.to_owned())
                .filter(|e| !e.contains('/'))
                .unwrap_or_default(),
            MediaUri::object_uri(k),
        ),
    };
    Container::from_extension(&ext).ok_or_else(|| {
        Failure::new(
            Reason::OutputNotAllowed,
            format!("output {shown} must end in .mp4, .m4v, .mov or .mkv"),
        )
    })
}

/// Refuses at submit what no variant of the profile could encode, instead of failing every
/// attempt later: pictures too small to hold one chroma block of the output format.
pub(crate) fn convertible(
    config: &Config,
    profile: &str,
    src: &inspect::Inspected,
) -> Result<(), Failure> {
    let picture = src.info.video.picture();
    let Some(p) = config.profile(profile) else {
        return Ok(());
    };
    for (name, variant) in &p.variants {
        if picture.conversion(variant.pix_fmt()).is_none() {
            return Err(Failure::new(
                Reason::UnsupportedInput,
                format!(
                    "a {}x{} video cannot be encoded by profile {profile:?} ({name}: pixel format {})",
                    picture.width,
                    picture.height,
                    variant.pix_fmt().unwrap_or("of the source")
                ),
            ));
        }
    }
    Ok(())
}
