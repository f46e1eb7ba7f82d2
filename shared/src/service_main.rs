//! The one start-up sequence every service process goes through, whether started as its own
//! binary (`ffleet-encoder`) or as `ffleet run encoder`: checked config → telemetry → connect
//! (waiting for the server as long as it takes) → run until SIGTERM or SIGINT → drain.

use crate::config::{Config, ConfigError};
use crate::runtime::{Ctx, CtxError};
use crate::{security, shutdown, telemetry};
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("connecting to NATS: {0}")]
    Connect(#[from] CtxError),
    #[error(transparent)]
    Service(Box<dyn std::error::Error + Send + Sync>),
    #[error("starting the runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The whole `main` of a service binary: config from the usual layers, the service runtime,
/// then `serve`.
pub fn main<F, Fut, E>(service: &'static str, run: F) -> Result<(), ServeError>
where
    F: FnOnce(Ctx, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let config = Config::load(None)?;
    runtime()?.block_on(serve(config, service, run))
}

/// Worker threads of a service process's runtime unless `TOKIO_WORKER_THREADS` says otherwise.
/// A service's own work is small and message-bound (the media work runs in ffmpeg children);
/// measured with `cargo bench --bench control_plane` on 2 cores, one worker per process cost
/// less CPU per segment and carried more segments/s than one per core, whose tasks hand each
/// message between threads.
pub const WORKER_THREADS: usize = 1;

/// The runtime a service process runs on: `WORKER_THREADS` workers (or `TOKIO_WORKER_THREADS`),
/// plus tokio's blocking pool for file work.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(WORKER_THREADS);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
}

/// Runs `service` with `config` until a signal asks it to stop and it has drained.
pub async fn serve<F, Fut, E>(
    mut config: Config,
    service: &'static str,
    run: F,
) -> Result<(), ServeError>
where
    F: FnOnce(Ctx, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    config.validate()?;
    // A service given an nkey runs as its own role unless told otherwise: it then only looks
    // streams up instead of trying to create them.
    if config.nats.role.is_none()
        && (config.nats.nkey_seed.is_some() || config.nats.nkey_seed_file.is_some())
    {
        config.nats.role = security::Role::of_service(service);
    }
    let _log = telemetry::init(&config.log, telemetry::Role::Service(service));
    let shutdown = shutdown::on_signals();
    let ctx = Ctx::connect(Arc::new(config), service, true).await?;
    run(ctx, shutdown)
        .await
        .map_err(|e| ServeError::Service(Box::new(e)))
}
