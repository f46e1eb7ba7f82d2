//! The splitter's section of the configuration (`[splitter]`), with its own rules. Read once at
//! start (`SplitterConfig::of`); the runtime only carries the section as written.

use ffleet_runtime::config::{Config, ConfigError, Invalid, Section, positive};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitterConfig {
    /// Jobs split at the same time by one splitter.
    pub concurrency: usize,
    /// Longest segment when the job does not ask for one (a request's `segment_seconds` takes
    /// its place). Below it the length follows the pool: about two segments per live slot.
    pub default_segment_secs: f64,
    /// Shortest segment the pool rule cuts, against per-segment start-up cost (a request's own
    /// shorter `segment_seconds` is still honoured).
    pub min_segment_secs: f64,
    /// Highest priority a request on `ffleet.jobs.submit` may ask for; requests above it are
    /// refused (`priority_not_allowed`). Requests on `ffleet.jobs.submit-privileged` (clients
    /// allowed to publish there) are not capped.
    pub max_submitter_priority: i32,
}

impl Default for SplitterConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            default_segment_secs: 10.0,
            min_segment_secs: 1.0,
            max_submitter_priority: 0,
        }
    }
}

impl SplitterConfig {
    /// This section of `cfg`, checked.
    pub fn of(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.section()
    }
}

impl Section for SplitterConfig {
    const KEY: &'static str = "splitter";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "splitter",
            &[
                ("default_segment_secs", self.default_segment_secs),
                ("min_segment_secs", self.min_segment_secs),
            ],
        )?;
        if self.concurrency == 0 {
            return Err(Invalid("splitter.concurrency must be >= 1".into()));
        }
        Ok(())
    }
}
