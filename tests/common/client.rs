//! What a test does as a client of a running fleet, whichever way the fleet runs (in-process or
//! as separate processes): build requests, submit them, and read back every event a job
//! produced from the events stream, so duplicates would show.

use anyhow::{Context, Result, bail, ensure};
use async_nats::jetstream::consumer::DeliverPolicy;
use ffleet_runtime::messages::{self, CURRENT, CloudEvent, JobEvent, JobRequest, Overrides};
use ffleet_runtime::nats::publish;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, subjects};
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
            input_digest: None,
            retry_of: None,
        }
    }

    async fn submit(&self, req: &JobRequest) -> Result<()> {
        self.submit_raw(&serde_json::to_vec(req)?, Some(req.job_id.as_str()))
            .await
    }

    /// Submits on the privileged subject, where priorities above the submitter cap are allowed.
    async fn submit_privileged(&self, req: &JobRequest) -> Result<()> {
        publish::raw(
            &self.ctx().js,
            self.ctx().retry,
            subjects::JOBS_SUBMIT_PRIVILEGED.into(),
            serde_json::to_vec(req)?.into(),
            req.job_id.as_str(),
        )
        .await?;
        Ok(())
    }

    /// Publishes arbitrary bytes on the submit subject, as another system might.
    async fn submit_raw(&self, payload: &[u8], msg_id: Option<&str>) -> Result<()> {
        self.submit_raw_seq(payload, msg_id).await.map(|_| ())
    }

    /// `submit_raw`, returning the jobs stream's sequence of the stored message (for
    /// `wait_processed`).
    async fn submit_raw_seq(&self, payload: &[u8], msg_id: Option<&str>) -> Result<u64> {
        let id = msg_id
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let stored = publish::raw(
            &self.ctx().js,
            self.ctx().retry,
            subjects::JOBS_SUBMIT.into(),
            payload.to_vec().into(),
            &id,
        )
        .await?;
        Ok(stored.sequence)
    }

    /// Waits until the durable `consumer` of `stream` has acknowledged (or terminated) every
    /// message up to stream sequence `seq`: the message was handled, and whatever its handler
    /// publishes before acking is out. Tests wait for this before asserting that a message
    /// changed nothing, instead of sleeping and hoping it was handled by then.
    async fn wait_processed(
        &self,
        stream: &str,
        consumer: &str,
        seq: u64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let floor = consumer_state(self.ctx(), stream, consumer)
                .await
                .map(|c| c.ack_floor.stream_sequence);
            match floor {
                Ok(f) if f >= seq => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!(
                        "{consumer} on {stream} did not process message {seq} within {timeout:?} (ack floor {floor:?})"
                    )
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until the durable `consumer` of `stream` (every durable of it: `None`) has nothing
    /// left to deliver and nothing awaiting its ack: everything stored so far was handled (a
    /// redelivery that would publish a duplicate event has happened by then, or never will).
    async fn wait_idle(
        &self,
        stream: &str,
        consumer: Option<&str>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let busy = busy_consumers(self.ctx(), stream, consumer).await;
            match busy {
                Ok(b) if b.is_empty() => return Ok(()),
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("consumers of {stream} still busy after {timeout:?}: {busy:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
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
        stored_events(&self.ctx().js, job).await
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

    /// Waits until the splitter and merger have handled everything stored for them, so that no
    /// redelivery is still on its way to publish a second terminal event.
    async fn settled(&self) -> Result<()> {
        let t = Duration::from_secs(120);
        // Every splitter durable (plain, privileged, tenants').
        self.wait_idle(subjects::STREAM_JOBS, None, t).await?;
        self.wait_idle(subjects::STREAM_EVENTS, Some(subjects::CONSUMER_MERGER), t)
            .await
    }

    /// The job completed, everything stored was handled (a duplicate terminal event would be
    /// out by then), and it has one terminal event and `reference` as its output.
    async fn completed_once(&self, job: &str, reference: &[u8], timeout: Duration) -> Result<()> {
        self.wait_completed(job, timeout).await?;
        self.settled().await?;
        self.once_and_identical(job, reference).await
    }

    /// The job has exactly one terminal event and its output (`<job>.mp4` in the out dir)
    /// equals `reference`, byte for byte.
    async fn once_and_identical(&self, job: &str, reference: &[u8]) -> Result<()> {
        ensure!(
            self.terminal_count(job).await? == 1,
            "job {job} has more than one terminal event"
        );
        let out = std::fs::read(self.out_path(&format!("{job}.mp4")))?;
        ensure!(
            out == reference,
            "output of {job} ({} bytes) differs from the fault-free run ({} bytes)",
            out.len(),
            reference.len()
        );
        Ok(())
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

async fn consumer_state(
    ctx: &Ctx,
    stream: &str,
    consumer: &str,
) -> Result<async_nats::jetstream::consumer::Info> {
    let s = ctx.js.get_stream(stream).await?;
    Ok(s.consumer_info(consumer).await?)
}

/// Durable consumers of `stream` (only `consumer`, if named) with messages pending or awaiting
/// their ack, by name.
async fn busy_consumers(ctx: &Ctx, stream: &str, consumer: Option<&str>) -> Result<Vec<String>> {
    let s = ctx.js.get_stream(stream).await?;
    // One consumer is asked for directly: a listing waits for every consumer's leader, and one
    // on a node whose JetStream went off (its disk full) never answers.
    if let Some(name) = consumer {
        let info = s.consumer_info(name).await?;
        let busy = info.num_pending > 0 || info.num_ack_pending > 0;
        return Ok(if busy {
            vec![info.name.clone()]
        } else {
            Vec::new()
        });
    }
    let mut infos = s.consumers();
    let mut busy = Vec::new();
    while let Some(info) = infos.next().await {
        let info = info?;
        let durable = info.config.durable_name.is_some();
        let named = consumer.is_none_or(|c| c == info.name);
        if durable && named && (info.num_pending > 0 || info.num_ack_pending > 0) {
            busy.push(info.name.clone());
        }
    }
    Ok(busy)
}

/// One read of every event stored for `job` (or for unnamed requests when `None`), oldest first.
pub async fn stored_events(
    js: &async_nats::jetstream::Context,
    job: Option<&str>,
) -> Result<Vec<JobEvent>> {
    let job = job.map(ffleet_runtime::JobId::new).transpose()?;
    let subject = subjects::job_events(job.as_ref());
    let stream = js.get_stream(subjects::STREAM_EVENTS).await?;
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
        let ce: CloudEvent = serde_json::from_slice(&m?.payload)?;
        out.push(JobEvent::from_cloudevent(&ce)?);
        if out.len() as u64 >= pending {
            break;
        }
    }
    Ok(out)
}
