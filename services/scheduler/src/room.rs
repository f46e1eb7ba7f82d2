//! How much room each capability has for released tasks in one release round: free slots of
//! its live, non-draining nodes (from their heartbeats) plus the release buffer, minus the tasks
//! already waiting in its queue (from the consumer's undelivered count) and those released or
//! held earlier in the same round.

use crate::route::View;
use async_nats::jetstream::stream::Stream;
use ffleet_runtime::messages::Heartbeat;
use ffleet_runtime::messages::heartbeat::GpuClass;
use ffleet_runtime::nats::ops::{self, Op};
use ffleet_runtime::{Capability, subjects};
use std::collections::HashMap;

/// Per-capability room, from the live heartbeats and the queues' undelivered counts, updated
/// as the round releases and holds tasks.
pub struct Room {
    live: Vec<Heartbeat>,
    /// Free slots of the live, non-draining nodes offering each capability.
    free: HashMap<Capability, i64>,
    buffer: i64,
    /// Undelivered messages in the capability's queue, then + releases this round.
    queued: HashMap<Capability, i64>,
    /// Tasks held this round waiting for the capability.
    holding: HashMap<Capability, u32>,
    released: HashMap<Capability, i64>,
}

impl Room {
    /// `stream`: the tasks stream, whose consumers say how deep each queue is (none: unknown,
    /// counted as empty).
    pub async fn new(stream: Option<&Stream>, live: Vec<Heartbeat>, buffer: u32) -> Room {
        let mut room = Room::of(live, HashMap::new(), buffer);
        if let Some(stream) = stream {
            // Once per capability per round: a round asks for them once per held task.
            for c in room.free.keys() {
                ops::count(Op::Api);
                let n = match stream.consumer_info(subjects::encode_consumer(c)).await {
                    Ok(i) => i.num_pending as i64,
                    Err(_) => 0,
                };
                room.queued.insert(c.clone(), n);
            }
        }
        room
    }

    /// The room of `live` nodes whose capabilities' queues hold `queued` tasks: no I/O, so a
    /// release round can be decided and tested from heartbeats alone.
    pub fn of(live: Vec<Heartbeat>, queued: HashMap<Capability, i64>, buffer: u32) -> Room {
        // Totals per capability once per round: a fleet has thousands of nodes.
        let mut free: HashMap<Capability, i64> = HashMap::new();
        for h in live.iter().filter(|h| !h.draining) {
            for c in &h.capabilities {
                *free.entry(c.clone()).or_default() += i64::from(h.free_for(c));
            }
        }
        Room {
            live,
            free,
            buffer: i64::from(buffer),
            queued,
            holding: HashMap::new(),
            released: HashMap::new(),
        }
    }

    /// Whether any capability has room for one more task.
    pub fn any_room(&self) -> bool {
        self.free.keys().any(|c| self.budget(c) > 0)
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
        let Some(free) = self.free.get(cap).copied() else {
            return 0;
        };
        let queued = self.queued.get(cap).copied().unwrap_or(0);
        let released = self.released.get(cap).copied().unwrap_or(0);
        free + self.buffer - queued - released
    }

    fn live(&self, cap: &Capability) -> bool {
        self.free.contains_key(cap)
    }

    fn waiting(&self, cap: &Capability) -> u32 {
        let queued = self.queued.get(cap).copied().unwrap_or(0)
            + self.released.get(cap).copied().unwrap_or(0);
        queued.max(0) as u32 + self.holding.get(cap).copied().unwrap_or(0)
    }
}
