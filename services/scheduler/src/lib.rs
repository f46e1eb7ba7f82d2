//! The scheduler: holds planned tasks in a backlog and releases each, highest priority first,
//! into the capability queue that should run it (`ffleet.tasks.encode.<capability>`) once the
//! pool has room there, recording the attempt and capability in the unit's ownership record
//! first; watches encoder heartbeats and hands a dead node's units to others
//! within seconds; reconciles unfinished jobs against their records. Several replicas may run:
//! one leads through a KV lease and does all of that, the others keep their views warm and take
//! over within one lease TTL. Every replica answers job status requests (`status`).

mod ages;
mod backlog;
pub mod config;
mod drops;
mod gauges;
mod handler;
mod jobs_view;
mod lease;
#[cfg(test)]
mod mem;
mod pool;
mod ports;
mod priority;
mod purge;
mod reconcile;
mod reissue;
mod room;
mod round;
mod route;
mod status;
mod sweep;

pub use config::SchedulerConfig;
pub use jobs_view::JobsView;
pub use pool::Pool;

use ffleet_runtime::config::ConfigError;
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::kv::KvError;
use ffleet_runtime::runtime::Ctx;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "scheduler";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Job(#[from] ffleet_runtime::jobs::JobError),
    #[error("reading a heartbeat: {0}")]
    Entry(#[from] async_nats::jetstream::kv::EntryError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("purging a finished job's records, {0}")]
    Purge(String),
}

/// This replica's name in the lease: host and process, so operators can tell who leads.
pub fn holder_name() -> String {
    format!(
        "{}:{}:{}",
        ffleet_runtime::ids::hostname(),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs the scheduler until `shutdown` fires.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let settings = SchedulerConfig::of(&ctx.config)?;
    let fleet = &ctx.config.fleet;
    let pool = Pool::watch(ctx.workers.clone(), fleet.heartbeat_ttl(), shutdown.clone()).await?;
    let jobs = JobsView::watch(
        ctx.jobs.clone(),
        settings.keep_finished_records(),
        Duration::from_secs(ctx.config.storage.keep_failed_results_secs),
        shutdown.clone(),
    )
    .await?;
    let gauges = ffleet_runtime::telemetry::enabled()
        .then(|| tokio::spawn(gauges::run(ctx.clone(), pool.clone(), shutdown.clone())));
    // Every replica answers status requests, leader or not.
    let status = status::start(ctx.clone(), shutdown.clone()).await?;
    let holder = holder_name();
    tracing::info!(holder = %holder, "scheduler running");
    let leases = lease::Bucket {
        store: ctx.leases.clone(),
        policy: ctx.retry,
        pool: pool.clone(),
    };
    lease::run(leases, holder, fleet.lease_ttl(), shutdown, |term| {
        let lead = Lead {
            ctx: ctx.clone(),
            settings: settings.clone(),
            pool: pool.clone(),
            jobs: jobs.clone(),
        };
        lead.run(term)
    })
    .await;
    let _ = status.await;
    if let Some(gauges) = gauges {
        // A sample in flight against an unreachable server must not hold up the exit.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), gauges).await;
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// What the leader works with.
struct Lead {
    ctx: Ctx,
    settings: SchedulerConfig,
    pool: Pool,
    jobs: JobsView,
}

impl Lead {
    /// Everything the leader does, until `term` fires.
    async fn run(self, term: CancellationToken) {
        let Lead {
            ctx,
            settings,
            pool,
            jobs,
        } = self;
        let sweep = tokio::spawn(sweep::run(
            ctx.clone(),
            pool.clone(),
            jobs.clone(),
            term.clone(),
        ));
        let purge = tokio::spawn(purge::run(ctx.clone(), jobs.clone(), term.clone()));
        let drops = tokio::spawn(drops::run(
            ctx.clone(),
            pool.clone(),
            jobs.clone(),
            term.clone(),
        ));
        let held = backlog::HeldKeys::default();
        let reconcile = tokio::spawn(reconcile::run(
            ctx.clone(),
            settings.clone(),
            pool.clone(),
            jobs.clone(),
            held.clone(),
            term.clone(),
        ));
        while !term.is_cancelled() {
            let backlog = backlog::run(
                ctx.clone(),
                settings.clone(),
                pool.clone(),
                jobs.clone(),
                held.clone(),
                term.clone(),
            );
            if let Err(e) = backlog.await {
                tracing::warn!(error = %e, "plan queue unavailable, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = term.cancelled() => {}
                }
            }
        }
        let _ = sweep.await;
        let _ = reconcile.await;
        let _ = purge.await;
        let _ = drops.await;
    }
}
