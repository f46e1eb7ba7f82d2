//! The encoder: detects what it can encode, heartbeats into the workers bucket, and pulls from
//! its capability queues only while it has free slots for the next task: one pull loop per slot
//! pool (cores for `cpu`, GPU sessions for accelerators), each taking a task only after a slot
//! is free and running it only once all the slots it needs are held, so the node is never
//! over-committed (the shared `worker::slots` loop). Each task is claimed in the unit's
//! ownership record, encoded by an ffmpeg child with progress-driven keep-alives, checked,
//! stored, and reported with a `segment_done` event.

pub mod capabilities;
pub mod config;
mod control;
mod demote;
pub mod encode;
pub mod executor;
mod gpu;
mod handler;
mod heartbeat;
pub mod probe;
mod record;

pub use config::EncoderConfig;
pub use executor::{Executor, Ffmpeg};
pub use gpu::Gpus;

use async_nats::jetstream::Message;
use ffleet_runtime::config::ConfigError;
use ffleet_runtime::ids::IdError;
use ffleet_runtime::messages::heartbeat::{GpuClass, Proof};
use ffleet_runtime::messages::{self, Task};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::durable::Durable;
use ffleet_runtime::nats::provision::{ConsumerSpec, ensure_consumer};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::shutdown::unless_stopped;
use ffleet_runtime::worker;
use ffleet_runtime::worker::slots::{Queues, Slots};
use ffleet_runtime::{Capability, NodeId, subjects};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub const SERVICE: &str = "encoder";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("no encode capability: {0}")]
    NoCapability(String),
    /// A configured node id or capability label that is no valid name.
    #[error("no encode capability: {0}")]
    BadName(#[from] IdError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// This node's identity and size.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub capabilities: Vec<Capability>,
    /// Cores for `cpu` tasks.
    pub slots: u32,
    /// Sessions for accelerator tasks (0 without an accelerator capability).
    pub gpu_slots: u32,
    /// Notable encoders ffmpeg offers here, for heartbeats.
    pub encoders: Vec<String>,
    pub gpus: Arc<Gpus>,
    /// Model and driver of the GPU, when NVML reports one.
    pub gpu_class: Option<GpuClass>,
    /// The start-up tests and their outcomes.
    pub proofs: Vec<Proof>,
}

impl Node {
    /// From config, detecting (and proving) what config leaves open.
    pub async fn from_config(ctx: &Ctx) -> Result<Node, Error> {
        let cfg = EncoderConfig::of(&ctx.config)?;
        let id = match &cfg.node_id {
            Some(id) => NodeId::new(id.as_str())?,
            None => NodeId::generate(),
        };
        let gpus = Arc::new(Gpus::init());
        let (facts, detected) = probe::detect(&ctx.config, &cfg, &gpus).await?;
        let capabilities = detected.capabilities;
        if capabilities.is_empty() {
            return Err(Error::NoCapability(format!(
                "{} offers none of the encoders ffleet uses, or none passed its test encode \
                 (is it installed, with libx264?)",
                ctx.config.ffmpeg.ffmpeg.display()
            )));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let slots = cfg.slots.unwrap_or(cores);
        let gpu_slots = gpu_slots(&cfg, &capabilities, facts.nvml.as_ref(), slots);
        Ok(Node {
            id,
            capabilities,
            slots,
            gpu_slots,
            encoders: detected.encoders,
            gpus,
            gpu_class: detected.gpu_class,
            proofs: detected.proofs,
        })
    }
}

/// Accelerator sessions: configured, else as the driver allows them; a node labelled with an
/// accelerator but without an NVIDIA GPU (tests) gets its core slots; none without one.
pub fn gpu_slots(
    cfg: &EncoderConfig,
    caps: &[Capability],
    nvml: Option<&capabilities::NvmlFacts>,
    slots: u32,
) -> u32 {
    match (caps.iter().any(Capability::is_gpu), nvml) {
        (false, _) => 0,
        (true, Some(n)) if !n.gpus.is_empty() => cfg
            .gpu_slots
            .unwrap_or_else(|| capabilities::default_gpu_sessions(n)),
        (true, _) => cfg.gpu_slots.unwrap_or(slots),
    }
}

/// Runs the encoder until `shutdown` fires, then drains: no new work is taken, held units may
/// finish within `stop_grace_secs`, what is still running after that is handed back (nak) so
/// another node picks it up at once, and the heartbeat key is deleted last.
/// Probes this node's capabilities and runs it (what the service binary does).
pub async fn start(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let Some(node) = unless_stopped(&shutdown, Node::from_config(&ctx))
        .await
        .transpose()?
    else {
        return Ok(());
    };
    run(ctx, node, shutdown).await
}

pub async fn run(ctx: Ctx, node: Node, shutdown: CancellationToken) -> Result<(), Error> {
    run_with(ctx, node, Arc::new(Ffmpeg), shutdown).await
}

/// `run` with another executor than the ffmpeg child (a program embedding the library).
pub async fn run_with(
    ctx: Ctx,
    node: Node,
    exec: Arc<dyn Executor>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let settings = EncoderConfig::of(&ctx.config)?;
    let Some((retries, consumers)) = unless_stopped(&shutdown, durables(&ctx, &node))
        .await
        .transpose()?
    else {
        return Ok(());
    };
    let grace = Duration::from_secs_f64(settings.stop_grace_secs);
    let wait = Duration::from_secs_f64(settings.fetch_wait_secs);
    let state = Arc::new(heartbeat::State::new(&node, settings));
    let hb_stop = CancellationToken::new();
    let hb = tokio::spawn(heartbeat::run(ctx.clone(), state.clone(), hb_stop.clone()));
    tracing::info!(node = %node.id, slots = node.slots, capabilities = ?node.capabilities, "encoder running");

    let (paused, resumed) = tokio::sync::watch::channel(false);
    let paused = Arc::new(paused);
    let in_flight = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let control = tokio::spawn(control::serve(
        ctx.clone(),
        control::Control {
            node: node.id.clone(),
            state: state.clone(),
            paused: paused.clone(),
            in_flight: in_flight.clone(),
            stopping: shutdown.clone(),
        },
    ));
    let drops = tokio::spawn(control::serve_drops(
        ctx.clone(),
        node.id.clone(),
        state.clone(),
    ));
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

    let mut set = JoinSet::new();
    for gpu in [true, false] {
        let of_kind = |all: &Vec<Durable>| -> Vec<Durable> {
            node.capabilities
                .iter()
                .zip(all)
                .filter(|(c, _)| c.is_gpu() == gpu)
                .map(|(_, q)| q.clone())
                .collect()
        };
        let (priority, backlog) = (of_kind(&retries), of_kind(&consumers));
        let total = if gpu { node.gpu_slots } else { node.slots };
        if backlog.is_empty() || total == 0 {
            continue;
        }
        let queues = Queues {
            priority,
            backlog,
            wait,
        };
        let slots = Slots {
            total,
            keep_alive: ctx.config.streams.ack_wait() / 3,
            paused: Some(resumed.clone()),
            in_flight: Some(in_flight.clone()),
        };
        let (ctx, node, state, exec) = (ctx.clone(), node.id.clone(), state.clone(), exec.clone());
        set.spawn(worker::slots::run(
            queues,
            slots,
            shutdown.clone(),
            // Decoded once, here: an undecodable task takes one slot; the handler terminates it.
            |msg: &Message| {
                let task = messages::decode::<Task>("task", &msg.payload);
                (task.as_ref().map_or(1, |t| t.slots), task)
            },
            move |msg, task, need| {
                let (ctx, node, state, exec) =
                    (ctx.clone(), node.clone(), state.clone(), exec.clone());
                let span = ffleet_runtime::telemetry::spans::encode(&msg, &node);
                async move { handler::handle(&ctx, &node, &state, &msg, task, need, &*exec).await }
                    .instrument(span)
            },
        ));
    }
    while set.join_next().await.is_some() {}
    drain.abort();
    control.abort();
    drops.abort();
    drop(paused);
    hb_stop.cancel();
    let _ = hb.await;
    tracing::info!(node = %node.id, "encoder stopped");
    Ok(())
}

/// Each capability's retry and encode consumers (shared durables, created if missing), in the
/// order of `node.capabilities`.
async fn durables(ctx: &Ctx, node: &Node) -> Result<(Vec<Durable>, Vec<Durable>), Error> {
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
                ctx.retry,
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
    Ok((retries, consumers))
}
