//! Idempotent creation of ffleet's streams, KV buckets and durable consumers.
//!
//! KV buckets are created through their backing stream: async-nats 0.51's `create_key_value`
//! fails against nats-server 2.9 (it reads account fields 2.9 lacks), while creating `KV_<bucket>`
//! with the KV settings and then calling `get_key_value` works on 2.9 and on current servers.

use super::NatsError;
use crate::config::Config;
use crate::subjects;
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use std::time::Duration;

/// Handles to ffleet's KV buckets.
#[derive(Clone)]
pub struct Buckets {
    pub jobs: Store,
    pub segments: Store,
    pub workers: Store,
    pub leases: Store,
}

/// Retention of job and segment records.
const RECORD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Ensures every stream and bucket exists and returns the bucket handles.
pub async fn provision(js: &Context, config: &Config) -> Result<Buckets, NatsError> {
    let cfg = &config.streams;
    let heartbeat_ttl = config.scheduler.heartbeat_ttl();
    let dup = Duration::from_secs_f64(cfg.duplicate_window_secs);
    let work_queue = |name: &str, subject: String| stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: dup,
        ..Default::default()
    };
    ensure_stream(
        js,
        work_queue(subjects::STREAM_JOBS, subjects::jobs_wildcard()),
    )
    .await?;
    ensure_stream(
        js,
        work_queue(subjects::STREAM_TASKS, subjects::tasks_wildcard()),
    )
    .await?;
    // Kept for days for other systems (events) and operators (dead letters) to read.
    let retained = |name: &str, subject: String| stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: dup,
        max_age: Duration::from_secs_f64(cfg.events_max_age_hours * 3600.0),
        ..Default::default()
    };
    ensure_stream(
        js,
        retained(subjects::STREAM_EVENTS, subjects::events_wildcard()),
    )
    .await?;
    ensure_stream(
        js,
        retained(subjects::STREAM_DEAD, subjects::dead_wildcard()),
    )
    .await?;
    Ok(Buckets {
        jobs: ensure_kv(js, subjects::BUCKET_JOBS, 5, RECORD_MAX_AGE, cfg.replicas).await?,
        segments: ensure_kv(
            js,
            subjects::BUCKET_SEGMENTS,
            5,
            RECORD_MAX_AGE,
            cfg.replicas,
        )
        .await?,
        workers: ensure_kv(
            js,
            subjects::BUCKET_WORKERS,
            1,
            heartbeat_ttl.max(Duration::from_secs(2)) * 2,
            cfg.replicas,
        )
        .await?,
        // History 1 and max age = the lease: an unrenewed lease vanishes by itself.
        leases: ensure_kv(
            js,
            subjects::BUCKET_LEASES,
            1,
            config.scheduler.lease_ttl(),
            cfg.replicas,
        )
        .await?,
    })
}

async fn ensure_stream(js: &Context, config: stream::Config) -> Result<stream::Stream, NatsError> {
    js.get_or_create_stream(config)
        .await
        .map_err(|e| NatsError::op("create stream", e))
}

async fn ensure_kv(
    js: &Context,
    bucket: &str,
    history: i64,
    max_age: Duration,
    replicas: usize,
) -> Result<Store, NatsError> {
    ensure_stream(
        js,
        stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            max_age,
            num_replicas: replicas,
            storage: StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| NatsError::op("open kv bucket", e))
}

/// Settings of a durable pull consumer.
pub struct ConsumerSpec<'a> {
    pub stream: &'a str,
    pub durable: &'a str,
    pub filter: String,
    pub ack_wait: Duration,
    /// -1 for unlimited.
    pub max_deliver: i64,
    pub max_ack_pending: i64,
}

/// Gets or creates a durable pull consumer.
pub async fn ensure_consumer(
    js: &Context,
    spec: ConsumerSpec<'_>,
) -> Result<PullConsumer, NatsError> {
    let stream = js
        .get_stream(spec.stream)
        .await
        .map_err(|e| NatsError::op("get stream", e))?;
    stream
        .get_or_create_consumer(
            spec.durable,
            pull::Config {
                durable_name: Some(spec.durable.into()),
                filter_subject: spec.filter,
                ack_policy: AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_deliver: spec.max_deliver,
                max_ack_pending: spec.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| NatsError::op("create consumer", e))
}
