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
use ffleet_shared::nats::worker;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{Capability, NodeId, subjects};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub const SERVICE: &str = "encoder";

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

/// Runs the encoder until `shutdown` fires, then drains: no new work is taken, held units may
/// finish within `stop_grace_secs`, what is still running after that is handed back (nak) so
/// another node picks it up at once, and the heartbeat key is deleted last.
pub async fn run(ctx: Ctx, node: Node, shutdown: CancellationToken) -> Result<(), Error> {
    let (mut retries, mut consumers) = (Vec::new(), Vec::new());
    for cap in &node.capabilities {
        for (durable, filter, into) in [
            (
                subjects::retry_consumer(cap),
                subjects::tasks_retry(cap),
                &mut retries,
            ),
            (
                subjects::encode_consumer(cap),
                subjects::tasks_encode(cap),
                &mut consumers,
            ),
        ] {
            let c = ensure_consumer(
                &ctx.js,
                ConsumerSpec {
                    stream: subjects::STREAM_TASKS,
                    durable: &durable,
                    filter,
                    ack_wait: ctx.config.streams.ack_wait(),
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                },
            )
            .await?;
            into.push(c);
        }
    }
    let state = Arc::new(heartbeat::State::new(&node));
    let hb_stop = CancellationToken::new();
    let hb = tokio::spawn(heartbeat::run(ctx.clone(), state.clone(), hb_stop.clone()));
    tracing::info!(node = %node.id, slots = node.slots, capabilities = ?node.capabilities, "encoder running");

    let grace = Duration::from_secs_f64(ctx.config.encoder.stop_grace_secs);
    let drain = {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            state.drain();
            tracing::info!(grace_secs = grace.as_secs_f64(), "encoder draining");
            tokio::time::sleep(grace).await;
            state.cancel_all();
        })
    };

    let wait = Duration::from_secs_f64(ctx.config.encoder.fetch_wait_secs);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..node.slots {
        let (ctx, retries, consumers, shutdown, state, node_id) = (
            ctx.clone(),
            retries.clone(),
            consumers.clone(),
            shutdown.clone(),
            state.clone(),
            node.id.clone(),
        );
        set.spawn(async move {
            // One slot: one unit at a time; re-issued units first, then the backlog, long-polling
            // in short turns so a re-issued unit waits at most one turn on an idle slot.
            let turn = (wait / consumers.len().max(1) as u32).min(Duration::from_secs(1));
            while !shutdown.is_cancelled() {
                let mut next = None;
                for c in &retries {
                    next = worker::try_now(c).await;
                    if next.is_some() {
                        break;
                    }
                }
                if next.is_none() {
                    for c in &consumers {
                        next = worker::try_next(c, turn, &shutdown).await;
                        if next.is_some() {
                            break;
                        }
                    }
                }
                if let Some(msg) = next {
                    let span = ffleet_shared::telemetry::spans::encode(&msg, &node_id);
                    let d = handler::handle(&ctx, &node_id, &state, &msg)
                        .instrument(span)
                        .await;
                    ffleet_shared::nats::ack::finish(&msg, d).await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    drain.abort();
    hb_stop.cancel();
    let _ = hb.await;
    tracing::info!(node = %node.id, "encoder stopped");
    Ok(())
}
