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
//! read: its claim was a revision-checked write. A read older than the node's own claim (a
//! stream leader still catching up after an election) decides nothing (`unit_protocol::holding`).
//!
//! Neither the write nor the reads may hold the loop up: a heartbeat late by a TTL makes the
//! scheduler hand this node's units on. The write waits one short try at most, and each
//! ownership read is one read.

use crate::Node;
use crate::config::EncoderConfig;
use crate::demote::Demotions;
use crate::gpu::Gpus;
use ffleet_runtime::messages::heartbeat::{Heartbeat, Held};
use ffleet_runtime::nats::kv::KvError;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::unit_protocol::{self, Holding};
use ffleet_runtime::{Capability, JobId};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The shortest gap between two heartbeats written for changes (taken or let-go units).
const COALESCE: Duration = Duration::from_millis(100);
/// How long an ended job is remembered: far longer than its tasks can still be queued.
const DROPPED_FOR: Duration = Duration::from_secs(600);
/// Ended jobs remembered before the expired ones are forgotten.
const DROPPED_MAX: usize = 4096;
use tokio_util::sync::CancellationToken;

/// A unit this node holds: what the heartbeat says of it, the revision its claim wrote, and
/// the token that cancels its encode.
struct HeldUnit {
    held: Held,
    claimed_at: u64,
    cancel: CancellationToken,
}

/// What the heartbeat reports, updated by the slots.
pub struct State {
    base: Heartbeat,
    gpus: Arc<Gpus>,
    held: Mutex<BTreeMap<String, HeldUnit>>,
    /// The process is stopping: no undrain takes this back.
    draining: AtomicBool,
    /// An operator drained the node (`ffleet drain`).
    drained: AtomicBool,
    /// Jobs the scheduler said have ended (`drop_job`), with when: their tasks are let go.
    dropped: Mutex<HashMap<JobId, Instant>>,
    changed: Notify,
    /// Capabilities given up after failed encodes: left out of every heartbeat from then on.
    pub demotions: Demotions,
    /// The node's `[encoder]` section.
    pub settings: EncoderConfig,
}

impl State {
    pub fn new(node: &Node, settings: EncoderConfig) -> Self {
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
            drained: AtomicBool::new(false),
            dropped: Mutex::default(),
            changed: Notify::new(),
            demotions: Demotions::new(settings.demote_after_failures),
            settings,
        }
    }

    /// Records a claimed unit under its segment key, claimed by a write at revision
    /// `claimed_at`; the token cancels its encode.
    pub fn hold(&self, key: &str, held: Held, claimed_at: u64) -> CancellationToken {
        let cancel = CancellationToken::new();
        let h = HeldUnit {
            held,
            claimed_at,
            cancel: cancel.clone(),
        };
        self.held.lock().expect("hb lock").insert(key.to_owned(), h);
        self.changed.notify_one();
        cancel
    }

    pub fn release(&self, key: &str) {
        self.held.lock().expect("hb lock").remove(key);
        self.changed.notify_one();
    }

    pub fn progress(&self, key: &str, frame: u64, fps: f64, speed: f64) {
        if let Some(h) = self.held.lock().expect("hb lock").get_mut(key) {
            h.held.frame = frame;
            h.held.fps = fps;
            h.held.speed = speed;
        }
    }

    /// Stops taking work for good (the process is stopping): heartbeats say so from now on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// An operator's drain (`true`) or undrain (`false`). An undrain does not take back a stop's
    /// drain: heartbeats say draining while either holds.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::SeqCst);
        self.changed.notify_one();
    }

    /// Whether the node takes no work (stopping, or drained by an operator).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || self.drained.load(Ordering::SeqCst)
    }

    /// This node's GPU class (model and driver), if it has an NVIDIA GPU.
    pub fn gpu_class(&self) -> Option<&ffleet_runtime::messages::heartbeat::GpuClass> {
        self.base.gpu_class.as_ref()
    }

    /// Gives `cap` up: the next heartbeat (written at once) no longer offers it.
    pub fn demoted(&self, cap: &Capability, why: &str) {
        tracing::error!(capability = %cap, why = %why, "accelerator encodes fail here: capability given up until restart");
        self.changed.notify_one();
    }

    /// The scheduler says `job` has ended: cancels the encodes of its units held here (their
    /// handlers let them go without a write) and remembers it, so its tasks that still come are
    /// let go unclaimed. Returns how many encodes it cancelled.
    pub fn drop_job(&self, job: &JobId) -> usize {
        {
            let mut dropped = self.dropped.lock().expect("dropped lock");
            let now = Instant::now();
            if dropped.len() >= DROPPED_MAX {
                dropped.retain(|_, at| now.duration_since(*at) < DROPPED_FOR);
            }
            dropped.insert(job.clone(), now);
        }
        let held = self.held.lock().expect("hb lock");
        let mut n = 0;
        for h in held.values().filter(|h| &h.held.job_id == job) {
            if !h.cancel.is_cancelled() {
                h.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Whether the scheduler said `job` has ended (within `DROPPED_FOR`).
    pub fn is_dropped(&self, job: &JobId) -> bool {
        self.dropped
            .lock()
            .expect("dropped lock")
            .get(job)
            .is_some_and(|at| at.elapsed() < DROPPED_FOR)
    }

    /// Cancels every held encode (the end of a stop's grace period).
    pub fn cancel_all(&self) {
        for h in self.held.lock().expect("hb lock").values() {
            h.cancel.cancel();
        }
    }

    fn snapshot(&self) -> Heartbeat {
        let holding: Vec<Held> = self
            .held
            .lock()
            .expect("hb lock")
            .values()
            .map(|h| h.held.clone())
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
            draining: self.is_draining(),
            at: ffleet_runtime::time::now_rfc3339(),
            ..self.base.clone()
        }
    }

    fn held_keys(&self) -> Vec<(String, Held, u64, CancellationToken)> {
        self.held
            .lock()
            .expect("hb lock")
            .iter()
            .map(|(k, h)| (k.clone(), h.held.clone(), h.claimed_at, h.cancel.clone()))
            .collect()
    }
}

/// Writes heartbeats until `stop` fires, then deletes this node's key.
pub async fn run(ctx: Ctx, state: Arc<State>, stop: CancellationToken) {
    let every = Duration::from_secs_f64(state.settings.heartbeat_interval_secs);
    let key = state.base.node_id.to_string();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now() - COALESCE;
    // Heartbeats not written in a row.
    let mut failing = 0u32;
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
        let snapshot = state.snapshot();
        let put = ctx.workers.put(&key, &snapshot);
        let why = match tokio::time::timeout(ctx.retry.try_timeout(0), put).await {
            Ok(Ok(_)) => {
                if failing > 0 {
                    tracing::info!(missed = failing, "heartbeats written again");
                }
                failing = 0;
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer in time".to_owned()),
        };
        if let Some(why) = why {
            // Once per outage: an election fails every write for seconds.
            failing += 1;
            if failing == 1 {
                tracing::warn!(error = %why, "heartbeat not written");
            } else {
                tracing::debug!(error = %why, missed = failing, "heartbeat not written");
            }
        }
        if periodic {
            check_ownership(&ctx, &state).await;
        }
    }
    // Deleting says at once that this node is gone; past the heartbeat TTL the scheduler counts
    // it gone anyway, so a delete that is refused or unanswered does not hold up the exit longer
    // (the delete alone would retry for `nats.op_retry_secs`).
    let delete = ctx.workers.delete(&key);
    match tokio::time::timeout(ctx.config.fleet.heartbeat_ttl(), delete).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat not deleted"),
        Err(_) => tracing::debug!("heartbeat not deleted in time"),
    }
}

async fn check_ownership(ctx: &Ctx, state: &State) {
    let me = &state.base.node_id;
    for (key, held, claimed_at, token) in state.held_keys() {
        if token.is_cancelled() {
            continue;
        }
        let read = ctx.segments.get_at_least(&key, claimed_at, Duration::ZERO);
        let rec = match tokio::time::timeout(ctx.retry.try_timeout(0), read).await {
            Ok(Ok(rec)) => rec,
            Ok(Err(KvError::Behind { got, .. })) => {
                tracing::debug!(
                    key,
                    claimed_at,
                    read_at = got,
                    "unit record read older than this node's claim, ignored"
                );
                continue;
            }
            Ok(Err(_)) | Err(_) => continue,
        };
        let read = rec.as_ref().map(|(r, rev)| (r, *rev));
        match unit_protocol::holding(read, me, held.attempt, claimed_at) {
            Holding::Ours | Holding::Finished | Holding::Behind => {}
            Holding::Moved => {
                tracing::warn!(
                    job = %held.job_id,
                    unit = %held.unit,
                    attempt = held.attempt,
                    now_attempt = rec.as_ref().map(|(r, _)| r.attempt),
                    read_at = rec.as_ref().map(|(_, rev)| *rev),
                    claimed_at,
                    "unit was handed to another node, dropping it"
                );
                token.cancel();
            }
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
