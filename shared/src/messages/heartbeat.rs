//! `Heartbeat`: what each encoder writes to the workers bucket every interval.

use super::{CURRENT, Versioned};
use crate::ids::{Capability, NodeId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub version: u32,
    pub node_id: NodeId,
    pub host: String,
    pub capabilities: Vec<Capability>,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// Units this node holds, as `<job>.<unit>#<attempt>`.
    #[serde(default)]
    pub holding: Vec<String>,
    pub at: String,
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
            at: crate::time::now_rfc3339(),
        }
    }
}

impl Versioned for Heartbeat {
    fn version(&self) -> u32 {
        self.version
    }
}
