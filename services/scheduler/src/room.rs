//! How much room each capability has for released tasks in one release round: free slots of
//! its live, non-draining nodes (from their heartbeats) plus the release buffer, minus the tasks
//! already waiting in its queue and those released or held earlier in the same round.
//!
//! What waits in a queue is known between reads of its consumer's undelivered count (`Depths`):
//! the count last read plus what the scheduler released into it since, an upper bound, since
//! only encoders take from a queue. The count is read again only when that bound leaves no room
//! (and the last read is `REFRESH` old): a round costs no API call while the bound allows a
//! release, and a backlog waiting for room asks at most every `REFRESH`, not every round (10 ms).

use crate::route::View;
use async_nats::jetstream::stream::Stream;
use ffleet_runtime::messages::Heartbeat;
use ffleet_runtime::messages::heartbeat::GpuClass;
use ffleet_runtime::nats::ops::{self, Op};
use ffleet_runtime::{Capability, subjects};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// The shortest time between two reads of one queue's depth.
pub const REFRESH: Duration = Duration::from_millis(50);

/// One queue's depth as last read, and the tasks released into it since.
#[derive(Debug, Clone, Copy)]
struct Depth {
    read: i64,
    at: Instant,
    since: i64,
}

/// The capability queues' depths as the leader knows them between reads.
#[derive(Debug, Default)]
pub struct Depths {
    known: HashMap<Capability, Depth>,
}

impl Depths {
    /// At most this many tasks wait in `cap`'s queue (`None`: never read).
    pub fn bound(&self, cap: &Capability) -> Option<i64> {
        self.known.get(cap).map(|d| d.read + d.since)
    }

    /// Whether `cap`'s queue must be read before a round decides with `room` (free slots and
    /// buffer): never read, or the bound leaves no room and the last read is `REFRESH` old.
    pub fn stale(&self, cap: &Capability, room: i64, now: Instant) -> bool {
        match self.known.get(cap) {
            None => true,
            Some(d) => d.read + d.since >= room && now.duration_since(d.at) >= REFRESH,
        }
    }

    /// The queue's undelivered count, read at `now`.
    pub fn read(&mut self, cap: &Capability, pending: i64, now: Instant) {
        self.known.insert(
            cap.clone(),
            Depth {
                read: pending,
                at: now,
                since: 0,
            },
        );
    }

    /// `n` tasks released into `cap`'s queue.
    pub fn released(&mut self, cap: &Capability, n: i64) {
        if let Some(d) = self.known.get_mut(cap) {
            d.since += n;
        }
    }
}

/// Per-capability room, from the live heartbeats and the queues' undelivered counts, updated
/// as the round releases and holds tasks.
pub struct Room {
    live: Vec<Heartbeat>,
    /// Free slots of the live, non-draining nodes offering each capability.
    free: HashMap<Capability, i64>,
    /// Capabilities some live node offers, draining ones included.
    present: HashSet<Capability>,
    buffer: i64,
    /// Undelivered messages in the capability's queue, then + releases this round.
    queued: HashMap<Capability, i64>,
    /// Tasks held this round waiting for the capability.
    holding: HashMap<Capability, u32>,
    released: HashMap<Capability, i64>,
}

impl Room {
    /// `stream`: the tasks stream, whose consumers say how deep each queue is when `depths`
    /// cannot tell (none, or unreadable: unknown, counted as empty).
    pub async fn new(
        stream: Option<&Stream>,
        live: Vec<Heartbeat>,
        buffer: u32,
        depths: &mut Depths,
    ) -> Room {
        let mut room = Room::of(live, HashMap::new(), buffer);
        let now = Instant::now();
        for (c, free) in &room.free {
            if let Some(stream) = stream
                && depths.stale(c, free + room.buffer, now)
            {
                ops::count(Op::Api);
                // Unreadable (no such consumer yet, the broker away): counted as empty, as an
                // unknown depth always was, and read again when that leaves no room.
                let pending = match stream.consumer_info(subjects::encode_consumer(c)).await {
                    Ok(i) => i.num_pending as i64,
                    Err(_) => 0,
                };
                depths.read(c, pending, now);
            }
            room.queued.insert(c.clone(), depths.bound(c).unwrap_or(0));
        }
        room
    }

    /// Tasks released into each capability's queue this round.
    pub fn releases(&self) -> impl Iterator<Item = (&Capability, i64)> {
        self.released.iter().map(|(c, n)| (c, *n))
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
        let present = live
            .iter()
            .flat_map(|h| h.capabilities.iter().cloned())
            .collect();
        Room {
            live,
            free,
            present,
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

    fn present(&self, cap: &Capability) -> bool {
        self.present.contains(cap)
    }

    fn waiting(&self, cap: &Capability) -> u32 {
        let queued = self.queued.get(cap).copied().unwrap_or(0)
            + self.released.get(cap).copied().unwrap_or(0);
        queued.max(0) as u32 + self.holding.get(cap).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_queue_is_read_only_when_what_is_known_leaves_no_room() {
        let cpu = Capability::cpu();
        let mut d = Depths::default();
        let t0 = Instant::now();
        assert!(d.stale(&cpu, 3, t0), "never read");
        d.read(&cpu, 1, t0);
        assert_eq!(d.bound(&cpu), Some(1));
        // Room left by the bound: no read, however old the last one.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!d.stale(&cpu, 3, Instant::now()));
        d.released(&cpu, 2);
        assert_eq!(d.bound(&cpu), Some(3), "releases only add");
        // No room by the bound: read again, but not sooner than REFRESH after the last read.
        let t1 = Instant::now();
        assert!(d.stale(&cpu, 3, t1));
        d.read(&cpu, 0, t1);
        assert_eq!(d.bound(&cpu), Some(0), "a read replaces the bound");
        d.released(&cpu, 3);
        assert!(!d.stale(&cpu, 3, t1 + REFRESH / 2));
        assert!(d.stale(&cpu, 3, t1 + REFRESH));
        // A queue never read takes no releases into account (it is read first).
        let gpu = Capability::new("nvenc").unwrap();
        d.released(&gpu, 4);
        assert_eq!(d.bound(&gpu), None);
    }
}
