//! The operator's requests to this node (`ffleet drain`, `undrain`; `messages::control`), on
//! the node's own subject: each is applied at once and answered with how the node stands.
//!
//! A drain pauses the slots (nothing new is pulled; a message from a pull already out, or one
//! still waiting for its slots, is handed back) and marks the heartbeat `draining` (the
//! scheduler routes nothing more here). What runs finishes; the answer counts what is in hand,
//! claims under way included, so `--wait` ends only once nothing is. An undrain undoes both; it
//! never takes back a stop's drain (the heartbeat keeps saying `draining` while stopping).
//!
//! The scheduler's drops (`serve_drops`) arrive on a subject of their own: a job that ended has
//! its encodes here cancelled and its tasks let go (`State::drop_job`).

use crate::heartbeat::State;
use ffleet_runtime::messages::control::{JobDrop, NodeAction, NodeControl, NodeState};
use ffleet_runtime::messages::{self, CURRENT};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{NodeId, subjects};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a request acts on: the node's heartbeat state, its slots' pause and count of messages
/// in hand, and whether the process is stopping.
pub struct Control {
    pub node: NodeId,
    pub state: Arc<State>,
    /// Held by the encoder's run as well, so the pause outlives this task.
    pub paused: Arc<watch::Sender<bool>>,
    pub in_flight: Arc<AtomicU32>,
    pub stopping: CancellationToken,
}

impl Control {
    /// Applies one request; the answer says how the node stands after it.
    pub fn apply(&self, payload: &[u8]) -> NodeState {
        let stopping = self.stopping.is_cancelled();
        let error = match NodeControl::parse(payload) {
            Err(e) => Some(e.to_string()),
            Ok(req) => match req.action {
                NodeAction::Drain => {
                    // Paused first: every message taken after this is handed back, and every
                    // one taken before is already counted in `in_flight`.
                    self.paused.send_replace(true);
                    self.state.set_drained(true);
                    tracing::info!(node = %self.node, running = self.running(), "drained by the operator");
                    None
                }
                NodeAction::Undrain if stopping => {
                    Some("the node is stopping: it cannot be undrained".to_owned())
                }
                NodeAction::Undrain => {
                    self.state.set_drained(false);
                    self.paused.send_replace(false);
                    tracing::info!(node = %self.node, "undrained by the operator");
                    None
                }
                NodeAction::Show => None,
            },
        };
        NodeState {
            version: CURRENT,
            node: self.node.clone(),
            draining: self.state.is_draining(),
            stopping,
            running: self.running(),
            error,
        }
    }

    /// Units in hand: taken from a queue and not yet finished (claiming, running, or being
    /// handed back).
    fn running(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Serves the node's control subject until the subscription ends (the task is aborted when
/// the encoder stops). A request without a reply subject is applied all the same.
pub async fn serve(ctx: Ctx, control: Control) {
    let subject = subjects::node_control(&control.node);
    let mut sub = match ctx.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(subject, error = %e, "node control unavailable: cannot subscribe");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let answer = control.apply(&msg.payload);
        if let Some(reply) = msg.reply
            && let Err(e) = ctx.client.publish(reply, messages::encode(&answer)).await
        {
            tracing::warn!(error = %e, "node control answer not sent");
        }
    }
}

/// Applies the word that jobs ended: the scheduler's drops for this node
/// (`subjects::node_drop`) and what every node hears (`subjects::jobs_ended`), until the
/// subscriptions end (the task is aborted when the encoder stops).
pub async fn serve_drops(ctx: Ctx, node: NodeId, state: Arc<State>) {
    let mut subs = Vec::new();
    for subject in [subjects::node_drop(&node), subjects::jobs_ended()] {
        match ctx.client.subscribe(subject.clone()).await {
            Ok(s) => subs.push(s),
            Err(e) => {
                tracing::warn!(subject, error = %e, "ended jobs' units cannot be dropped: cannot subscribe");
            }
        }
    }
    let mut sub = futures::stream::select_all(subs);
    while let Some(msg) = sub.next().await {
        match JobDrop::parse(&msg.payload) {
            Ok(d) => {
                let cancelled = state.drop_job(&d.job_id);
                if cancelled > 0 {
                    tracing::info!(job = %d.job_id, cancelled, "job ended: its units here dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "undecodable job drop ignored"),
        }
    }
}
