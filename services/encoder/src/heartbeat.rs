//! Heartbeats: this node's capabilities, slots, load and held units (with live progress),
//! written to the workers bucket every interval, soon after a unit is taken or let go, and
//! deleted on a clean stop. A change after a quiet spell is written at once; changes that
//! follow within `COALESCE` of a write are written together at its end, so a node turning
//! over hundreds of short units a second writes (and every scheduler replica receives) at most
//! one heartbeat per `COALESCE`, not two per unit.
//!
//! The same loop guards ownership. After every periodic write it reads the records of the units
//! it holds; a unit whose record moved to another attempt or owner (the scheduler judged this
//! node dead, say after it was frozen) has its ffmpeg cancelled at once, so a node that wakes
//! up late drops its work instead of finishing it for nothing. A unit just taken needs no such
//! read: its claim was a revision-checked write.

use crate::Node;
use crate::demote::Demotions;
use crate::gpu::Gpus;
use ffleet_shared::Capability;
use ffleet_shared::messages::SegmentState;
use ffleet_shared::messages::heartbeat::{Heartbeat, Held};
use ffleet_shared::runtime::Ctx;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The shortest gap between two heartbeats written for changes (taken or let-go units).
const COALESCE: Duration = Duration::from_millis(100);
use tokio_util::sync::CancellationToken;

/// What the heartbeat reports, updated by the slots.
pub struct State {
    base: Heartbeat,
    gpus: Arc<Gpus>,
    held: Mutex<BTreeMap<String, (Held, CancellationToken)>>,
    draining: AtomicBool,
    changed: Notify,
    /// Capabilities given up after failed encodes: left out of every heartbeat from then on.
    pub demotions: Demotions,
}

impl State {
    pub fn new(node: &Node, demote_after: u32) -> Self {
        // A node without a CPU capability takes no CPU work: it advertises no cores.
        let cores = if node.capabilities.iter().any(|c| !c.is_gpu()) {
            node.slots
        } else {
            0
        };
        let base = Heartbeat {
            gpu_slots_total: node.gpu_slots,
            encoders: node.encoders.clone(),
            gpu_class: node.gpu_class.clone(),
            proofs: node.proofs.clone(),
            ..Heartbeat::new(node.id.clone(), node.capabilities.clone(), cores)
        };
        Self {
            gpus: node.gpus.clone(),
            base,
            held: Mutex::default(),
            draining: AtomicBool::new(false),
            changed: Notify::new(),
            demotions: Demotions::new(demote_after),
        }
    }

    /// Records a claimed unit under its segment key; the token cancels its encode.
    pub fn hold(&self, key: &str, held: Held) -> CancellationToken {
        let token = CancellationToken::new();
        self.held
            .lock()
            .expect("hb lock")
            .insert(key.to_owned(), (held, token.clone()));
        self.changed.notify_one();
        token
    }

    pub fn release(&self, key: &str) {
        self.held.lock().expect("hb lock").remove(key);
        self.changed.notify_one();
    }

    pub fn progress(&self, key: &str, frame: u64, fps: f64, speed: f64) {
        if let Some((h, _)) = self.held.lock().expect("hb lock").get_mut(key) {
            h.frame = frame;
            h.fps = fps;
            h.speed = speed;
        }
    }

    /// Stops taking work: heartbeats say so from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// This node's GPU class (model and driver), if it has an NVIDIA GPU.
    pub fn gpu_class(&self) -> Option<&ffleet_shared::messages::heartbeat::GpuClass> {
        self.base.gpu_class.as_ref()
    }

    /// Gives `cap` up: the next heartbeat (written at once) no longer offers it.
    pub fn demoted(&self, cap: &Capability, why: &str) {
        tracing::error!(capability = %cap, why = %why, "accelerator encodes fail here: capability given up until restart");
        self.changed.notify_one();
    }

    /// Cancels every held encode (the end of a stop's grace period).
    pub fn cancel_all(&self) {
        for (_, t) in self.held.lock().expect("hb lock").values() {
            t.cancel();
        }
    }

    fn snapshot(&self) -> Heartbeat {
        let holding: Vec<Held> = self
            .held
            .lock()
            .expect("hb lock")
            .values()
            .map(|(h, _)| h.clone())
            .collect();
        let (load1, mem_total_bytes, mem_available_bytes) = host_load();
        let busy = |gpu: bool| -> u32 {
            holding
                .iter()
                .filter(|h| h.capability.as_ref().is_some_and(Capability::is_gpu) == gpu)
                .map(|h| h.slots)
                .sum()
        };
        let demoted = self.demotions.demoted();
        let capabilities: Vec<Capability> = (self.base.capabilities.iter())
            .filter(|c| !demoted.contains(c))
            .cloned()
            .collect();
        let gpu_slots_total = if capabilities.iter().any(Capability::is_gpu) {
            self.base.gpu_slots_total
        } else {
            0
        };
        Heartbeat {
            capabilities,
            demoted,
            gpu_slots_total,
            slots_busy: busy(false),
            gpu_slots_busy: busy(true),
            gpus: self.gpus.sample(),
            holding,
            load1,
            mem_total_bytes,
            mem_available_bytes,
            draining: self.draining.load(Ordering::SeqCst),
            at: ffleet_shared::time::now_rfc3339(),
            ..self.base.clone()
        }
    }

    fn held_keys(&self) -> Vec<(String, Held, CancellationToken)> {
        self.held
            .lock()
            .expect("hb lock")
            .iter()
            .map(|(k, (h, t))| (k.clone(), h.clone(), t.clone()))
            .collect()
    }
}

/// Writes heartbeats until `stop` fires, then deletes this node's key.
pub async fn run(ctx: Ctx, state: Arc<State>, stop: CancellationToken) {
    let every = Duration::from_secs_f64(ctx.config.encoder.heartbeat_interval_secs);
    let key = state.base.node_id.to_string();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now() - COALESCE;
    loop {
        let periodic = tokio::select! {
            _ = tick.tick() => true,
            _ = state.changed.notified() => false,
            _ = stop.cancelled() => break,
        };
        if !periodic {
            // Changes that arrive while this waits are in the snapshot taken after it.
            let rest = COALESCE.saturating_sub(last.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = stop.cancelled() => break,
            }
        }
        last = Instant::now();
        if let Err(e) = ctx.workers.put(&key, &state.snapshot()).await {
            tracing::warn!(error = %e, "heartbeat not written");
        }
        if periodic {
            check_ownership(&ctx, &state).await;
        }
    }
    if let Err(e) = ctx.workers.delete(&key).await {
        tracing::debug!(error = %e, "heartbeat not deleted");
    }
}

async fn check_ownership(ctx: &Ctx, state: &State) {
    let me = &state.base.node_id;
    for (key, held, token) in state.held_keys() {
        if token.is_cancelled() {
            continue;
        }
        let Ok(Some((rec, _))) = ctx.segments.get(&key).await else {
            continue;
        };
        let ours = rec.attempt == held.attempt && rec.owner.as_ref() == Some(me);
        // Ours and finished: this node has just written the result and is letting go of the
        // unit; nothing was handed away, and a warning would be a false alarm.
        if ours && matches!(rec.state, SegmentState::Done | SegmentState::Failed) {
            continue;
        }
        if !(ours && rec.state == SegmentState::Running) {
            tracing::warn!(
                job = %held.job_id,
                unit = %held.unit,
                attempt = held.attempt,
                now_attempt = rec.attempt,
                "unit was handed to another node, dropping it"
            );
            token.cancel();
        }
    }
}

/// One-minute load average and memory, from /proc (zeros where it is unavailable).
fn host_load() -> (f64, u64, u64) {
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |name: &str| -> u64 {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (load1, kib("MemTotal:"), kib("MemAvailable:"))
}
