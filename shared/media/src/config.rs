//! The `[ffmpeg]` (which binaries) and `[limits]` (what a source may be, and what each ffmpeg or
//! ffprobe child may use) sections. Owned here, gathered by the runtime.

use ffleet_protocol::settings::{Invalid, Section, positive};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FfmpegConfig {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
    /// Kill an ffmpeg that reports no progress for this long (an encode on any node, a merge).
    pub stall_timeout_secs: f64,
}

impl Default for FfmpegConfig {
    fn default() -> Self {
        Self {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
            stall_timeout_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_width: u32,
    pub max_height: u32,
    pub max_duration_secs: f64,
    pub max_frame_rate: f64,
    pub max_input_bytes: u64,
    /// Bound on every ffprobe run (hostile files can make probing slow).
    pub probe_timeout_secs: f64,
    /// Most ffprobe output read from one run (format and streams); more is refused.
    pub max_probe_output_bytes: usize,
    /// Most packets the source's kept streams may have (a packet flood is refused while it is
    /// read, before it fills memory); each is also held to what the duration and frame rate
    /// limits allow.
    pub max_packets: u64,
    /// Resource limits of every ffmpeg and ffprobe child (set through `prlimit`); 0: none.
    /// Address space in MiB, for children that use no accelerator (CUDA and other GPU runtimes
    /// reserve more virtual memory than the machine has, so those children are exempt).
    pub child_address_space_mb: u64,
    /// Largest file a child may write, in MiB.
    pub child_file_size_mb: u64,
    pub child_open_files: u64,
    /// CPU seconds per child.
    pub child_cpu_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_duration_secs: 12.0 * 3600.0,
            max_frame_rate: 300.0,
            max_input_bytes: 512 * 1024 * 1024 * 1024,
            probe_timeout_secs: 60.0,
            max_probe_output_bytes: 16 * 1024 * 1024,
            max_packets: 5_000_000,
            child_address_space_mb: 32 * 1024,
            child_file_size_mb: 512 * 1024,
            child_open_files: 4096,
            child_cpu_secs: 7 * 24 * 3600,
        }
    }
}

impl FfmpegConfig {
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.stall_timeout_secs)
    }
}

impl LimitsConfig {
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.probe_timeout_secs)
    }
}

impl Section for FfmpegConfig {
    const KEY: &'static str = "ffmpeg";

    fn validate(&self) -> Result<(), Invalid> {
        positive("ffmpeg", &[("stall_timeout_secs", self.stall_timeout_secs)])
    }
}

impl Section for LimitsConfig {
    const KEY: &'static str = "limits";

    fn validate(&self) -> Result<(), Invalid> {
        positive("limits", &[("probe_timeout_secs", self.probe_timeout_secs)])?;
        if self.max_probe_output_bytes < 64 * 1024 || self.max_packets == 0 {
            return Err(Invalid(
                "limits.max_probe_output_bytes must be >= 65536 and limits.max_packets >= 1".into(),
            ));
        }
        Ok(())
    }
}
