//! The pool and queue gauges: encode slots total/busy per capability, each encoder's heartbeat
//! age, and the depth of the plan queue and of every capability queue. Sampled by the scheduler
//! (it watches the pool anyway) only while telemetry is exported.

use crate::pool::Pool;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::telemetry::metrics;
use ffleet_runtime::{Capability, subjects};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Often enough for a dashboard, rare enough to cost the broker nothing.
const EVERY: Duration = Duration::from_secs(5);
/// Heartbeat TTLs after which a silent node's age is no longer reported.
const FORGET_AFTER_TTLS: u32 = 20;

pub async fn run(ctx: Ctx, pool: Pool, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => sample(&ctx, &pool).await,
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The pool from the scheduler's own watch of the heartbeats (no listing of the bucket, whose
/// cost grows with the nodes), the queue depths from their consumers.
async fn sample(ctx: &Ctx, pool: &Pool) {
    let mut slots: BTreeMap<Capability, (u64, u64)> = BTreeMap::new();
    for (hb, age, live) in pool.nodes_with_ages() {
        // A silent node's age keeps growing, so an alert on it fires, for a while: the view
        // keeps nodes whose key expired, and a fleet that scales in and out must not grow a
        // series per node it ever had.
        if live || age <= pool.ttl() * FORGET_AFTER_TTLS {
            metrics::heartbeat_age(hb.node_id.as_str(), age.as_secs_f64());
        }
        if !live {
            continue;
        }
        for cap in &hb.capabilities {
            let s = slots.entry(cap.clone()).or_default();
            s.0 += u64::from(hb.slots_total);
            s.1 += u64::from(hb.slots_busy);
        }
    }
    let Ok(stream) = ctx.js.get_stream(subjects::STREAM_TASKS).await else {
        return;
    };
    let mut queues = vec![(
        subjects::TASKS_PLAN.to_owned(),
        subjects::CONSUMER_SCHEDULER.to_owned(),
    )];
    for (cap, (total, busy)) in &slots {
        metrics::pool_slots(cap.as_str(), *total, *busy);
        queues.push((subjects::tasks_encode(cap), subjects::encode_consumer(cap)));
        queues.push((subjects::tasks_retry(cap), subjects::retry_consumer(cap)));
    }
    for (subject, consumer) in queues {
        if let Ok(info) = stream.consumer_info(&consumer).await {
            metrics::queue_depth(&subject, info.num_pending + info.num_ack_pending as u64);
        }
    }
}
