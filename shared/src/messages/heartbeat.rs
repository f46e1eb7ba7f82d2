//! `Heartbeat`: what each encoder writes to the workers bucket every interval: who it is, what
//! it can do, how loaded it is, and which units it holds with their live progress. The
//! scheduler's pool view and `ffleet workers` read nothing else.

use super::{CURRENT, Versioned};
use crate::ids::{Capability, JobId, NodeId, Unit};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: u32,
    pub node_id: NodeId,
    pub host: String,
    pub capabilities: Vec<Capability>,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// Units this node is encoding.
    #[serde(default)]
    pub holding: Vec<Held>,
    /// One-minute load average of the host.
    #[serde(default)]
    pub load1: f64,
    #[serde(default)]
    pub mem_total_bytes: u64,
    #[serde(default)]
    pub mem_available_bytes: u64,
    /// Draining (SIGTERM): takes no new work.
    #[serde(default)]
    pub draining: bool,
    /// Accelerator sessions (tasks of non-`cpu` capabilities); `slots_*` count cores.
    #[serde(default)]
    pub gpu_slots_total: u32,
    #[serde(default)]
    pub gpu_slots_busy: u32,
    /// NVIDIA GPUs as NVML last reported them (empty without a driver or GPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<Gpu>,
    /// Hardware and notable software encoders ffmpeg offers on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encoders: Vec<String>,
    pub at: String,
}

/// One NVIDIA GPU, refreshed with every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    pub index: u32,
    pub name: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    /// Percent of time a kernel ran, over the driver's last sample period.
    pub utilization_pct: u32,
    /// Percent of time the video encoder (NVENC) was busy.
    pub encoder_utilization_pct: u32,
    /// Encoder sessions open on the GPU (all processes).
    pub encoder_sessions: u32,
}

impl Heartbeat {
    /// Free slots for tasks of `cap` (cores for `cpu`, sessions for accelerators); none while
    /// draining.
    pub fn free_for(&self, cap: &Capability) -> u32 {
        if self.draining || !self.capabilities.contains(cap) {
            return 0;
        }
        if cap.is_gpu() {
            self.gpu_slots_total.saturating_sub(self.gpu_slots_busy)
        } else {
            self.slots_total.saturating_sub(self.slots_busy)
        }
    }
}

/// One unit a node holds, with ffmpeg's latest progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub job_id: JobId,
    pub unit: Unit,
    pub attempt: u32,
    #[serde(default)]
    pub frame: u64,
    #[serde(default)]
    pub fps: f64,
    #[serde(default)]
    pub speed: f64,
    /// Slots the unit takes, and of which kind (its capability).
    #[serde(default = "one")]
    pub slots: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
}

fn one() -> u32 {
    1
}

impl Held {
    pub fn new(job_id: JobId, unit: Unit, attempt: u32) -> Self {
        Self {
            job_id,
            unit,
            attempt,
            frame: 0,
            fps: 0.0,
            speed: 0.0,
            slots: 1,
            capability: None,
        }
    }

    /// `<job>.<unit>#<attempt>`, as shown by `ffleet workers`.
    pub fn tag(&self) -> String {
        format!("{}.{}#{}", self.job_id, self.unit, self.attempt)
    }
}

impl Heartbeat {
    pub fn new(node_id: NodeId, capabilities: Vec<Capability>, slots_total: u32) -> Self {
        Self {
            version: CURRENT,
            node_id,
            host: crate::ids::hostname(),
            capabilities,
            slots_total,
            slots_busy: 0,
            holding: Vec::new(),
            load1: 0.0,
            mem_total_bytes: 0,
            mem_available_bytes: 0,
            draining: false,
            gpu_slots_total: 0,
            gpu_slots_busy: 0,
            gpus: Vec::new(),
            encoders: Vec::new(),
            at: crate::time::now_rfc3339(),
        }
    }
}

impl Versioned for Heartbeat {
    fn version(&self) -> u32 {
        self.version
    }
}
