//! The splitter's section of the configuration (`[splitter]`), with its own rules. Read once at
//! start (`SplitterConfig::of`); the runtime only carries the section as written.

use ffleet_runtime::Tenant;
use ffleet_runtime::config::{Config, ConfigError, Invalid, Section, positive};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// The highest priority each tenant's requests may ask for (by tenant name); a tenant not
    /// named here gets `max_submitter_priority`.
    pub tenant_max_priority: BTreeMap<String, i32>,
}

impl Default for SplitterConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            default_segment_secs: 10.0,
            min_segment_secs: 1.0,
            max_submitter_priority: 0,
            tenant_max_priority: BTreeMap::new(),
        }
    }
}

impl SplitterConfig {
    /// This section of `cfg`, checked.
    pub fn of(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.section()
    }

    /// The highest priority a request may ask for: from `tenant`, its own cap, else the plain
    /// submitters'.
    pub fn max_priority(&self, tenant: Option<&Tenant>) -> i32 {
        tenant
            .and_then(|t| self.tenant_max_priority.get(t.as_str()))
            .copied()
            .unwrap_or(self.max_submitter_priority)
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
        if let Some(bad) = self
            .tenant_max_priority
            .keys()
            .find(|t| Tenant::new(t.as_str()).is_err())
        {
            return Err(Invalid(format!(
                "splitter.tenant_max_priority names {bad:?}, which is no tenant name \
                 (1 to 32 ASCII letters, digits, '-' or '_')"
            )));
        }
        if self.concurrency == 0 {
            return Err(Invalid("splitter.concurrency must be >= 1".into()));
        }
        Ok(())
    }
}
