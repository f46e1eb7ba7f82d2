//! The splitter: takes job requests from `ffleet.jobs.submit`, validates them, probes the source,
//! plans keyframe-aligned cuts, stream-copies the segments into scratch storage, records the plan
//! in KV and publishes one task per segment plus one audio task to `ffleet.tasks.plan`.

mod handler;
mod inspect;
mod split;
mod validate;

use ffleet_shared::nats::NatsError;
use ffleet_shared::nats::provision::ConsumerSpec;
use ffleet_shared::nats::worker;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::subjects;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "splitter";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Runs the splitter until `shutdown` fires, finishing jobs in progress first.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    tracing::info!(
        concurrency = ctx.config.splitter.concurrency,
        "splitter running"
    );
    worker::serve(
        &ctx,
        ConsumerSpec {
            stream: subjects::STREAM_JOBS,
            durable: subjects::CONSUMER_SPLITTER,
            filter: subjects::JOBS_SUBMIT.into(),
            ack_wait: ctx.config.streams.ack_wait(),
            max_deliver: 10,
            max_ack_pending: 1000,
        },
        ctx.config.splitter.concurrency,
        shutdown,
        |ctx, msg| async move { handler::handle(&ctx, msg).await },
    )
    .await?;
    tracing::info!("splitter stopped");
    Ok(())
}
