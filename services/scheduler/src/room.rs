//! How much room each capability has for released tasks in one release round: free slots of
//! its live, non-draining nodes (from their heartbeats) plus the release buffer, minus the tasks
//! already waiting in its queue (from the consumer's undelivered count) and those released or
//! held earlier in the same round.

use crate::route::View;
use ffleet_shared::messages::Heartbeat;
use ffleet_shared::messages::heartbeat::GpuClass;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{Capability, subjects};
use std::collections::HashMap;

/// Per-capability room, from the live heartbeats and the queues' undelivered counts, updated
/// as the round releases and holds tasks.
pub struct Room {
    live: Vec<Heartbeat>,
    buffer: i64,
    /// Undelivered messages in the capability's queue, then + releases this round.
    queued: HashMap<Capability, i64>,
    /// Tasks held this round waiting for the capability.
    holding: HashMap<Capability, u32>,
    released: HashMap<Capability, i64>,
}

impl Room {
    pub async fn new(ctx: &Ctx, live: Vec<Heartbeat>, buffer: u32) -> Room {
        let mut queued = HashMap::new();
        let mut caps: Vec<&Capability> = live.iter().flat_map(|h| &h.capabilities).collect();
        caps.sort();
        caps.dedup();
        if let Ok(stream) = ctx.js.get_stream(subjects::STREAM_TASKS).await {
            for c in caps {
                let n = match stream.consumer_info(subjects::encode_consumer(c)).await {
                    Ok(i) => i.num_pending as i64,
                    Err(_) => 0,
                };
                queued.insert(c.clone(), n);
            }
        }
        Room {
            live,
            buffer: i64::from(buffer),
            queued,
            holding: HashMap::new(),
            released: HashMap::new(),
        }
    }

    pub fn released(&mut self, cap: &Capability) {
        *self.released.entry(cap.clone()).or_default() += 1;
    }

    /// GPU classes of the live, non-draining nodes offering `cap`.
    pub fn classes(&self, cap: &Capability) -> Vec<GpuClass> {
        self.live
            .iter()
            .filter(|h| !h.draining && h.capabilities.contains(cap))
            .filter_map(|h| h.gpu_class.clone())
            .collect()
    }

    pub fn held(&mut self, wants: &[Capability]) {
        for c in wants {
            *self.holding.entry(c.clone()).or_default() += 1;
        }
    }
}

impl View for Room {
    fn budget(&self, cap: &Capability) -> i64 {
        if !self.live(cap) {
            return 0;
        }
        let free: i64 = self.live.iter().map(|h| i64::from(h.free_for(cap))).sum();
        let queued = self.queued.get(cap).copied().unwrap_or(0);
        let released = self.released.get(cap).copied().unwrap_or(0);
        free + self.buffer - queued - released
    }

    fn live(&self, cap: &Capability) -> bool {
        self.live
            .iter()
            .any(|h| !h.draining && h.capabilities.contains(cap))
    }

    fn waiting(&self, cap: &Capability) -> u32 {
        let queued = self.queued.get(cap).copied().unwrap_or(0)
            + self.released.get(cap).copied().unwrap_or(0);
        queued.max(0) as u32 + self.holding.get(cap).copied().unwrap_or(0)
    }
}
