//! What every service runs with: configuration, a NATS connection with JetStream, the KV
//! buckets, and media storage. Built once in `main` (or by an in-process cluster) and cloned
//! into each service.

use crate::config::{Config, StorageBackend};
use crate::messages::{Heartbeat, JobRecord, SegmentRecord, TenantUsage};
use crate::nats::retry::{Patience, Policy};
use crate::nats::{self, Buckets, NatsError, kv::Typed};
use crate::storage::{ObjectStore, SharedDir, Storage, StorageError, WorkDir};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CtxError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("media storage: {0}")]
    Storage(#[from] StorageError),
    #[error("work dir {path}: {source}")]
    WorkDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
pub struct Ctx {
    pub config: Arc<Config>,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub jobs: Typed<JobRecord>,
    pub segments: Typed<SegmentRecord>,
    pub workers: Typed<Heartbeat>,
    /// Raw store: lease values are opaque holder names.
    pub leases: async_nats::jetstream::kv::Store,
    /// Tenants' jobs in flight (`crate::tenants`).
    pub tenants: Typed<TenantUsage>,
    pub storage: Arc<dyn Storage>,
    /// How this service's JetStream operations retry (`nats.op_retry_secs` and the per-try
    /// timeouts), for the operations it does on `js` (`publish`, consumers); the buckets and
    /// the storage above carry the same policy.
    pub retry: Policy,
    /// Service name, for CloudEvent sources and logs.
    pub service: &'static str,
}

impl Ctx {
    /// Connects, provisions streams and buckets, and opens scratch storage. With
    /// `wait_for_server` (services) the server and JetStream are waited for as long as it takes;
    /// without (client commands, in-process services beside their own server) an unreachable
    /// server is an error at once and JetStream is waited for up to `nats.startup_wait_secs`.
    pub async fn connect(
        config: Arc<Config>,
        service: &'static str,
        wait_for_server: bool,
    ) -> Result<Ctx, CtxError> {
        crate::health::init(config.nats.health_file.clone());
        let client =
            nats::connect(&config.nats, &format!("ffleet-{service}"), wait_for_server).await?;
        let patience = if wait_for_server {
            Patience::Forever
        } else {
            Patience::For(Duration::from_secs_f64(config.nats.startup_wait_secs))
        };
        Self::with_client(config, service, client, patience).await
    }

    /// Like `connect`, over an existing client (one connection shared by in-process services).
    pub async fn with_client(
        config: Arc<Config>,
        service: &'static str,
        client: async_nats::Client,
        patience: Patience,
    ) -> Result<Ctx, CtxError> {
        crate::health::init(config.nats.health_file.clone());
        let retry = Policy::from_config(&config.nats);
        let js = nats::connect::jetstream(client.clone(), &config.nats);
        let Buckets {
            jobs,
            segments,
            workers,
            leases,
            tenants,
        } = nats::provision(&js, retry, config.provisioning(), patience).await?;
        let storage = open_storage(&js, retry, &config, patience).await?;
        crate::health::ready();
        Ok(Ctx {
            client,
            js,
            jobs: Typed::new(jobs, "job record", retry),
            segments: Typed::new(segments, "segment record", retry),
            workers: Typed::new(workers, "heartbeat", retry),
            leases,
            tenants: Typed::new(tenants, "tenant usage", retry),
            storage,
            retry,
            service,
            config,
        })
    }
}

/// Opens the configured media backend with a fresh private work dir; an object store retries
/// under `policy`.
pub async fn open_storage(
    js: &async_nats::jetstream::Context,
    policy: Policy,
    config: &Config,
    patience: Patience,
) -> Result<Arc<dyn Storage>, CtxError> {
    let base = &config.storage.work_dir;
    let work = Arc::new(WorkDir::open(base).map_err(|source| CtxError::WorkDir {
        path: base.clone(),
        source,
    })?);
    Ok(match config.storage.backend {
        StorageBackend::SharedDir => Arc::new(SharedDir::open(&config.storage.scratch, work)?),
        StorageBackend::ObjectStore => Arc::new(
            ObjectStore::open(
                js,
                policy,
                &config.storage,
                config.media_placement(),
                work,
                patience,
            )
            .await?,
        ),
    })
}
