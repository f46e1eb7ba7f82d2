//! The encoder's section of the configuration (`[encoder]`), with its own rules. Read once at
//! start (`EncoderConfig::of`); the failure budget of a unit (`[fleet]`) and the stall timeout
//! of every ffmpeg (`[ffmpeg]`) are not the encoder's alone.

use ffleet_runtime::config::{Config, ConfigError, Invalid, Section, positive};
use ffleet_runtime::media::command::Limits;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// Stable node id; generated from the host name when absent.
    pub node_id: Option<String>,
    /// Concurrent segment encodes; default: CPU cores / the profile threads (1).
    pub slots: Option<u32>,
    /// Restrict or label capabilities; default: detected (`cpu` from `ffmpeg -encoders`,
    /// `nvenc` when NVML finds an NVIDIA GPU and ffmpeg has h264_nvenc). Either way an
    /// accelerator capability is offered only once a test encode with an encoder its profile
    /// variants use succeeded.
    pub capabilities: Option<Vec<String>>,
    /// Concurrent accelerator encodes (GPU sessions); default: what the driver allows per
    /// GPU (consumer boards 3/5/8 by driver version, less the sessions already open; 8 for
    /// professional and data-center boards), or `slots` for a labelled node without a GPU.
    pub gpu_slots: Option<u32>,
    /// Limit for each start-up test encode/decode (and the re-test after a GPU failure).
    pub proof_timeout_secs: f64,
    /// Accelerator encodes failing in a row after which the node gives the capability up even
    /// though its variant still passes a test encode (a failing variant demotes at once).
    pub demote_after_failures: u32,
    pub heartbeat_interval_secs: f64,
    /// Hard limit per unit: max(min_timeout_secs, media duration × this factor).
    pub timeout_factor: f64,
    pub min_timeout_secs: f64,
    /// How long one pull waits for a task before asking again.
    pub fetch_wait_secs: f64,
    /// On SIGTERM: how long held units may run on before they are handed back.
    pub stop_grace_secs: f64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            slots: None,
            capabilities: None,
            gpu_slots: None,
            proof_timeout_secs: 15.0,
            demote_after_failures: 3,
            heartbeat_interval_secs: 1.0,
            timeout_factor: 30.0,
            min_timeout_secs: 300.0,
            fetch_wait_secs: 2.0,
            stop_grace_secs: 30.0,
        }
    }
}

impl EncoderConfig {
    /// This section of `cfg`, checked.
    pub fn of(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.section()
    }

    pub fn proof_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.proof_timeout_secs)
    }

    /// The limits of one unit's ffmpeg: a hard limit from its media duration, and the fleet's
    /// stall timeout (`ffmpeg.stall_timeout_secs`).
    pub fn limits(&self, duration_secs: f64, stall: Duration) -> Limits {
        Limits {
            timeout: Duration::from_secs_f64(
                self.min_timeout_secs
                    .max(duration_secs * self.timeout_factor),
            ),
            stall: Some(stall),
        }
    }
}

impl Section for EncoderConfig {
    const KEY: &'static str = "encoder";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "encoder",
            &[
                ("heartbeat_interval_secs", self.heartbeat_interval_secs),
                ("fetch_wait_secs", self.fetch_wait_secs),
                ("timeout_factor", self.timeout_factor),
            ],
        )?;
        if self.slots == Some(0) {
            return Err(Invalid("encoder.slots must be >= 1".into()));
        }
        if self.gpu_slots == Some(0) {
            return Err(Invalid("encoder.gpu_slots must be >= 1".into()));
        }
        if !(self.proof_timeout_secs.is_finite() && self.proof_timeout_secs > 0.0)
            || self.demote_after_failures == 0
        {
            return Err(Invalid(
                "encoder.proof_timeout_secs must be > 0 and encoder.demote_after_failures >= 1"
                    .into(),
            ));
        }
        if !(self.stop_grace_secs.is_finite() && self.stop_grace_secs >= 0.0) {
            return Err(Invalid("encoder.stop_grace_secs must be >= 0".into()));
        }
        Ok(())
    }
}
