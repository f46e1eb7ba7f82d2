//! The operator's requests to this node (`ffleet drain`, `undrain`; `messages::control`), on
//! the node's own subject: each is applied at once and answered with how the node stands.
//!
//! A drain marks the heartbeat `draining` (the scheduler routes nothing more here) and pauses
//! the slots (nothing new is pulled; a message from a pull already out is handed back). What
//! runs finishes. An undrain undoes both, unless the process is stopping: a stop's drain is not
//! the operator's to take back.

use crate::heartbeat::State;
use ffleet_runtime::messages::control::{NodeAction, NodeControl, NodeState};
use ffleet_runtime::messages::{self, CURRENT};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{NodeId, subjects};
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What a request acts on: the node's heartbeat state, its slots' pause, and whether the
/// process is stopping.
pub struct Control {
    pub node: NodeId,
    pub state: Arc<State>,
    pub paused: watch::Sender<bool>,
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
                    self.state.drain();
                    self.paused.send_replace(true);
                    tracing::info!(node = %self.node, running = self.state.running(), "drained by the operator");
                    None
                }
                NodeAction::Undrain if stopping => {
                    Some("the node is stopping: it cannot be undrained".to_owned())
                }
                NodeAction::Undrain => {
                    self.state.undrain();
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
            running: self.state.running(),
            error,
        }
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
