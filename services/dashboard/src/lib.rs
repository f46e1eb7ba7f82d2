//! The web dashboard (`ffleet dashboard`): the fleet and its jobs, live, on one page, with a
//! page per job, and the operator's actions (cancel, retry, drain). It reads through two KV
//! watches (`view`) with its own connection, which in a secured deployment is the read-only
//! `viewer` role's; actions go through a second, operator's connection when one is given.
//! Everything it serves is compiled into the binary: nothing is fetched at run time.

mod actions;
mod auth;
pub mod charts;
pub mod job_events;
pub mod render;
mod server;
pub mod throughput;
pub mod tls;
mod upload;
pub mod view;

use ffleet_runtime::runtime::Ctx;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "dashboard";

/// How long start-up waits for the buckets' first pass before serving anyway.
const FIRST_PASS_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the dashboard listens on {0}, beyond loopback: it needs a token (--token-file; \
         `ffleet secrets init` writes one)"
    )]
    NoToken(SocketAddr),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the work directory {dir}: {source}")]
    WorkDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nats(#[from] ffleet_runtime::nats::NatsError),
}

/// How the dashboard serves.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Required of every request when set (and required to listen beyond loopback).
    pub token: Option<String>,
    /// A tracing UI's page of one trace, `{trace_id}` standing for its id (Jaeger:
    /// `http://host:16686/trace/{trace_id}`): a job's page links its trace there.
    pub trace_url: Option<String>,
    /// Serve HTTPS with this certificate (`None`: plain HTTP).
    pub tls: Option<tls::CertFiles>,
    /// How long heartbeats are still followed after the last page went.
    pub linger: std::time::Duration,
}

/// A dashboard bound to its address, not serving yet (`serve`).
pub struct Bound {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<server::App>,
}

impl Bound {
    /// The address it listens on (the port the system chose, for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Its address as a URL.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}/", self.local_addr()?))
    }

    /// Serves until `shutdown` fires.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let router = server::router(self.app);
        match self.tls {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(self.listener, acceptor)?;
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
            None => {
                axum::serve(self.listener, router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
        }
    }
}

/// Starts watching the fleet with `ctx` and binds `settings.listen`. `operator` is the
/// connection actions go through (`None`: the pages offer none).
pub async fn bind(
    ctx: Ctx,
    operator: Option<async_nats::Client>,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<Bound, Error> {
    if !settings.listen.ip().is_loopback() && settings.token.is_none() {
        return Err(Error::NoToken(settings.listen));
    }
    // A certificate that does not fit is refused before anything starts.
    let tls = settings.tls.as_ref().map(tls::acceptor).transpose()?;
    let view = view::View::watch(&ctx, settings.linger, shutdown.clone()).await?;
    // The first page shows what the buckets hold, not a fleet still loading.
    view.loaded(FIRST_PASS_WITHIN).await;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: settings.listen,
            source,
        })?;
    // Uploads go through the operator's connection, staged in a work directory of its own.
    // Only where media travels through the bucket: a shared-directory fleet reads files.
    let bucket =
        ctx.config.storage.backend == ffleet_runtime::storage::config::StorageBackend::ObjectStore;
    let uploads = match &operator {
        Some(op) if bucket => Some(upload::Uploads::new(op, ctx.config.clone()).map_err(
            |source| Error::WorkDir {
                dir: ctx.config.storage.work_dir.clone(),
                source,
            },
        )?),
        _ => None,
    };
    let app = Arc::new(server::App {
        uploads,
        view,
        ctx,
        gate: auth::Gate::new(settings.token, settings.listen.ip(), tls.is_some()),
        operator,
        shutdown: shutdown.clone(),
        trace_url: settings.trace_url,
    });
    Ok(Bound { listener, tls, app })
}
