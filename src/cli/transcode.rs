//! `ffleet transcode IN -o OUT`: the whole system on one machine with zero setup. A private
//! nats-server on a free port with a temporary store, every service in-process (encoders sized to
//! the machine), a progress bar, a one-line summary, exit 0 only for a verified output.

use super::Cli;
use super::submit::{JobArgs, SubmitArgs, build_request};
use crate::local::{Cluster, ClusterSpec, NatsServer};
use anyhow::{Context, Result, bail};
use clap::Args;
use ffleet_runtime::config::StorageBackend;
use ffleet_runtime::messages;
use ffleet_runtime::nats::{publish, retry};
use ffleet_runtime::subjects;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Longest the command waits for its encoders to be counted before it submits (they start in
/// well under a second; a start-up test encode on a slow machine takes longer).
const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct TranscodeArgs {
    #[command(flatten)]
    pub job: JobArgs,
    /// Encoder nodes to run in-process.
    #[arg(long, default_value_t = 1)]
    pub encoders: usize,
    /// Slots per encoder (default: CPU cores shared among the encoders).
    #[arg(long)]
    pub slots: Option<u32>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write wall time, CPU accounting and where the units ran as JSON here (benchmarks,
    /// scripts/gpu-check.sh).
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Kind of encoder wanted: gpu, cpu or any (GPU-preferring work spills to CPU when no
    /// node offers a GPU capability, e.g. on a GPU without NVENC).
    #[arg(long, default_value = "any", value_parser = super::submit::parse_preference)]
    pub prefer: ffleet_runtime::messages::Preference,
    /// How media moves between the in-process services: shared-dir (no copies) or
    /// object-store (through the private server, as a fleet of separate machines would; for
    /// measuring what the copies cost).
    #[arg(long, default_value = "shared-dir", value_parser = parse_backend)]
    pub storage: StorageBackend,
}

fn parse_backend(s: &str) -> Result<StorageBackend, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("{s:?} is not one of shared-dir, object-store"))
}

pub async fn run(cli: &Cli, a: &TranscodeArgs) -> Result<i32> {
    let input = std::fs::canonicalize(&a.job.input)
        .with_context(|| format!("input {} does not exist", a.job.input.display()))?;
    if !input.is_file() {
        bail!("input {} is not a file", input.display());
    }
    let output = if a.job.output.is_absolute() {
        a.job.output.clone()
    } else {
        std::env::current_dir()?.join(&a.job.output)
    };
    let out_dir = output
        .parent()
        .filter(|d| d.is_dir())
        .with_context(|| {
            format!(
                "the directory of output {} does not exist",
                output.display()
            )
        })?
        .to_path_buf();
    let in_dir = input
        .parent()
        .context("input has no directory")?
        .to_path_buf();

    let started = Instant::now();
    let mut cfg = cli.load_config()?;
    cfg.storage.input_roots = vec![in_dir];
    // The one input is the file named on this command line, read by the user who named it:
    // whatever other names it has, no one else chose it.
    cfg.storage.allow_hard_links = true;
    cfg.storage.output_roots = vec![std::fs::canonicalize(&out_dir)?];
    let scratch = private_scratch(&cfg)?;
    let server = NatsServer::start_temp()?;
    cfg.nats.url = server.url.clone();
    // One host: the shared directory moves media with no copies (unless asked otherwise).
    cfg.storage.backend = a.storage;
    cfg.storage.scratch = scratch.path().join("media");
    cfg.storage.work_dir = scratch.path().join("work");
    crate::settings::validate(&cfg)?;
    let _log = ffleet_runtime::telemetry::init(&cfg.log, ffleet_runtime::telemetry::Role::Command);
    cfg.log_notices();

    let cluster = Cluster::start(
        Arc::new(cfg),
        ClusterSpec {
            encoders: a.encoders.max(1),
            slots: a.slots,
            control_plane: true,
        },
    )
    .await?;
    if !cluster.pool_settled(POOL_WAIT).await {
        tracing::warn!(
            wait_secs = POOL_WAIT.as_secs(),
            "encoders not all seen yet; the job is sized for the pool seen so far"
        );
    }
    let req = build_request(&SubmitArgs {
        job: JobArgs {
            input: input.clone(),
            output: output.clone(),
            ..a.job.clone()
        },
        priority: 0,
        prefer: a.prefer,
        require: false,
        job_id: None,
        wait: true,
        upload: false,
        privileged: false,
    })?;
    let subs = super::follow::subscribe(&cluster.ctx.client, &req.job_id).await?;
    let stored = retry::as_client(publish::raw(
        &cluster.ctx.js,
        cluster.ctx.retry,
        subjects::JOBS_SUBMIT.into(),
        messages::encode(&req),
        req.job_id.as_str(),
    ))
    .instrument(super::submit::submit_span(&req.job_id))
    .await?;
    let subs = subs.request(stored.sequence);

    let link = super::follow::Link::of(&cluster.ctx);
    let followed = tokio::select! {
        o = super::follow::follow(&link, &req.job_id, subs, !a.quiet) => Some(o?),
        _ = tokio::signal::ctrl_c() => None,
    };
    let wall = started.elapsed().as_secs_f64();
    let placed = placement(&cluster.ctx, &req.job_id).await;
    let nats_cpu = server.cpu_secs().unwrap_or(0.0);
    let self_cpu = cpu_secs(nix::sys::resource::UsageWho::RUSAGE_SELF);
    let child_cpu = cpu_secs(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
    cluster.stop().await;
    drop(server);
    let Some(outcome) = followed else {
        eprintln!("ffleet: interrupted");
        return Ok(130);
    };
    if let Some(path) = &a.stats {
        let stats = serde_json::json!({
            "wall_secs": wall,
            "ffleet_cpu_secs": self_cpu,
            "nats_cpu_secs": nats_cpu,
            "ffmpeg_cpu_secs": child_cpu,
            "completed": matches!(outcome, super::Outcome::Completed(_)),
            "units_by_capability": placed.0,
            "failed_attempts": placed.1,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&stats)?)?;
    }
    Ok(outcome.report(Some(&a.job.output)))
}

/// Where the job's units ran: count per capability, and failed attempts in all.
async fn placement(
    ctx: &ffleet_runtime::runtime::Ctx,
    job: &ffleet_runtime::JobId,
) -> (std::collections::BTreeMap<String, u32>, usize) {
    let mut by_cap = std::collections::BTreeMap::new();
    let mut failed = 0;
    let Ok(Some((rec, _))) = ctx.jobs.get(job.as_str()).await else {
        return (by_cap, failed);
    };
    for unit in rec.plan.iter().flat_map(|p| p.units()) {
        let key = subjects::segment_key(job, unit);
        if let Ok(Some((r, _))) = ctx.segments.get(&key).await {
            failed += r.failures.len();
            let cap = r.capability.map_or("-".into(), |c| c.to_string());
            *by_cap.entry(cap).or_insert(0) += 1;
        }
    }
    (by_cap, failed)
}

fn cpu_secs(who: nix::sys::resource::UsageWho) -> f64 {
    nix::sys::resource::getrusage(who)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// A scratch directory outside the roots: the system temp directory, or the user's cache when
/// the input or output lies in the temp directory itself.
fn private_scratch(cfg: &ffleet_runtime::config::Config) -> Result<tempfile::TempDir> {
    let mut candidates = vec![std::env::temp_dir()];
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(std::path::PathBuf::from(home).join(".cache"));
    }
    for base in candidates {
        let probe = base.join("ffleet-scratch-probe");
        if cfg.roots_must_not_contain(&probe, "scratch").is_ok() {
            std::fs::create_dir_all(&base)?;
            return Ok(tempfile::Builder::new()
                .prefix("ffleet-scratch-")
                .tempdir_in(base)?);
        }
    }
    bail!(
        "no scratch directory outside the input and output directories; move them out of the temp directory"
    )
}
