//! Checks that need configuration but no media: profile, quality override, input and output
//! locations. Failures here end the job before anything is read.

use ffleet_shared::config::Config;
use ffleet_shared::messages::JobRequest;
use ffleet_shared::messages::records::Container;
use ffleet_shared::reason::{Failure, Reason};
use ffleet_shared::storage::{self, PathError};
use std::path::PathBuf;

/// A request that passed every static check.
#[derive(Debug, Clone)]
pub struct Validated {
    pub profile: String,
    pub input: PathBuf,
    pub output: PathBuf,
    pub container: Container,
}

fn path_failure(e: PathError, input: bool) -> Failure {
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

    let input = storage::resolve_input(&req.input, &cfg.storage.input_roots)
        .map_err(|e| path_failure(e, true))?;
    let output = storage::resolve_output(&req.output, &cfg.storage.output_roots)
        .map_err(|e| path_failure(e, false))?;
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    let container = Container::from_extension(&ext).ok_or_else(|| {
        Failure::new(
            Reason::OutputNotAllowed,
            format!(
                "output {} must end in .mp4, .m4v, .mov or .mkv",
                output.display()
            ),
        )
    })?;
    if output == input {
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
