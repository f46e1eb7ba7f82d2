//! The merger's media work for one job whose units are all in: fetch them, concatenate, mux,
//! verify, store the output. `Ffmpeg` is what `run` uses; a program embedding the merger library
//! may pass another to `run_with` (the control-plane benchmark does, to measure the control
//! plane without media work). Nothing in a job request or in configuration selects it.

pub use crate::merge::Merged;
use crate::merge::{self, MergeError};
use ffleet_runtime::messages::JobRecord;
use ffleet_runtime::runtime::Ctx;

#[async_trait::async_trait]
pub trait Media: Send + Sync + 'static {
    /// Merges a job whose every unit is collected; returns what was written.
    async fn merge(&self, ctx: &Ctx, rec: &JobRecord) -> Result<Merged, MergeError>;

    /// Removes what `merge` put in place for a job that ended otherwise before it could complete
    /// (it failed while its output went into place).
    async fn withdraw(&self, _ctx: &Ctx, _rec: &JobRecord, _merged: &Merged) {}
}

/// One stream-copy ffmpeg run, then ffprobe verification.
pub struct Ffmpeg;

#[async_trait::async_trait]
impl Media for Ffmpeg {
    async fn merge(&self, ctx: &Ctx, rec: &JobRecord) -> Result<Merged, MergeError> {
        merge::merge(ctx, rec).await
    }

    async fn withdraw(&self, ctx: &Ctx, rec: &JobRecord, merged: &Merged) {
        merge::withdraw(ctx, rec, merged).await
    }
}
