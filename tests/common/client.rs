//! What a test does as a client of a running fleet, whichever way the fleet runs (in-process or
//! as separate processes): build requests, submit them, and read back every event a job
//! produced from the events stream, so duplicates would show.

use anyhow::{Context, Result, bail};
use async_nats::jetstream::consumer::DeliverPolicy;
use ffleet_shared::messages::{self, CURRENT, CloudEvent, JobEvent, JobRequest, Overrides};
use ffleet_shared::nats::publish;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{JobId, subjects};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[allow(async_fn_in_trait)]
pub trait JobClient {
    fn ctx(&self) -> &Ctx;

    /// The only output root.
    fn out_dir(&self) -> &Path;

    fn out_path(&self, name: &str) -> PathBuf {
        self.out_dir().join(name)
    }

    /// A request for `input` to `output` (in the out dir).
    fn request(&self, id: &str, input: &Path, output: &str) -> JobRequest {
        JobRequest {
            version: CURRENT,
            job_id: JobId::new(id).expect("valid id"),
            input: format!("file://{}", input.display()),
            output: format!("file://{}", self.out_path(output).display()),
            profile: None,
            overrides: Overrides::default(),
            segment_seconds: None,
            priority: 0,
            prefer: Default::default(),
            require: false,
        }
    }

    async fn submit(&self, req: &JobRequest) -> Result<()> {
        self.submit_raw(&serde_json::to_vec(req)?, Some(req.job_id.as_str()))
            .await
    }

    /// Publishes arbitrary bytes on the submit subject, as another system might.
    async fn submit_raw(&self, payload: &[u8], msg_id: Option<&str>) -> Result<()> {
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

    /// Every event stored for `job` (or for unnamed requests when `None`), oldest first. A read
    /// that fails (a server restarting, a cluster electing a leader) is tried again for 30 s.
    async fn events(&self, job: Option<&str>) -> Result<Vec<JobEvent>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match self.events_once(job).await {
                Ok(evs) => return Ok(evs),
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn events_once(&self, job: Option<&str>) -> Result<Vec<JobEvent>> {
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
    async fn wait_terminal(&self, job: &str, timeout: Duration) -> Result<JobEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // A server restart makes a read fail for a moment: keep asking until the deadline.
            if let Ok(evs) = self.events(Some(job)).await
                && let Some(e) = evs.into_iter().find(JobEvent::is_terminal)
            {
                return Ok(e);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("job {job} did not end within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for completion and returns the completed event's data; fails on a failed event.
    async fn wait_completed(
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
    async fn wait_failed(&self, job: &str, timeout: Duration) -> Result<messages::events::Failed> {
        match self.wait_terminal(job, timeout).await? {
            JobEvent::Failed(f) => Ok(f),
            other => bail!("expected job {job} to fail, got {other:?}"),
        }
    }

    /// How many terminal events the job has (exactly one is the invariant).
    async fn terminal_count(&self, job: &str) -> Result<usize> {
        Ok(self
            .events(Some(job))
            .await?
            .iter()
            .filter(|e| e.is_terminal())
            .count())
    }
}
