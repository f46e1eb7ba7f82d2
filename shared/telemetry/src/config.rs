//! The `[log]` section: how a process writes its logs. Owned here, gathered by the runtime.

use ffleet_protocol::settings::{Invalid, Section};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `auto` (JSON lines on stdout for a service process, text on stderr for commands run by a
    /// person), `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "auto".into(),
            level: "info".into(),
        }
    }
}

impl Section for LogConfig {
    const KEY: &'static str = "log";

    fn validate(&self) -> Result<(), Invalid> {
        if !["auto", "text", "json"].contains(&self.format.as_str()) {
            return Err(Invalid(format!(
                "log.format {:?}: expected auto, text or json",
                self.format
            )));
        }
        Ok(())
    }
}
