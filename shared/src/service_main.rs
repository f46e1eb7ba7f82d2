//! The one start-up sequence every service process goes through, whether started as its own
//! binary (`ffleet-encoder`) or as `ffleet run encoder`: checked config → telemetry → connect
//! (waiting for the server as long as it takes) → run until SIGTERM or SIGINT → drain. A signal
//! before the service is up (still connecting, provisioning, creating its consumers) ends it at
//! once (`shutdown::unless_stopped`).

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

/// The runtime a service process runs on: tokio's multi-threaded one, a worker per core unless
/// `TOKIO_WORKER_THREADS` says otherwise. (Measured with `cargo bench --bench control_plane` on
/// 2 cores: one worker per process had a dispatch p99 under a full backlog three times as
/// long as two, for no less CPU.)
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
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
    config.log_notices();
    let shutdown = shutdown::on_signals();
    let connect = Ctx::connect(Arc::new(config), service, true);
    let Some(ctx) = shutdown::unless_stopped(&shutdown, connect)
        .await
        .transpose()?
    else {
        return Ok(());
    };
    run(ctx, shutdown)
        .await
        .map_err(|e| ServeError::Service(Box::new(e)))
}
