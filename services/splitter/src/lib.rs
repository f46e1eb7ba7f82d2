//! The splitter: takes job requests from `ffleet.jobs.submit`, validates them, probes the source,
//! plans keyframe-aligned cuts, stream-copies the segments into scratch storage, records the plan
//! in KV and publishes one task per segment plus one audio task to `ffleet.tasks.plan`.

pub mod config;
mod handler;
mod inspect;
mod keeps;
pub mod media;
mod quota;
mod retry;
mod reuse;
mod scenes;
pub mod sizing;
pub mod split;
pub mod sweep;
mod validate;

pub use config::{SplitterConfig, TenantLimits};

use ffleet_runtime::config::ConfigError;
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::provision::ConsumerSpec;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects;
use ffleet_runtime::worker;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "splitter";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Runs the splitter until `shutdown` fires, finishing jobs in progress first.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    run_with(ctx, Arc::new(media::Ffmpeg), shutdown).await
}

/// `run` with other media work than ffprobe and ffmpeg (a program embedding the library).
pub async fn run_with(
    ctx: Ctx,
    media: Arc<dyn media::Media>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let settings = SplitterConfig::of(&ctx.config)?;
    let concurrency = settings.concurrency;
    tracing::info!(concurrency, "splitter running");
    let sp = Arc::new(handler::Splitter {
        media,
        pool: sizing::PoolReading::default(),
        settings,
        prunes: Default::default(),
        ended: ffleet_runtime::ended::EndedJobs::listen(&ctx, shutdown.clone()).await,
    });
    // A durable per kind of submit subject: the privileged one is not held to the priority
    // cap, tenants' requests are scoped to their tenant (named by the subject).
    let consumer = |durable, filter: &str| ConsumerSpec {
        stream: subjects::STREAM_JOBS,
        durable,
        filter: filter.into(),
        ack_wait: ctx.config.streams.ack_wait(),
        // Unbounded: the handler fails a job after its own budget of transient failures
        // (a message past max_deliver would vanish and leave its job splitting forever).
        max_deliver: -1,
        max_ack_pending: 1000,
    };
    let serve = |spec| {
        worker::serve(&ctx, spec, concurrency, shutdown.clone(), {
            let sp = sp.clone();
            move |ctx, msg| {
                let sp = sp.clone();
                async move { handler::handle(&ctx, &sp, msg).await }
            }
        })
    };
    let sweeping = tokio::spawn(sweep::run(ctx.clone(), shutdown.clone()));
    let retries = retry::start(ctx.clone(), shutdown.clone()).await?;
    let served = tokio::try_join!(
        serve(consumer(subjects::CONSUMER_SPLITTER, subjects::JOBS_SUBMIT)),
        serve(consumer(
            subjects::CONSUMER_SPLITTER_PRIVILEGED,
            subjects::JOBS_SUBMIT_PRIVILEGED
        )),
        serve(consumer(
            subjects::CONSUMER_SPLITTER_TENANTS,
            &subjects::jobs_submit_any_tenant()
        )),
    );
    sweeping.abort();
    if served.is_err() {
        // A consumer failed: the process ends (to be restarted) rather than answer retries
        // it cannot split.
        retries.abort();
    }
    let _ = retries.await;
    served?;
    tracing::info!("splitter stopped");
    Ok(())
}
