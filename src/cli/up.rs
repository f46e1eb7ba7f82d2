//! `ffleet up` (a local cluster that stays up; `--secure`: TLS and per-role credentials, made
//! in the data directory on first use) and `ffleet run <service>` (one service, for containers
//! and real deployments).

use super::Cli;
use crate::local::{Cluster, ClusterSpec, NatsServer};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Directory for the NATS store and scratch media (default: `$XDG_STATE_HOME/ffleet`,
    /// else `~/.local/state/ffleet`). It must lie outside every root: a job could otherwise
    /// read another job's cut, or the server's store, as its input.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Port of the NATS server.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// Encoder nodes to run.
    #[arg(long, default_value_t = 1)]
    pub encoders: usize,
    /// Directories jobs may read from and write to (default: the working directory).
    #[arg(long = "root")]
    pub roots: Vec<PathBuf>,
    /// TLS for every connection and one NATS identity per role, with the secrets in
    /// DATA/secrets (made on first use).
    #[arg(long)]
    pub secure: bool,
    /// Address of the web dashboard (`ffleet dashboard`); on loopback unless told.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub dashboard: std::net::SocketAddr,
    /// Do not start the web dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Service {
    Splitter,
    Scheduler,
    Encoder,
    Merger,
}

/// Where `ffleet up` keeps its data unless told: a per-user state directory, away from the
/// working directory that serves as the default root.
fn default_data_dir() -> Result<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .context("no --data given and neither XDG_STATE_HOME nor HOME is set")?;
    Ok(state.join("ffleet"))
}

pub async fn up(cli: &Cli, a: &UpArgs) -> Result<i32> {
    let data = match &a.data {
        Some(d) => d.clone(),
        None => default_data_dir()?,
    };
    let mut cfg = cli.load_config()?;
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
    // Checked before anything is created inside a root.
    cfg.roots_must_not_contain(&data, "the data directory (--data)")?;
    std::fs::create_dir_all(&data)?;
    let data = std::fs::canonicalize(&data)?;
    cfg.storage.scratch = data.join("scratch");
    cfg.storage.work_dir = data.join("work");
    crate::settings::validate(&cfg)?;
    let secrets = if a.secure {
        Some(crate::secrets::Secrets::open_or_init(
            &data.join("secrets"),
            &[],
            &cfg.storage.bucket,
        )?)
    } else {
        None
    };
    let server = match &secrets {
        Some(s) => NatsServer::start_with(
            &data.join("nats"),
            a.port,
            vec!["-c".into(), s.server_conf().display().to_string()],
        )?,
        None => NatsServer::start_at(&data.join("nats"), a.port)?,
    };
    let url = match &secrets {
        Some(_) => crate::secrets::tls_url(&server.url),
        None => server.url.clone(),
    };
    cfg.nats.url = url.clone();
    let _log = ffleet_runtime::telemetry::init(&cfg.log, ffleet_runtime::telemetry::Role::Cluster);
    cfg.log_notices();
    let shutdown = ffleet_runtime::shutdown::on_signals();
    let mut cluster = Cluster::start_as(
        Arc::new(cfg.clone()),
        ClusterSpec {
            encoders: a.encoders.max(1),
            slots: None,
            control_plane: true,
        },
        secrets.as_ref(),
    )
    .await?;
    println!("ffleet is up: NATS at {url}");
    let _dashboard = if a.no_dashboard {
        None
    } else {
        dashboard(&cfg, secrets.as_ref(), a.dashboard, shutdown.child_token()).await
    };
    println!(
        "roots: {}",
        cfg.storage
            .input_roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match &secrets {
        None => println!("submit with: ffleet -s {url} submit IN -o OUT --wait"),
        Some(s) => println!(
            "submit with: FFLEET_NATS__ROLE=submitter FFLEET_NATS__NKEY_SEED_FILE={} \
             FFLEET_NATS__TLS_CA_FILE={} FFLEET_NATS__TLS_CERT_FILE={} \
             FFLEET_NATS__TLS_KEY_FILE={} ffleet -s {url} submit IN -o OUT --wait",
            s.seed(ffleet_runtime::security::Role::Submitter).display(),
            s.ca().display(),
            s.client_cert().display(),
            s.client_key().display()
        ),
    }
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

/// Starts the dashboard beside the cluster (reading as the viewer, acting as the admin in a
/// secured one; the dashboard token from the secrets beyond loopback) and prints its URL. A
/// dashboard that cannot start (its port taken) is reported, not fatal: the fleet runs on.
async fn dashboard(
    cfg: &ffleet_runtime::config::Config,
    secrets: Option<&crate::secrets::Secrets>,
    listen: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    use ffleet_runtime::config::Config;
    use ffleet_runtime::security::Role;
    let as_role = |role: Role| match secrets {
        Some(s) => Config {
            nats: s.nats_config(&cfg.nats, role),
            ..cfg.clone()
        },
        None => cfg.clone(),
    };
    let token = secrets
        .filter(|_| !listen.ip().is_loopback())
        .and_then(|s| std::fs::read_to_string(s.dashboard_token()).ok())
        .map(|t| t.trim().to_owned());
    let operator = secrets.map(|_| as_role(Role::Admin));
    match super::dashboard::start(
        as_role(Role::Viewer),
        operator,
        super::dashboard::Serving::on(listen),
        token,
        shutdown.clone(),
    )
    .await
    {
        Ok(bound) => {
            match bound.url() {
                Ok(url) => println!("dashboard: {url}"),
                Err(e) => eprintln!("ffleet: dashboard address unknown: {e}"),
            }
            Some(tokio::spawn(async move {
                if let Err(e) = bound.serve(shutdown).await {
                    eprintln!("ffleet: the dashboard stopped: {e}");
                }
            }))
        }
        Err(e) => {
            eprintln!("ffleet: the dashboard did not start ({e:#}); the fleet runs without it");
            None
        }
    }
}

pub async fn run_service(cli: &Cli, service: Service) -> Result<i32> {
    use ffleet_runtime::service_main::serve;
    let cfg = cli.load_config()?;
    // Every section, before the service waits for its server: a typo is reported at once.
    crate::settings::validate(&cfg)?;
    match service {
        Service::Splitter => serve(cfg, ffleet_splitter::SERVICE, ffleet_splitter::run).await?,
        Service::Scheduler => serve(cfg, ffleet_scheduler::SERVICE, ffleet_scheduler::run).await?,
        Service::Merger => serve(cfg, ffleet_merger::SERVICE, ffleet_merger::run).await?,
        Service::Encoder => serve(cfg, ffleet_encoder::SERVICE, ffleet_encoder::start).await?,
    }
    Ok(0)
}
