//! The merger: collects `segment_done` reports into the job record, publishes progress, and when
//! every unit is in, concatenates the segments in plan order, muxes the audio, verifies the
//! result against the source, moves it into place atomically and ends the job.

mod collect;
mod handler;
mod merge;
mod verify;

use ffleet_shared::nats::NatsError;
use ffleet_shared::nats::provision::ConsumerSpec;
use ffleet_shared::nats::worker;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::subjects;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "merger";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Runs the merger until `shutdown` fires, finishing merges in progress first.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    tracing::info!(
        concurrency = ctx.config.merger.concurrency,
        "merger running"
    );
    worker::serve(
        &ctx,
        ConsumerSpec {
            stream: subjects::STREAM_EVENTS,
            durable: subjects::CONSUMER_MERGER,
            filter: subjects::segment_done_wildcard(),
            ack_wait: ctx.config.streams.ack_wait(),
            max_deliver: -1,
            max_ack_pending: 10_000,
        },
        ctx.config.merger.concurrency,
        shutdown,
        |ctx, msg| async move { handler::handle(&ctx, msg).await },
    )
    .await?;
    tracing::info!("merger stopped");
    Ok(())
}
