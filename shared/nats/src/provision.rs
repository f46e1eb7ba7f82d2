//! Idempotent creation of ffleet's streams, KV buckets and durable consumers.
//!
//! KV buckets are created through their backing stream: async-nats 0.51's `create_key_value`
//! fails against nats-server 2.9 (it reads account fields 2.9 lacks), while creating `KV_<bucket>`
//! with the KV settings and then calling `get_key_value` works on 2.9 and on current servers.
//!
//! On a cluster that is still forming (or electing), creating a replicated stream times out or
//! is refused for seconds: every step is retried with backoff under the caller's `Patience`,
//! logging what it waits for, so a service started beside its servers waits instead of exiting.
//! Under per-role credentials only the admin role may create streams: every other role looks
//! each stream up (which needs no create right) and, when one is missing, waits for it with a
//! clear message instead of sending a create the server would refuse.
//! Replicated KV streams leave direct gets off: a direct get may be answered by a follower that
//! has not applied the latest write yet, and every service reads the records it just wrote.

pub use super::durable::ConsumerSpec;
use super::durable::Durable;
use super::retry::{self, Patience, Policy};
use super::{BoxError, NatsError};
use crate::config::StreamsConfig;
use async_nats::jetstream::Context;
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use ffleet_protocol::subjects;
use std::time::Duration;

/// Handles to ffleet's KV buckets.
#[derive(Clone)]
pub struct Buckets {
    pub jobs: Store,
    pub segments: Store,
    pub workers: Store,
    pub leases: Store,
    pub tenants: Store,
}

/// Retention of job and segment records.
const RECORD_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// What provisioning takes from the configuration: the `[streams]` section, whether this process
/// may create what is missing (its role), and the ages the heartbeat and lease buckets keep their
/// entries (the scheduler's TTLs).
#[derive(Debug, Clone, Copy)]
pub struct Provisioning<'a> {
    pub streams: &'a StreamsConfig,
    pub create: bool,
    pub heartbeat_ttl: Duration,
    pub lease_ttl: Duration,
}

/// Ensures every stream and bucket exists and returns the bucket handles, retrying each step
/// while JetStream is not ready for up to `patience`, each try bounded by `policy`.
/// Each look-up is boxed: kept inline, nine of them make every future that provisions (every
/// service's start, every in-process test fleet) too large for a thread's stack.
pub async fn provision(
    js: &Context,
    policy: Policy,
    plan: Provisioning<'_>,
    patience: Patience,
) -> Result<Buckets, NatsError> {
    let cfg = plan.streams;
    let p = patience;
    let create = plan.create;
    let heartbeat_ttl = plan.heartbeat_ttl;
    let dup = Duration::from_secs_f64(cfg.duplicate_window_secs);
    // A full work queue refuses new work (the publisher sees the error) rather than dropping
    // accepted work.
    let work_queue = |name: &str, subject: String, max_msg_size: i32| stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        num_replicas: cfg.replicas_of(name),
        duplicate_window: dup,
        max_message_size: max_msg_size,
        max_bytes: cfg.max_bytes,
        max_messages: cfg.max_msgs,
        discard: DiscardPolicy::New,
        ..Default::default()
    };
    Box::pin(ensure_stream(
        js,
        policy,
        work_queue(
            subjects::STREAM_JOBS,
            subjects::jobs_wildcard(),
            cfg.max_request_bytes,
        ),
        p,
        create,
    ))
    .await?;
    Box::pin(ensure_stream(
        js,
        policy,
        work_queue(
            subjects::STREAM_TASKS,
            subjects::tasks_wildcard(),
            cfg.max_msg_bytes,
        ),
        p,
        create,
    ))
    .await?;
    // Kept for days for other systems (events) and operators (dead letters) to read.
    let retained = |name: &str, subject: String, max_bytes: i64, max_msgs: i64| stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: cfg.replicas_of(name),
        duplicate_window: dup,
        max_age: Duration::from_secs_f64(cfg.events_max_age_hours * 3600.0),
        max_message_size: cfg.max_msg_bytes,
        max_bytes,
        max_messages: max_msgs,
        ..Default::default()
    };
    Box::pin(ensure_stream(
        js,
        policy,
        retained(
            subjects::STREAM_EVENTS,
            subjects::events_wildcard(),
            cfg.events_max_bytes,
            cfg.events_max_msgs,
        ),
        p,
        create,
    ))
    .await?;
    Box::pin(ensure_stream(
        js,
        policy,
        retained(
            subjects::STREAM_DEAD,
            subjects::dead_wildcard(),
            cfg.max_bytes,
            cfg.max_msgs,
        ),
        p,
        create,
    ))
    .await?;
    let kv = |bucket: &'static str, history: i64, max_age: Duration| KvSpec {
        bucket,
        history,
        max_age,
        replicas: cfg.replicas_of(bucket),
        create,
        max_value_bytes: cfg.max_msg_bytes,
        max_bytes: cfg.max_bytes,
        max_msgs: cfg.max_msgs,
        purged: bucket_is_purged(bucket),
    };
    Ok(Buckets {
        jobs: Box::pin(ensure_kv(
            js,
            policy,
            kv(subjects::BUCKET_JOBS, 5, RECORD_MAX_AGE),
            p,
        ))
        .await?,
        segments: Box::pin(ensure_kv(
            js,
            policy,
            kv(subjects::BUCKET_SEGMENTS, 5, RECORD_MAX_AGE),
            p,
        ))
        .await?,
        workers: Box::pin(ensure_kv(
            js,
            policy,
            kv(
                subjects::BUCKET_WORKERS,
                1,
                heartbeat_ttl.max(Duration::from_secs(2)) * 2,
            ),
            p,
        ))
        .await?,
        // History 1 and max age = the lease: an unrenewed lease vanishes by itself.
        leases: Box::pin(ensure_kv(
            js,
            policy,
            kv(subjects::BUCKET_LEASES, 1, plan.lease_ttl),
            p,
        ))
        .await?,
        // Kept while the tenant has jobs in flight, and long after: no age limit.
        tenants: Box::pin(ensure_kv(
            js,
            policy,
            kv(subjects::BUCKET_TENANTS, 1, Duration::ZERO),
            p,
        ))
        .await?,
    })
}

/// Looks the stream up and, when it is missing and `create` allows, creates it.
pub async fn ensure_stream(
    js: &Context,
    policy: Policy,
    config: stream::Config,
    patience: Patience,
    create: bool,
) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    let op = if create {
        "create stream"
    } else {
        "look up stream"
    };
    retry::retry_whole(policy, op, &name, patience, |_| {
        let config = config.clone();
        async move {
            if create {
                return js
                    .get_or_create_stream(config)
                    .await
                    .map_err(BoxError::from);
            }
            match js.get_stream(&config.name).await {
                Ok(s) => Ok(s),
                Err(e) if is_not_found(&e) => Err(format!(
                    "stream {} does not exist and these credentials may not create it; \
                     provision it with admin credentials (`ffleet provision`)",
                    config.name
                )
                .into()),
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}

/// Raises the guards of the streams an earlier release created: roll-ups refused on every
/// bucket and on `media`'s stream, purges denied on the buckets no service purges. Nothing else
/// changes (an operator's own limits stay). Run by `ffleet provision --raise-guards` only, once
/// every process runs this release: an earlier release wrote object metadata with a roll-up, and its writes
/// would be refused. Returns the streams changed.
pub async fn raise_guards(js: &Context, media: Option<&str>) -> Result<Vec<String>, NatsError> {
    let mut wanted: Vec<(String, bool)> = [
        subjects::BUCKET_JOBS,
        subjects::BUCKET_SEGMENTS,
        subjects::BUCKET_WORKERS,
        subjects::BUCKET_LEASES,
        subjects::BUCKET_TENANTS,
    ]
    .into_iter()
    .map(|b| (subjects::kv_stream(b), !bucket_is_purged(b)))
    .collect();
    if let Some(media) = media {
        wanted.push((subjects::object_stream(media), false));
    }
    let mut changed = Vec::new();
    for (name, deny_purge) in wanted {
        let mut stream = match js.get_stream(&name).await {
            Ok(s) => s,
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(NatsError::op("look up stream", format!("{name}: {e}"))),
        };
        let have = stream
            .info()
            .await
            .map_err(|e| NatsError::op("stream info", format!("{name}: {e}")))?
            .config
            .clone();
        if !have.allow_rollup && (have.deny_purge || !deny_purge) {
            continue;
        }
        let mut config = have;
        config.allow_rollup = false;
        config.deny_purge |= deny_purge;
        js.update_stream(&config)
            .await
            .map_err(|e| NatsError::op("update stream", format!("{name}: {e}")))?;
        tracing::info!(stream = %name, "stream guards raised (roll-ups refused, purges denied where unused)");
        changed.push(name);
    }
    Ok(changed)
}

/// Whether a service purges `bucket` (the scheduler, finished records): purges are denied on
/// the others.
fn bucket_is_purged(bucket: &str) -> bool {
    matches!(bucket, subjects::BUCKET_JOBS | subjects::BUCKET_SEGMENTS)
}

fn is_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(j) if j.code() == 404
    )
}

/// Shape of a KV bucket.
struct KvSpec {
    bucket: &'static str,
    history: i64,
    max_age: Duration,
    replicas: usize,
    create: bool,
    max_value_bytes: i32,
    max_bytes: i64,
    max_msgs: i64,
    /// Whether a service purges the bucket (finished records): otherwise purges are denied.
    purged: bool,
}

async fn ensure_kv(
    js: &Context,
    policy: Policy,
    spec: KvSpec,
    patience: Patience,
) -> Result<Store, NatsError> {
    ensure_stream(
        js,
        policy,
        stream::Config {
            name: subjects::kv_stream(spec.bucket),
            subjects: vec![subjects::kv_wildcard(spec.bucket)],
            max_messages_per_subject: spec.history,
            // Nothing here writes a roll-up, and one `Nats-Rollup: all` from any role that may
            // write the bucket would empty it. Purges only where a service needs them (the
            // scheduler's of finished records, a grant no other role holds).
            allow_rollup: false,
            deny_purge: !spec.purged,
            deny_delete: true,
            allow_direct: spec.replicas == 1,
            discard: DiscardPolicy::New,
            max_age: spec.max_age,
            max_message_size: spec.max_value_bytes,
            max_bytes: spec.max_bytes,
            max_messages: spec.max_msgs,
            num_replicas: spec.replicas,
            storage: StorageType::File,
            ..Default::default()
        },
        patience,
        spec.create,
    )
    .await?;
    retry::retry(policy, "open kv bucket", spec.bucket, patience, |_| {
        js.get_key_value(spec.bucket)
    })
    .await
}

/// Gets or creates a durable pull consumer that re-creates itself if it stops answering
/// (`Durable`). Only services create them, and a service waits at start as long as it takes.
pub async fn ensure_consumer(
    js: &Context,
    policy: Policy,
    spec: ConsumerSpec<'_>,
) -> Result<Durable, NatsError> {
    Durable::ensure(js, policy, spec).await
}
