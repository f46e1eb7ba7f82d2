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
    /// Model and driver of the node's NVIDIA GPU: NVENC output is byte-identical only between
    /// nodes of the same class, so re-issued attempts prefer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_class: Option<GpuClass>,
    /// Start-up test encodes and decodes and their outcomes: what the capabilities rest on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<Proof>,
    /// Capabilities this node gave up after its encodes failed (taken out of routing until it
    /// restarts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demoted: Vec<Capability>,
    pub at: String,
}

/// A GPU model with a driver version: the unit of NVENC determinism.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GpuClass {
    pub model: String,
    pub driver: String,
}

impl std::fmt::Display for GpuClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (driver {})", self.model, self.driver)
    }
}

/// One start-up check: a one-frame test encode with an encoder, or a test decode through a
/// hardware decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proof {
    /// `encode` or `decode`.
    pub kind: String,
    /// The ffmpeg encoder or decoder tried (`h264_nvenc`, `h264_cuvid`).
    pub name: String,
    pub ok: bool,
    /// Why it failed (ffmpeg's last error line), empty on success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
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
    /// Percent of the NVENC capacity still free for H.264 (absent where NVML has no figure,
    /// e.g. boards without NVENC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_capacity_pct: Option<u32>,
    /// Percent of time the video decoder (NVDEC) was busy.
    #[serde(default)]
    pub decoder_utilization_pct: u32,
    /// NVML's brand (`GeForce`, `Tesla`, ...): consumer brands cap NVENC sessions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub brand: String,
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

/// Encode slots a pool offers: CPU and accelerator slots of every node that is not draining.
/// `live` holds the heartbeats that have not expired. What the splitter sizes segments by; the
/// scheduler's leader publishes it with its lease.
pub fn offered_slots<'a>(live: impl IntoIterator<Item = &'a Heartbeat>) -> u32 {
    live.into_iter()
        .filter(|hb| !hb.draining)
        .map(|hb| hb.slots_total.saturating_add(hb.gpu_slots_total))
        .fold(0u32, u32::saturating_add)
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
            gpu_class: None,
            proofs: Vec::new(),
            demoted: Vec::new(),
            at: crate::time::now_rfc3339(),
        }
    }
}

impl Versioned for Heartbeat {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_of_older_nodes_still_decode_and_new_fields_round_trip() {
        let old = r#"{"version":1,"node_id":"n1","host":"h","capabilities":["cpu"],
            "slots_total":2,"slots_busy":0,"at":"2026-01-01T00:00:00Z"}"#;
        let hb: Heartbeat = crate::messages::decode("heartbeat", old.as_bytes()).unwrap();
        assert_eq!(hb.gpu_class, None);
        assert!(hb.proofs.is_empty() && hb.demoted.is_empty());
        let mut hb = hb;
        hb.gpu_class = Some(GpuClass {
            model: "NVIDIA H200".into(),
            driver: "570.86.15".into(),
        });
        hb.proofs.push(Proof {
            kind: "encode".into(),
            name: "h264_nvenc".into(),
            ok: false,
            detail: "no nvenc capable devices found".into(),
        });
        let back: Heartbeat =
            crate::messages::decode("heartbeat", &crate::messages::encode(&hb)).unwrap();
        assert_eq!(back, hb);
    }
}
