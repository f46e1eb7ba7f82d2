//! `Task`: one unit of encode work, first on `ffleet.tasks.plan` (from the splitter), then on
//! `ffleet.tasks.encode.<capability>` (routed by the scheduler).
//!
//! A task names a server-side profile, never ffmpeg arguments: each encoder builds its command
//! from its own configuration.

use super::Versioned;
use crate::ids::{Capability, JobId, Unit};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskInput {
    /// A stream-copied cut in scratch storage.
    Scratch { key: String },
    /// The source file itself (audio is encoded once, from the source, as a single ffmpeg would).
    Source { path: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub version: u32,
    pub job_id: JobId,
    pub unit: Unit,
    pub attempt: u32,
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<i32>,
    pub input: TaskInput,
    /// Frames the result must have (video only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_frames: Option<u64>,
    /// Media duration of the unit, for progress and time limits.
    pub duration_secs: f64,
    /// Extension of the result intermediate (`nut` for video, `m4a`/`mka` for audio).
    pub result_ext: String,
    pub priority: i32,
    /// Set by the scheduler when it routes the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
}

impl Task {
    /// Scratch key of this attempt's result: attempts never overwrite each other.
    pub fn result_key(&self) -> String {
        format!(
            "jobs/{}/enc/{}.a{}.{}",
            self.job_id, self.unit, self.attempt, self.result_ext
        )
    }
}

impl Versioned for Task {
    fn version(&self) -> u32 {
        self.version
    }
}
