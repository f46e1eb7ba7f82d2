//! `TestFleet`: one test's private NATS server, scratch and media directories, and the four
//! services in-process. `secure`: the server requires TLS and per-role credentials, and every
//! service connects as its own role (the test's client as the admin).

use super::client::JobClient;
use anyhow::Result;
use ffleet::local::{Cluster, ClusterSpec, NatsServer};
use ffleet_runtime::config::Config;
use ffleet_runtime::runtime::Ctx;
use std::path::Path;
use std::sync::Arc;

pub struct FleetOptions {
    pub encoders: usize,
    pub slots: Option<u32>,
    pub tweak: Box<dyn FnOnce(&mut Config)>,
    pub secure: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            encoders: 2,
            slots: Some(1),
            tweak: Box::new(|_| {}),
            secure: false,
        }
    }
}

pub struct TestFleet {
    pub cluster: Option<Cluster>,
    pub server: NatsServer,
    /// With `secure`: the secrets and the server's log.
    pub secure: Option<super::secure::SecureServer>,
    pub config: Arc<Config>,
    /// Inputs live here (the only input root).
    pub media: tempfile::TempDir,
    /// Outputs go here (the only output root).
    pub out: tempfile::TempDir,
    pub scratch: tempfile::TempDir,
    /// Flushes this process's telemetry when the fleet is dropped.
    pub telemetry: ffleet_runtime::telemetry::Guard,
}

impl JobClient for TestFleet {
    fn ctx(&self) -> &Ctx {
        &self.cluster.as_ref().expect("running").ctx
    }

    fn out_dir(&self) -> &Path {
        self.out.path()
    }
}

impl TestFleet {
    pub async fn spawn() -> Result<TestFleet> {
        Self::spawn_with(FleetOptions::default()).await
    }

    pub async fn spawn_with(opts: FleetOptions) -> Result<TestFleet> {
        let (secure, server) = if opts.secure {
            let (s, server) = super::secure::SecureServer::start()?;
            (Some(s), server)
        } else {
            (None, NatsServer::start_temp()?)
        };
        let media = tempfile::Builder::new().prefix("ffleet-media-").tempdir()?;
        let out = tempfile::Builder::new().prefix("ffleet-out-").tempdir()?;
        let scratch = tempfile::Builder::new()
            .prefix("ffleet-scratch-")
            .tempdir()?;
        let mut cfg = Config::default();
        cfg.nats.url = match &secure {
            Some(s) => s.url(),
            None => server.url.clone(),
        };
        cfg.storage.backend = super::backend();
        cfg.storage.scratch = scratch.path().join("media");
        cfg.storage.work_dir = scratch.path().join("work");
        cfg.storage.input_roots = vec![media.path().to_path_buf()];
        cfg.storage.output_roots = vec![out.path().to_path_buf()];
        cfg.log.level = "warn".into();
        (opts.tweak)(&mut cfg);
        ffleet::settings::validate(&cfg)?;
        let telemetry =
            ffleet_runtime::telemetry::init(&cfg.log, ffleet_runtime::telemetry::Role::Command);
        let config = Arc::new(cfg);
        let cluster = Cluster::start_as(
            config.clone(),
            ClusterSpec {
                encoders: opts.encoders,
                slots: opts.slots,
                control_plane: true,
            },
            secure.as_ref().map(|s| &s.secrets),
        )
        .await?;
        Ok(TestFleet {
            cluster: Some(cluster),
            server,
            secure,
            config,
            media,
            out,
            scratch,
            telemetry,
        })
    }

    /// Every service is still running.
    pub fn assert_running(&mut self) -> Result<()> {
        self.cluster.as_mut().expect("running").check_running()
    }

    pub async fn stop(mut self) {
        if let Some(c) = self.cluster.take() {
            c.stop().await;
        }
    }
}
