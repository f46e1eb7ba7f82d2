//! What turns a claimed unit's local input into its encoded result. The encoder runs an ffmpeg
//! child (`Ffmpeg`, the only executor `run` uses); a program embedding the encoder library may
//! pass another to `run_with` (the control-plane benchmark passes one that does no media work).
//! Nothing in a job request or in configuration selects an executor.

use crate::encode::{self, EncodeError, Encoded, Unit};
use ffleet_runtime::config::Config;
use ffleet_runtime::media::progress::ProgressBlock;
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// Encodes one unit from `input` into `output`, reporting progress as it goes.
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn run(
        &self,
        cfg: &Config,
        unit: Unit<'_>,
        input: &Path,
        output: &Path,
        cancel: &CancellationToken,
        on_progress: &mut (dyn for<'p> FnMut(&'p ProgressBlock) + Send),
    ) -> Result<Encoded, EncodeError>;
}

/// The ffmpeg child with the profile's settings.
pub struct Ffmpeg;

#[async_trait::async_trait]
impl Executor for Ffmpeg {
    async fn run(
        &self,
        cfg: &Config,
        unit: Unit<'_>,
        input: &Path,
        output: &Path,
        cancel: &CancellationToken,
        on_progress: &mut (dyn for<'p> FnMut(&'p ProgressBlock) + Send),
    ) -> Result<Encoded, EncodeError> {
        encode::run(cfg, unit, input, output, cancel, |b| on_progress(b)).await
    }
}
