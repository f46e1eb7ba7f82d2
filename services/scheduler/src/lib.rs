//! The scheduler: routes each planned task to the capability queue that should run it
//! (`ffleet.tasks.encode.<capability>`), recording the attempt and capability in the unit's
//! ownership record first. It keeps a live view of the encoder pool from the heartbeats bucket.

mod gauges;
mod handler;
mod pool;
mod route;

pub use pool::Pool;

use ffleet_shared::nats::NatsError;
use ffleet_shared::nats::provision::ConsumerSpec;
use ffleet_shared::nats::worker;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::subjects;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "scheduler";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Nats(#[from] NatsError),
}

/// Runs the scheduler until `shutdown` fires.
pub async fn run(ctx: Ctx, shutdown: CancellationToken) -> Result<(), Error> {
    let ttl = Duration::from_secs_f64(ctx.config.scheduler.heartbeat_ttl_secs);
    let pool = Pool::watch(ctx.workers.clone(), ttl, shutdown.clone()).await?;
    if ffleet_shared::telemetry::enabled() {
        tokio::spawn(gauges::run(ctx.clone(), shutdown.clone()));
    }
    tracing::info!("scheduler running");
    worker::serve(
        &ctx,
        ConsumerSpec {
            stream: subjects::STREAM_TASKS,
            durable: subjects::CONSUMER_SCHEDULER,
            filter: subjects::TASKS_PLAN.into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 10_000,
        },
        4,
        shutdown,
        move |ctx, msg| {
            let pool = pool.clone();
            async move { handler::handle(&ctx, &pool, msg).await }
        },
    )
    .await?;
    tracing::info!("scheduler stopped");
    Ok(())
}
