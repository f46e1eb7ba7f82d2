//! The encoder: detects what it can encode, heartbeats into the workers bucket, and runs one pull
//! loop per slot on its capability queues. Each task is claimed in the unit's ownership record,
//! encoded by an ffmpeg child with progress-driven keep-alives, checked, stored, and reported
//! with a `segment_done` event.

mod capabilities;
mod encode;
mod handler;
mod heartbeat;

pub use capabilities::detect;

use ffleet_shared::nats::NatsError;
use ffleet_shared::nats::provision::{ConsumerSpec, ensure_consumer};
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{Capability, NodeId, subjects};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub const SERVICE: &str = "encoder";

/// AckWait of encode consumers; keep-alives go out every third of it.
pub(crate) const ACK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("no encode capability: {0}")]
    NoCapability(String),
}

/// This node's identity and size.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: NodeId,
    pub capabilities: Vec<Capability>,
    pub slots: u32,
}

impl Node {
    /// From config, detecting what config leaves open.
    pub async fn from_config(ctx: &Ctx) -> Result<Node, Error> {
        let cfg = &ctx.config.encoder;
        let id = match &cfg.node_id {
            Some(id) => NodeId::new(id.as_str()).map_err(|e| Error::NoCapability(e.to_string()))?,
            None => NodeId::generate(),
        };
        let capabilities = match &cfg.capabilities {
            Some(list) => list
                .iter()
                .map(|c| Capability::new(c.as_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::NoCapability(e.to_string()))?,
            None => detect(&ctx.config.ffmpeg.ffmpeg).await,
        };
        if capabilities.is_empty() {
            return Err(Error::NoCapability(format!(
                "{} offers none of the encoders ffleet uses (is it installed, with libx264?)",
                ctx.config.ffmpeg.ffmpeg.display()
            )));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Ok(Node {
            id,
            capabilities,
            slots: cfg.slots.unwrap_or(cores),
        })
    }
}

/// Runs the encoder until `shutdown` fires. In-flight units are handed back (nak) on shutdown
/// so another node picks them up at once.
pub async fn run(ctx: Ctx, node: Node, shutdown: CancellationToken) -> Result<(), Error> {
    let mut consumers = Vec::new();
    for cap in &node.capabilities {
        let c = ensure_consumer(
            &ctx.js,
            ConsumerSpec {
                stream: subjects::STREAM_TASKS,
                durable: &subjects::encode_consumer(cap),
                filter: subjects::tasks_encode(cap),
                ack_wait: ACK_WAIT,
                max_deliver: -1,
                max_ack_pending: 10_000,
            },
        )
        .await?;
        consumers.push(c);
    }
    let state = Arc::new(heartbeat::State::new(&node));
    let hb = tokio::spawn(heartbeat::run(ctx.clone(), state.clone(), shutdown.clone()));
    tracing::info!(node = %node.id, slots = node.slots, capabilities = ?node.capabilities, "encoder running");

    let wait = Duration::from_secs_f64(ctx.config.encoder.fetch_wait_secs);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..node.slots {
        let (ctx, consumers, shutdown, state, node_id) = (
            ctx.clone(),
            consumers.clone(),
            shutdown.clone(),
            state.clone(),
            node.id.clone(),
        );
        set.spawn(async move {
            // One slot: take one unit at a time from the first queue that has work.
            let per_queue = wait / consumers.len().max(1) as u32;
            while !shutdown.is_cancelled() {
                for consumer in &consumers {
                    let Some(msg) =
                        ffleet_shared::nats::worker::try_next(consumer, per_queue, &shutdown).await
                    else {
                        continue;
                    };
                    let span = ffleet_shared::telemetry::spans::encode(&msg, &node_id);
                    let d = handler::handle(&ctx, &node_id, &state, &msg, &shutdown)
                        .instrument(span)
                        .await;
                    ffleet_shared::nats::ack::finish(&msg, d).await;
                    break;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    let _ = hb.await;
    tracing::info!(node = %node.id, "encoder stopped");
    Ok(())
}
