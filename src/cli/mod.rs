//! The `ffleet` command line. Connections find the server as the nats CLI does: `-s/--server`,
//! else `NATS_URL`, else the configuration, else `nats://127.0.0.1:4222`.

mod ask;
mod capabilities;
mod dashboard;
mod display;
mod follow;
mod health;
mod nodes;
mod retry;
mod secrets;
mod status;
mod submit;
mod transcode;
mod up;
mod upload;

pub use ask::{service_error, status as ask_status};
pub use follow::{Link, Outcome, Subscriptions, follow, subscribe};
pub use submit::{JobArgs, SubmitArgs, build_request};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ffleet_runtime::JobId;
use ffleet_runtime::config::Config;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "ffleet",
    version,
    about = "Chunked FFmpeg transcoding across a fleet, over NATS JetStream"
)]
pub struct Cli {
    /// Configuration file (default: ./ffleet.toml when present).
    #[arg(long, global = true, env = "FFLEET_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma-separated.
    #[arg(short = 's', long = "server", global = true, env = "NATS_URL")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Transcode one file on this machine: private NATS, all services in-process, no setup.
    Transcode(transcode::TranscodeArgs),
    /// Run a local cluster (nats-server + every service) until interrupted.
    Up(up::UpArgs),
    /// Run one service against an existing NATS server.
    Run {
        #[arg(value_enum)]
        service: up::Service,
    },
    /// Submit a job to a running cluster.
    Submit(submit::SubmitArgs),
    /// Show jobs, or one job.
    Status {
        /// Job id.
        job: Option<String>,
    },
    /// Stop a job: its units are dropped, its media removed, no output is left. Answers with
    /// the job's final state (a job that had already ended is left as it is).
    Cancel {
        /// Job id.
        job: String,
    },
    /// Run a failed or cancelled job again, as a new job (`<id>-r<n>`, printed) that reuses
    /// the segments the first run encoded. A job is retried once: asking again answers with
    /// the same new job (retry that one if it fails too).
    Retry {
        /// Job id.
        job: String,
        /// Follow the new job until it ends; exit as `submit --wait` does.
        #[arg(long)]
        wait: bool,
    },
    /// Change a job's priority: its units not yet released go out at the new one (admin
    /// credentials).
    Priority {
        /// Job id (a tenant's as `<tenant>=<id>`).
        job: String,
        /// The new priority, -100..=100 (higher goes first).
        #[arg(allow_negative_numbers = true)]
        priority: i32,
    },
    /// Show the live encoder pool.
    Workers,
    /// Serve the web dashboard: the fleet and its jobs, live, with cancel, retry and drain.
    Dashboard(dashboard::DashboardArgs),
    /// Stop routing work to an encoder node; what it runs finishes (admin credentials).
    Drain {
        /// Node id, as `ffleet workers` lists it.
        node: String,
        /// Wait until the node runs nothing (then it can be stopped with no lost work).
        #[arg(long)]
        wait: bool,
    },
    /// Route work to a drained encoder node again (admin credentials).
    Undrain {
        /// Node id, as `ffleet workers` lists it.
        node: String,
    },
    /// Secrets for a secured deployment (TLS and per-role NATS credentials).
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// Create the streams and buckets (with admin credentials; services only look them up).
    Provision {
        /// Also raise the guards of streams an earlier release created (roll-ups refused, purges
        /// denied where no service purges). Only once every process runs this release: an
        /// earlier release's encoders write object metadata with a roll-up.
        #[arg(long)]
        raise_guards: bool,
    },
    /// Container healthcheck: exit 0 only when the service beside it reports `ready` in its
    /// health file (`nats.health_file`).
    Health(health::HealthArgs),
    /// Show what an encoder on this machine would offer: NVML readings, test encodes and
    /// decodes with their outcomes, capabilities (no NATS needed).
    Capabilities(capabilities::CapabilitiesArgs),
}

impl Cli {
    /// Configuration layers, with `-s/NATS_URL` on top.
    pub fn load_config(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(url) = &self.server {
            cfg.nats.url = url.clone();
        }
        Ok(cfg)
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Transcode(a) => transcode::run(&cli, a).await,
        Command::Up(a) => up::up(&cli, a).await,
        Command::Run { service } => up::run_service(&cli, *service).await,
        Command::Submit(a) => submit::run(&cli, a).await,
        Command::Status { job } => status::status(&cli, job.as_deref()).await,
        Command::Cancel { job } => status::cancel(&cli, job).await,
        Command::Retry { job, wait } => retry::run(&cli, job, *wait).await,
        Command::Priority { job, priority } => status::priority(&cli, job, *priority).await,
        Command::Workers => status::workers(&cli).await,
        Command::Dashboard(a) => dashboard::run(&cli, a).await,
        Command::Drain { node, wait } => {
            nodes::control(
                &cli,
                node,
                ffleet_runtime::messages::NodeAction::Drain,
                *wait,
            )
            .await
        }
        Command::Undrain { node } => {
            nodes::control(
                &cli,
                node,
                ffleet_runtime::messages::NodeAction::Undrain,
                false,
            )
            .await
        }
        Command::Capabilities(a) => capabilities::run(&cli, a).await,
        Command::Secrets { command } => secrets::run(&cli, command),
        Command::Provision { raise_guards } => secrets::provision(&cli, *raise_guards).await,
        Command::Health(a) => health::run(&cli, a),
    }
}

/// Logging and telemetry for a command run by a person: warnings only on the console unless
/// asked for more (the OTLP export keeps the configured level).
pub(crate) fn telemetry(cli: &Cli) -> Result<ffleet_runtime::telemetry::Guard> {
    let cfg = cli.load_config()?;
    let guard = ffleet_runtime::telemetry::init(&cfg.log, ffleet_runtime::telemetry::Role::Command);
    cfg.log_notices();
    Ok(guard)
}

/// A plain client connection for commands that need no provisioning (submit): the jobs bucket
/// is opened only when the configured role may read it.
pub(crate) struct ClientLink {
    pub client: async_nats::Client,
    pub config: std::sync::Arc<Config>,
    /// How this client's JetStream operations retry (from `config`).
    pub retry: ffleet_runtime::nats::retry::Policy,
    pub follow: follow::Link,
}

impl ClientLink {
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        ffleet_runtime::nats::connect::jetstream(self.client.clone(), &self.config.nats)
    }
}

/// The job a client names `id`: a tenant's client names its own jobs (scoped here to its
/// tenant), any other the fleet's ids as they are.
pub(crate) fn job_of(cfg: &ffleet_runtime::config::Config, id: &str) -> Result<JobId> {
    Ok(match &cfg.nats.tenant {
        Some(t) => JobId::scoped(t, &JobId::plain(id)?),
        None => {
            let job = JobId::new(id)?;
            if let Some(t) = job.tenant()
                && cfg
                    .nats
                    .role
                    .is_some_and(|r| r != ffleet_runtime::security::Role::Admin)
            {
                anyhow::bail!(
                    "{id} is a job of tenant {t}: ask with that tenant's credentials \
                     (nats.tenant = \"{t}\"), by its own id {}",
                    job.local()
                );
            }
            job
        }
    })
}

pub(crate) async fn connect_link(cli: &Cli) -> Result<ClientLink> {
    let cfg = cli.load_config()?;
    let tenant = cfg.nats.tenant.is_some();
    if !tenant && cfg.nats.role.is_none_or(|r| r.provisions()) {
        // Unsecured deployments (and admins) keep provisioning on first use.
        let ctx = client(cli).await?;
        return Ok(ClientLink {
            client: ctx.client.clone(),
            config: ctx.config.clone(),
            retry: ctx.retry,
            follow: follow::Link::of(&ctx),
        });
    }
    crate::settings::validate(&cfg)?;
    let url = cfg.nats.url.clone();
    ffleet_runtime::health::init(cfg.nats.health_file.clone());
    let retry = ffleet_runtime::nats::retry::Policy::from_config(&cfg.nats);
    let client = ffleet_runtime::nats::connect(&cfg.nats, "ffleet-client", false)
        .await
        .with_context(|| format!("cannot reach ffleet's NATS server at {url}"))?;
    let jobs = if !tenant && cfg.nats.role.is_none_or(|r| r.reads_job_records()) {
        let js = ffleet_runtime::nats::connect::jetstream(client.clone(), &cfg.nats);
        match js
            .get_key_value(ffleet_runtime::subjects::BUCKET_JOBS)
            .await
        {
            Ok(store) => Some(ffleet_runtime::nats::kv::Typed::new(
                store,
                "job record",
                retry,
            )),
            Err(e) => {
                tracing::debug!(error = %e, "jobs bucket not readable, following by events only");
                None
            }
        }
    } else {
        None
    };
    Ok(ClientLink {
        follow: follow::Link {
            client: client.clone(),
            jobs,
        },
        client,
        config: std::sync::Arc::new(cfg),
        retry,
    })
}

/// Connects a client context (no waiting: a missing server is reported at once).
pub(crate) async fn client(cli: &Cli) -> Result<ffleet_runtime::runtime::Ctx> {
    let cfg = cli.load_config()?;
    crate::settings::validate(&cfg)?;
    // Only the admin may read the whole fleet's state (and provision): fail at once instead of
    // waiting on requests the server refuses.
    if let Some(role) = cfg.nats.role
        && role != ffleet_runtime::security::Role::Admin
    {
        anyhow::bail!("the {role} role may not do this; use admin credentials for this command");
    }
    let url = cfg.nats.url.clone();
    ffleet_runtime::runtime::Ctx::connect(std::sync::Arc::new(cfg), "client", false)
        .await
        .with_context(|| format!("cannot reach ffleet's NATS server at {url}"))
}
