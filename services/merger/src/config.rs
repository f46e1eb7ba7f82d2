//! The merger's section of the configuration (`[merger]`), with its own rules. Read once at
//! start (`MergerConfig::of`).

use ffleet_runtime::config::{Config, ConfigError, Invalid, Section};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergerConfig {
    /// Merges run at the same time by one merger.
    pub concurrency: usize,
}

impl Default for MergerConfig {
    fn default() -> Self {
        Self { concurrency: 2 }
    }
}

impl MergerConfig {
    /// This section of `cfg`, checked.
    pub fn of(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.section()
    }
}

impl Section for MergerConfig {
    const KEY: &'static str = "merger";

    fn validate(&self) -> Result<(), Invalid> {
        if self.concurrency == 0 {
            return Err(Invalid("merger.concurrency must be >= 1".into()));
        }
        Ok(())
    }
}
