//! Heartbeats: this node's capabilities, slots and held units, written to the workers bucket
//! every interval and deleted on a clean stop.

use crate::Node;
use ffleet_shared::messages::Heartbeat;
use ffleet_shared::runtime::Ctx;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the heartbeat reports, updated by the slots.
pub struct State {
    base: Heartbeat,
    holding: Mutex<BTreeSet<String>>,
}

impl State {
    pub fn new(node: &Node) -> Self {
        Self {
            base: Heartbeat::new(node.id.clone(), node.capabilities.clone(), node.slots),
            holding: Mutex::default(),
        }
    }

    pub fn hold(&self, what: String) {
        self.holding.lock().expect("hb lock").insert(what);
    }

    pub fn release(&self, what: &str) {
        self.holding.lock().expect("hb lock").remove(what);
    }

    fn snapshot(&self) -> Heartbeat {
        let holding: Vec<String> = self
            .holding
            .lock()
            .expect("hb lock")
            .iter()
            .cloned()
            .collect();
        Heartbeat {
            slots_busy: holding.len() as u32,
            holding,
            at: ffleet_shared::time::now_rfc3339(),
            ..self.base.clone()
        }
    }
}

pub async fn run(ctx: Ctx, state: std::sync::Arc<State>, shutdown: CancellationToken) {
    let every = Duration::from_secs_f64(ctx.config.encoder.heartbeat_interval_secs);
    let key = state.base.node_id.to_string();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = ctx.workers.put(&key, &state.snapshot()).await {
                    tracing::warn!(error = %e, "heartbeat not written");
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    if let Err(e) = ctx.workers.delete(&key).await {
        tracing::debug!(error = %e, "heartbeat not deleted");
    }
}
