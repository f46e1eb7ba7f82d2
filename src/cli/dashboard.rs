//! `ffleet dashboard`: serves the web dashboard (`ffleet-dashboard`) until Ctrl-C. It reads
//! with this command's own credentials (the read-only `viewer` role in a secured fleet) and acts
//! (cancel, retry, drain) with the operator's, given in a second configuration file; an
//! unsecured fleet's single connection does both.

use super::Cli;
use anyhow::{Context, Result};
use clap::Args;
use ffleet_runtime::config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub struct DashboardArgs {
    /// Address to serve on. Beyond loopback a token is required (`--token-file`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the token every request must carry (`ffleet secrets init` writes
    /// `dashboard.token`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Configuration with the operator's (admin) credentials, used only for the page's
    /// actions. Without it a secured dashboard only shows.
    #[arg(long)]
    pub operator_config: Option<PathBuf>,
    /// A tracing UI's page for one trace, `{trace_id}` standing for the id (Jaeger:
    /// `http://localhost:16686/trace/{trace_id}`): each job's page links its trace there.
    #[arg(long, env = "FFLEET_DASHBOARD_TRACE_URL")]
    pub trace_url: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds heartbeats are still followed after the last page closed (tests shorten it).
    #[arg(long, default_value_t = 60.0, hide = true)]
    pub linger_secs: f64,
}

impl DashboardArgs {
    /// How it serves, less the token.
    fn serving(&self) -> Serving {
        Serving {
            listen: self.listen,
            trace_url: self.trace_url.clone(),
            linger: std::time::Duration::from_secs_f64(self.linger_secs.clamp(0.1, 86_400.0)),
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(ffleet_dashboard::tls::CertFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => None,
            },
        }
    }
}

/// Where and how the dashboard serves.
#[derive(Debug, Clone)]
pub struct Serving {
    pub listen: SocketAddr,
    pub trace_url: Option<String>,
    pub linger: std::time::Duration,
    pub tls: Option<ffleet_dashboard::tls::CertFiles>,
}

impl Serving {
    /// Plain HTTP on `listen`, no trace links.
    pub fn on(listen: SocketAddr) -> Serving {
        Serving {
            listen,
            trace_url: None,
            linger: ffleet_dashboard::view::LINGER,
            tls: None,
        }
    }
}

pub async fn run(cli: &Cli, a: &DashboardArgs) -> Result<i32> {
    let cfg = cli.load_config()?;
    let _log = ffleet_runtime::telemetry::init(
        &cfg.log,
        ffleet_runtime::telemetry::Role::Service(ffleet_dashboard::SERVICE),
    );
    let shutdown = ffleet_runtime::shutdown::on_signals();
    let bound = bind(cli, a, shutdown.clone()).await?;
    println!("dashboard: {}", bound.url()?);
    bound.serve(shutdown).await?;
    Ok(0)
}

/// Connects with this command's configuration (and the operator's, when given), watches the
/// fleet and binds the address.
pub async fn bind(
    cli: &Cli,
    a: &DashboardArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<ffleet_dashboard::Bound> {
    let cfg = cli.load_config()?;
    let token = match &a.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?
                .trim()
                .to_owned(),
        )
        .filter(|t| !t.is_empty()),
        None => None,
    };
    let operator = match &a.operator_config {
        Some(path) => {
            let mut op = Config::load(Some(path))?;
            if let Some(url) = &cli.server {
                op.nats.url = url.clone();
            }
            Some(op)
        }
        None => None,
    };
    if let Some(url) = &a.trace_url {
        anyhow::ensure!(
            url.contains("{trace_id}")
                && (url.starts_with("http://") || url.starts_with("https://")),
            "--trace-url must be an http(s) URL holding {{trace_id}}, e.g. \
             http://localhost:16686/trace/{{trace_id}}"
        );
    }
    start(cfg, operator, a.serving(), token, shutdown).await
}

/// The dashboard reading with `cfg` and acting with `operator` (an unsecured `cfg` acts
/// itself), serving as `serving` says (what `ffleet up` starts too).
pub async fn start(
    cfg: Config,
    operator: Option<Config>,
    serving: Serving,
    token: Option<String>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<ffleet_dashboard::Bound> {
    let secured = cfg.nats.role.is_some();
    let ctx =
        ffleet_runtime::runtime::Ctx::connect(Arc::new(cfg), ffleet_dashboard::SERVICE, false)
            .await
            .context("connecting to the fleet")?;
    let operator = match operator {
        Some(op) => Some(
            ffleet_runtime::nats::connect::connect(&op.nats, "ffleet-dashboard-operator", false)
                .await
                .context("connecting with the operator's credentials")?,
        ),
        None if !secured => Some(ctx.client.clone()),
        None => None,
    };
    let settings = ffleet_dashboard::Settings {
        listen: serving.listen,
        token,
        trace_url: serving.trace_url,
        tls: serving.tls,
        linger: serving.linger,
    };
    Ok(ffleet_dashboard::bind(ctx, operator, settings, shutdown).await?)
}
