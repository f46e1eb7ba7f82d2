//! The merger: collects `segment_done` reports into the job record, publishes progress, and when
//! every unit is in, concatenates the segments in plan order, muxes the audio, verifies the
//! result against the source, moves it into place atomically and ends the job. Mergers also
//! answer cancel requests (`cancel`): ending a job is theirs.

pub mod cancel;
mod collect;
pub mod config;
mod group;
mod handler;
pub mod media;
pub mod merge;
mod reissue;
mod throttle;
mod verify;

pub use config::MergerConfig;

use ffleet_runtime::config::ConfigError;
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::provision::ConsumerSpec;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects;
use ffleet_runtime::worker;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "merger";

/// Segment reports handled at once.
const REPORT_LOOPS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Runs the merger until `shutdown` fires, finishing merges in progress first.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    run_with(ctx, Arc::new(media::Ffmpeg), shutdown).await
}

/// `run` with other media work than ffmpeg (a program embedding the library).
pub async fn run_with(
    ctx: Ctx,
    media: Arc<dyn media::Media>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let concurrency = MergerConfig::of(&ctx.config)?.concurrency;
    tracing::info!(concurrency, "merger running");
    // Every replica answers cancel requests.
    let cancels = cancel::start(ctx.clone(), shutdown.clone()).await?;
    let ended = ffleet_runtime::ended::EndedJobs::listen(&ctx, shutdown.clone()).await;
    let served = worker::serve(
        &ctx,
        ConsumerSpec {
            stream: subjects::STREAM_EVENTS,
            durable: subjects::CONSUMER_MERGER,
            filter: subjects::segment_done_wildcard(),
            ack_wait: ctx.config.streams.ack_wait(),
            max_deliver: -1,
            max_ack_pending: 10_000,
        },
        // Reports are small KV updates, taken by many loops at once; the merges they start are
        // held to `concurrency` at a time (each runs ffmpeg over a whole output).
        concurrency.max(REPORT_LOOPS),
        shutdown,
        {
            let merges = Arc::new(handler::Merges {
                media,
                slots: tokio::sync::Semaphore::new(concurrency),
                collects: Default::default(),
                progress: Default::default(),
                ended,
            });
            move |ctx, msg| {
                let merges = merges.clone();
                async move { handler::handle(&ctx, &merges, msg).await }
            }
        },
    )
    .await;
    if served.is_err() {
        cancels.abort();
    }
    let _ = cancels.await;
    served?;
    tracing::info!("merger stopped");
    Ok(())
}
