//! `LiveProgress`: frame-level progress of a running encode, sent on core NATS
//! (`ffleet.live.<job>`, not stored) about once a second, for progress bars and dashboards.

use crate::ids::{JobId, NodeId, Unit};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveProgress {
    pub version: u32,
    pub job_id: JobId,
    pub unit: Unit,
    pub attempt: u32,
    pub node: NodeId,
    pub frame: u64,
    pub fps: f64,
    pub speed: f64,
    /// Media seconds of this unit encoded so far.
    pub out_secs: f64,
}

impl super::Versioned for LiveProgress {
    fn version(&self) -> u32 {
        self.version
    }
}
