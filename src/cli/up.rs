//! `ffleet up` (a local cluster that stays up) and `ffleet run <service>` (one service, for
//! containers and real deployments).

use super::Cli;
use crate::local::{Cluster, ClusterSpec, NatsServer};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ffleet_shared::runtime::Ctx;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory for the NATS store and scratch media.
    #[arg(long, default_value = "ffleet-data")]
    pub data: PathBuf,
    /// Port of the NATS server.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Encoder nodes to run.
    #[arg(long, default_value_t = 1)]
    pub encoders: usize,
    /// Directories jobs may read from and write to (default: the working directory).
    #[arg(long = "root")]
    pub roots: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Service {
    Splitter,
    Scheduler,
    Encoder,
    Merger,
}

pub async fn up(cli: &Cli, a: &UpArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.data)?;
    let data = std::fs::canonicalize(&a.data)?;
    let server = NatsServer::start_at(&data.join("nats"), a.port)?;
    let mut cfg = cli.load_config()?;
    cfg.nats.url = server.url.clone();
    cfg.storage.scratch = data.join("scratch");
    let roots = if a.roots.is_empty() {
        vec![std::env::current_dir()?]
    } else {
        a.roots.clone()
    };
    if cfg.storage.input_roots.is_empty() {
        cfg.storage.input_roots = roots.clone();
    }
    if cfg.storage.output_roots.is_empty() {
        cfg.storage.output_roots = roots;
    }
    cfg.validate()?;
    let _log = ffleet_shared::telemetry::init(&cfg.log, ffleet_shared::telemetry::Role::Cluster);
    let shutdown = ffleet_shared::shutdown::on_signals();
    let mut cluster = Cluster::start(
        Arc::new(cfg.clone()),
        ClusterSpec {
            encoders: a.encoders.max(1),
            slots: None,
            control_plane: true,
        },
    )
    .await?;
    println!("ffleet is up: NATS at {}", server.url);
    println!(
        "roots: {}",
        cfg.storage
            .input_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "submit with: ffleet -s {} submit IN -o OUT --wait",
        server.url
    );
    let code = tokio::select! {
        _ = shutdown.cancelled() => 0,
        ended = cluster.join_next() => {
            if let Some((name, r)) = ended {
                eprintln!("ffleet: {name} stopped: {:?}", r.err());
            }
            1
        }
    };
    cluster.stop().await;
    Ok(code)
}

pub async fn run_service(cli: &Cli, service: Service) -> Result<i32> {
    let cfg = cli.load_config()?;
    cfg.validate()?;
    let name = match service {
        Service::Splitter => ffleet_splitter::SERVICE,
        Service::Scheduler => ffleet_scheduler::SERVICE,
        Service::Encoder => ffleet_encoder::SERVICE,
        Service::Merger => ffleet_merger::SERVICE,
    };
    let _log =
        ffleet_shared::telemetry::init(&cfg.log, ffleet_shared::telemetry::Role::Service(name));
    let shutdown = ffleet_shared::shutdown::on_signals();
    let cfg = Arc::new(cfg);
    let ctx = Ctx::connect(cfg, name, true)
        .await
        .context("connecting to NATS")?;
    match service {
        Service::Splitter => ffleet_splitter::run(ctx, shutdown).await?,
        Service::Scheduler => ffleet_scheduler::run(ctx, shutdown).await?,
        Service::Merger => ffleet_merger::run(ctx, shutdown).await?,
        Service::Encoder => {
            let node = ffleet_encoder::Node::from_config(&ctx).await?;
            ffleet_encoder::run(ctx, node, shutdown).await?
        }
    }
    Ok(0)
}
