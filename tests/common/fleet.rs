//! `TestFleet`: one test's private NATS server, scratch and media directories, and cluster.

use anyhow::{Context, Result, bail};
use async_nats::jetstream::consumer::DeliverPolicy;
use ffleet::local::{Cluster, ClusterSpec, NatsServer};
use ffleet_shared::config::Config;
use ffleet_shared::messages::{self, CURRENT, CloudEvent, JobEvent, JobRequest, Overrides};
use ffleet_shared::nats::publish;
use ffleet_shared::{JobId, subjects};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub struct FleetOptions {
    pub encoders: usize,
    pub slots: Option<u32>,
    pub tweak: Box<dyn FnOnce(&mut Config)>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            encoders: 2,
            slots: Some(1),
            tweak: Box::new(|_| {}),
        }
    }
}

pub struct TestFleet {
    pub cluster: Option<Cluster>,
    pub server: NatsServer,
    pub config: Arc<Config>,
    /// Inputs live here (the only input root).
    pub media: tempfile::TempDir,
    /// Outputs go here (the only output root).
    pub out: tempfile::TempDir,
    pub scratch: tempfile::TempDir,
    /// Flushes this process's telemetry when the fleet is dropped.
    pub telemetry: ffleet_shared::telemetry::Guard,
}

impl TestFleet {
    pub async fn spawn() -> Result<TestFleet> {
        Self::spawn_with(FleetOptions::default()).await
    }

    pub async fn spawn_with(opts: FleetOptions) -> Result<TestFleet> {
        let server = NatsServer::start_temp()?;
        let media = tempfile::Builder::new().prefix("ffleet-media-").tempdir()?;
        let out = tempfile::Builder::new().prefix("ffleet-out-").tempdir()?;
        let scratch = tempfile::Builder::new()
            .prefix("ffleet-scratch-")
            .tempdir()?;
        let mut cfg = Config::default();
        cfg.nats.url = server.url.clone();
        cfg.storage.scratch = scratch.path().to_path_buf();
        cfg.storage.input_roots = vec![media.path().to_path_buf()];
        cfg.storage.output_roots = vec![out.path().to_path_buf()];
        cfg.log.level = "warn".into();
        (opts.tweak)(&mut cfg);
        cfg.validate()?;
        let telemetry =
            ffleet_shared::telemetry::init(&cfg.log, ffleet_shared::telemetry::Role::Command);
        let config = Arc::new(cfg);
        let cluster = Cluster::start(
            config.clone(),
            ClusterSpec {
                encoders: opts.encoders,
                slots: opts.slots,
                control_plane: true,
            },
        )
        .await?;
        Ok(TestFleet {
            cluster: Some(cluster),
            server,
            config,
            media,
            out,
            scratch,
            telemetry,
        })
    }

    pub fn ctx(&self) -> &ffleet_shared::runtime::Ctx {
        &self.cluster.as_ref().expect("running").ctx
    }

    /// A request for `input` (in the media dir) to `output` (in the out dir).
    pub fn request(&self, id: &str, input: &Path, output: &str) -> JobRequest {
        JobRequest {
            version: CURRENT,
            job_id: JobId::new(id).expect("valid id"),
            input: format!("file://{}", input.display()),
            output: format!("file://{}", self.out.path().join(output).display()),
            profile: None,
            overrides: Overrides::default(),
            segment_seconds: None,
            priority: 0,
        }
    }

    pub async fn submit(&self, req: &JobRequest) -> Result<()> {
        self.submit_raw(&serde_json::to_vec(req)?, Some(req.job_id.as_str()))
            .await
    }

    /// Publishes arbitrary bytes on the submit subject, as another system might.
    pub async fn submit_raw(&self, payload: &[u8], msg_id: Option<&str>) -> Result<()> {
        let id = msg_id
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        publish::raw(
            &self.ctx().js,
            subjects::JOBS_SUBMIT.into(),
            payload.to_vec().into(),
            &id,
        )
        .await?;
        Ok(())
    }

    /// Every event stored for `job` (or for unnamed requests when `None`), oldest first, read
    /// from the events stream, so duplicates would show.
    pub async fn events(&self, job: Option<&str>) -> Result<Vec<JobEvent>> {
        let subject = match job {
            Some(j) => format!("ffleet.events.{j}.>"),
            None => format!("ffleet.events.{}.>", subjects::UNNAMED_JOB),
        };
        let stream = self.ctx().js.get_stream(subjects::STREAM_EVENTS).await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await?;
        let pending = consumer.cached_info().num_pending;
        let mut out = Vec::new();
        if pending == 0 {
            return Ok(out);
        }
        let mut msgs = consumer.messages().await?;
        while let Some(m) = tokio::time::timeout(Duration::from_secs(5), msgs.next())
            .await
            .context("reading events")?
        {
            let m = m?;
            let ce: CloudEvent = serde_json::from_slice(&m.payload)?;
            out.push(JobEvent::from_cloudevent(&ce)?);
            if out.len() as u64 >= pending {
                break;
            }
        }
        Ok(out)
    }

    /// Waits for the job's terminal event.
    pub async fn wait_terminal(&self, job: &str, timeout: Duration) -> Result<JobEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let evs = self.events(Some(job)).await?;
            if let Some(e) = evs.into_iter().find(JobEvent::is_terminal) {
                return Ok(e);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("job {job} did not end within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for completion and returns the completed event's data; fails on a failed event.
    pub async fn wait_completed(
        &self,
        job: &str,
        timeout: Duration,
    ) -> Result<messages::events::Completed> {
        match self.wait_terminal(job, timeout).await? {
            JobEvent::Completed(c) => Ok(c),
            JobEvent::Failed(f) => bail!("job {job} failed: {}: {}", f.reason, f.message),
            other => bail!("unexpected terminal event {other:?}"),
        }
    }

    /// Waits for a failure and returns it; fails if the job completed.
    pub async fn wait_failed(
        &self,
        job: &str,
        timeout: Duration,
    ) -> Result<messages::events::Failed> {
        match self.wait_terminal(job, timeout).await? {
            JobEvent::Failed(f) => Ok(f),
            other => bail!("expected job {job} to fail, got {other:?}"),
        }
    }

    /// Every service is still running.
    pub fn assert_running(&mut self) -> Result<()> {
        self.cluster.as_mut().expect("running").check_running()
    }

    pub fn out_path(&self, name: &str) -> PathBuf {
        self.out.path().join(name)
    }

    pub async fn stop(mut self) {
        if let Some(c) = self.cluster.take() {
            c.stop().await;
        }
    }
}
