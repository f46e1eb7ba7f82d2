//! All four services in one process, each with its own NATS connection, under one cancellation
//! token: what `ffleet transcode` and `ffleet up` run, and what tests start. With secrets
//! (`start_as`), each connection uses its own role's credentials and the client connection is
//! the admin, which provisions before any service looks the streams up.

use anyhow::{Context, Result};
use ffleet_encoder::Node;
use ffleet_runtime::NodeId;
use ffleet_runtime::config::Config;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::security::Role;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What to run.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Encoder nodes to start.
    pub encoders: usize,
    /// Slots per encoder; default: the machine's cores shared among the encoders.
    pub slots: Option<u32>,
    /// Run the splitter, scheduler and merger too (false: encoders only).
    pub control_plane: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            encoders: 1,
            slots: None,
            control_plane: true,
        }
    }
}

pub struct Cluster {
    shutdown: CancellationToken,
    tasks: JoinSet<(String, Result<()>)>,
    /// A connection for clients in the same process (submit, watch events).
    pub ctx: Ctx,
    pub node_ids: Vec<NodeId>,
    /// Every connection the cluster opened, closed on `stop`.
    clients: Vec<async_nats::Client>,
}

impl Cluster {
    pub async fn start(config: Arc<Config>, spec: ClusterSpec) -> Result<Cluster> {
        Self::start_as(config, spec, None).await
    }

    /// Like `start`; with `secrets`, every connection uses its role's credentials over TLS.
    pub async fn start_as(
        config: Arc<Config>,
        spec: ClusterSpec,
        secrets: Option<&crate::secrets::Secrets>,
    ) -> Result<Cluster> {
        // Starting holds every service's connection, provisioning and detection futures: on the
        // heap, so a caller (a test's main thread, with its 2 MiB stack) does not carry them.
        Box::pin(Self::starting(config, spec, secrets)).await
    }

    async fn starting(
        config: Arc<Config>,
        spec: ClusterSpec,
        secrets: Option<&crate::secrets::Secrets>,
    ) -> Result<Cluster> {
        let as_role = |role: Role| -> Arc<Config> {
            match secrets {
                Some(s) => Arc::new(Config {
                    nats: s.nats_config(&config.nats, role),
                    ..(*config).clone()
                }),
                None => config.clone(),
            }
        };
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let client_ctx = Ctx::connect(as_role(Role::Admin), "client", false)
            .await
            .context("connecting to NATS")?;
        let mut clients = vec![client_ctx.client.clone()];
        if spec.control_plane {
            let c = Ctx::connect(as_role(Role::Splitter), ffleet_splitter::SERVICE, false).await?;
            clients.push(c.client.clone());
            let t = shutdown.child_token();
            tasks.spawn(async move {
                (
                    "splitter".into(),
                    ffleet_splitter::run(c, t).await.map_err(Into::into),
                )
            });
            let c =
                Ctx::connect(as_role(Role::Scheduler), ffleet_scheduler::SERVICE, false).await?;
            clients.push(c.client.clone());
            let t = shutdown.child_token();
            tasks.spawn(async move {
                (
                    "scheduler".into(),
                    ffleet_scheduler::run(c, t).await.map_err(Into::into),
                )
            });
            let c = Ctx::connect(as_role(Role::Merger), ffleet_merger::SERVICE, false).await?;
            clients.push(c.client.clone());
            let t = shutdown.child_token();
            tasks.spawn(async move {
                (
                    "merger".into(),
                    ffleet_merger::run(c, t).await.map_err(Into::into),
                )
            });
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let settings = ffleet_encoder::EncoderConfig::of(&config)?;
        let per_encoder = spec
            .slots
            .or(settings.slots)
            .unwrap_or_else(|| (cores / spec.encoders.max(1) as u32).max(1));
        let mut node_ids = Vec::new();
        // Detect (and run the test encodes) once: every encoder here shares the machine.
        let mut detected: Option<Node> = None;
        for _ in 0..spec.encoders {
            let c = Ctx::connect(as_role(Role::Encoder), ffleet_encoder::SERVICE, false).await?;
            clients.push(c.client.clone());
            let mut node = match &detected {
                Some(n) => n.clone(),
                None => {
                    let n = Node::from_config(&c).await?;
                    detected = Some(n.clone());
                    n
                }
            };
            if spec.encoders > 1 || settings.node_id.is_none() {
                node.id = NodeId::generate();
            }
            node.slots = per_encoder;
            if node.gpu_slots > 0 && settings.gpu_slots.is_none() && node.gpus.count() == 0 {
                node.gpu_slots = per_encoder;
            }
            node_ids.push(node.id.clone());
            let t = shutdown.child_token();
            tasks.spawn(async move {
                (
                    "encoder".into(),
                    ffleet_encoder::run(c, node, t).await.map_err(Into::into),
                )
            });
        }
        Ok(Cluster {
            shutdown,
            tasks,
            ctx: client_ctx,
            node_ids,
            clients,
        })
    }

    /// Fails if any service has stopped on its own: services only return when told to.
    pub fn check_running(&mut self) -> Result<()> {
        match self.tasks.try_join_next() {
            None => Ok(()),
            Some(Ok((name, Ok(())))) => anyhow::bail!("{name} stopped"),
            Some(Ok((name, Err(e)))) => {
                anyhow::bail!("{name} failed: {}", crate::report::describe(&e))
            }
            Some(Err(e)) => anyhow::bail!("a service panicked: {e}"),
        }
    }

    /// Waits, at most `within`, until the splitter would size a job for this cluster's whole
    /// pool: every encoder's heartbeat is in the bucket, and the scheduler's lease either
    /// publishes their slots or publishes none yet (the splitter then counts the heartbeats
    /// itself). A job submitted before sizes for the pool seen so far (as few as one slot),
    /// which on a many-slot machine cuts a short file into a few long segments. Whether it
    /// settled.
    pub async fn pool_settled(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.pool_seen().await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pool_seen(&self) -> bool {
        use ffleet_runtime::messages::{SchedulerLease, heartbeat::offered_slots};
        let mut beats = Vec::with_capacity(self.node_ids.len());
        for node in &self.node_ids {
            match self.ctx.workers.get(node.as_str()).await {
                Ok(Some((hb, _))) => beats.push(hb),
                _ => return false,
            }
        }
        let want = offered_slots(&beats);
        match self
            .ctx
            .leases
            .get(ffleet_runtime::subjects::LEASE_SCHEDULER)
            .await
        {
            Ok(Some(v)) => SchedulerLease::read(&v)
                .pool_slots
                .is_none_or(|slots| slots == want),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits until some service stops on its own (an error) or `stop` is requested elsewhere.
    pub async fn join_next(&mut self) -> Option<(String, Result<()>)> {
        self.tasks.join_next().await.and_then(Result::ok)
    }

    /// Stops every service, waits for them to drain, then closes the cluster's connections
    /// (each step bounded). The caller may stop a private server next: a connection still open
    /// then would see it go and warn about a disconnect nobody needs to hear about.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drain = async {
            while let Some(r) = self.tasks.join_next().await {
                if let Ok((name, Err(e))) = r {
                    tracing::warn!(service = %name, error = %e, "service stopped with an error");
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), drain)
            .await
            .is_err()
        {
            tracing::warn!("services did not drain within 30 s");
        }
        close(&self.clients).await;
    }
}

/// Drains and closes `clients`, waiting up to 2 s until each connection has closed.
async fn close(clients: &[async_nats::Client]) {
    let closed = futures::future::join_all(clients.iter().map(|c| async move {
        if c.drain().await.is_err() {
            return; // already closed
        }
        // Once closed, the connection task drops its end of the command channel, and every
        // request on the client (flush included) fails at once.
        while c.flush().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }));
    if tokio::time::timeout(Duration::from_secs(2), closed)
        .await
        .is_err()
    {
        tracing::debug!("nats connections did not close within 2 s");
    }
}
