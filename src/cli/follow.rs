//! Following one job to its end: its CloudEvents (`ffleet.events.<job>.>`) and live encode
//! progress (`ffleet.live.<job>`) drive a progress bar. Core-NATS events sent while the
//! connection moves to another server are lost to it, so the job's status is also checked every
//! few seconds and at once after every reconnect: from its record in KV when the role may read
//! the jobs bucket, else by asking the fleet (`ask`: the status request). A job that ended
//! unseen is then ended here with the same outcome its terminal event carried.
//!
//! Only the status ends a job here: a terminal event on the subject is a cue to ask at once,
//! never the outcome itself, since a message on a subject proves nothing of who caused it (a
//! consumer's deliveries, say). The status comes from the jobs bucket, which only the services
//! write, or as the scheduler's answer to this client's inbox (under its role's prefix, which
//! only that role may read and nobody but the server's reply rule may write).

use super::{ask, display};
use anyhow::Result;
use ffleet_runtime::messages::events::{Cancelled, Completed, Failed};
use ffleet_runtime::messages::{
    self, CloudEvent, JobEvent, JobRecord, JobStatus, LiveProgress, StatusState,
};
use ffleet_runtime::nats::kv::Typed;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects::EventKind;
use ffleet_runtime::{JobId, Unit, subjects};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// How often the job's status is checked besides its events.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often the connection is looked at for a reconnect (a counter read: free).
const RECONNECT_WATCH: Duration = Duration::from_millis(250);

pub struct Subscriptions {
    events: futures::stream::SelectAll<async_nats::Subscriber>,
    live: async_nats::Subscriber,
    /// The `FFLEET_JOBS` sequence of the request being followed, once published: a refusal of
    /// that request (and of no other under the same id) ends the job here.
    request_seq: Option<u64>,
}

impl Subscriptions {
    /// Follows the request stored at `seq` in the jobs stream (its publish ack's sequence).
    pub fn request(mut self, seq: u64) -> Self {
        self.request_seq = Some(seq);
        self
    }
}

/// What following needs: a connection, and the jobs bucket when the role may read it (without
/// it the fleet is asked).
pub struct Link {
    pub client: async_nats::Client,
    pub jobs: Option<Typed<JobRecord>>,
}

impl Link {
    pub fn of(ctx: &Ctx) -> Link {
        Link {
            client: ctx.client.clone(),
            jobs: Some(ctx.jobs.clone()),
        }
    }

    /// The job's status, or `None` when it could not be learnt this time (a failed read, an
    /// unanswered request): the next check asks again.
    pub async fn status(&self, job: &JobId) -> Option<JobStatus> {
        match &self.jobs {
            Some(jobs) => match jobs.get(job.as_str()).await {
                Ok(Some((rec, _))) => Some(JobStatus::of_record(&rec)),
                // No record: perhaps a refused request, which only the fleet can tell.
                Ok(None) => Some(
                    self.ask(job)
                        .await
                        .unwrap_or_else(|| JobStatus::unknown(job.clone())),
                ),
                Err(e) => {
                    tracing::debug!(job = %job, error = %e, "job record not read");
                    None
                }
            },
            None => self.ask(job).await,
        }
    }

    async fn ask(&self, job: &JobId) -> Option<JobStatus> {
        match ask::status(&self.client, job).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(job = %job, error = %format!("{e:#}"), "job status not learnt");
                None
            }
        }
    }
}

pub async fn subscribe(client: &async_nats::Client, job: &JobId) -> Result<Subscriptions> {
    // The job's public events only: `segment_done` is the fleet's own business (and a submitter
    // may not read it).
    let mut events = Vec::new();
    for kind in [
        EventKind::Accepted,
        EventKind::Progress,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Cancelled,
    ] {
        events.push(client.subscribe(subjects::event(Some(job), kind)).await?);
    }
    let live = client.subscribe(subjects::live_progress(job)).await?;
    // Make sure the server has the interest before anything is published.
    client.flush().await?;
    Ok(Subscriptions {
        events: futures::stream::select_all(events),
        live,
        request_seq: None,
    })
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Completed(Completed),
    Failed(Failed),
    Cancelled(Cancelled),
}

impl Outcome {
    /// Prints the one-line summary (stdout) or the reason (stderr); returns the exit code.
    /// `output` is the path as the user gave it, named in the summary instead of the event's
    /// URI.
    pub fn report(&self, output: Option<&Path>) -> i32 {
        match self {
            Outcome::Completed(c) => {
                let speed = if c.wall_secs > 0.0 {
                    c.duration_secs / c.wall_secs
                } else {
                    0.0
                };
                println!(
                    "{}: {}, {:.2} s, {:.1} MB, {}, in {:.1} s ({:.2}x realtime)",
                    display::output(output, &c.output),
                    display::count(c.frames, "frame"),
                    c.duration_secs,
                    c.bytes as f64 / 1e6,
                    display::count(c.segments as u64, "segment"),
                    c.wall_secs,
                    speed
                );
                0
            }
            Outcome::Failed(f) => {
                eprintln!("ffleet: job failed ({}): {}", f.reason, f.message);
                1
            }
            Outcome::Cancelled(c) => {
                eprintln!("ffleet: job cancelled while {}", c.during.name());
                // Told apart from a failure (1) by scripts that wait on a job.
                3
            }
        }
    }
}

fn bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:12} [{bar:40}] {pos}/{len} frames {percent:>3}% eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb.set_message("queued");
    pb
}

/// Follows `job` until it completes or fails.
pub async fn follow(
    link: &Link,
    job: &JobId,
    mut subs: Subscriptions,
    show_bar: bool,
) -> Result<Outcome> {
    let pb = bar(show_bar);
    let mut live_frames: HashMap<Unit, u64> = HashMap::new();
    let mut total_known = false;
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watch = tokio::time::interval(RECONNECT_WATCH);
    watch.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stats = link.client.statistics();
    let mut connects = stats.connects.load(Ordering::Relaxed);
    let outcome = loop {
        tokio::select! {
            Some(m) = subs.events.next() => {
                let Some(ev) = serde_json::from_slice::<CloudEvent>(&m.payload)
                    .ok()
                    .and_then(|ce| JobEvent::from_cloudevent(&ce).ok())
                else { continue };
                match ev {
                    JobEvent::Accepted(_) => pb.set_message("splitting"),
                    JobEvent::Progress(p) => {
                        pb.set_length(p.frames_total);
                        total_known = true;
                        pb.set_position(pb.position().max(p.frames_done));
                    }
                    // A terminal event only says where to look: anything that can make the
                    // server deliver a message on this subject could have sent it. The job's
                    // status (its record, or the scheduler's answer to this client's inbox)
                    // decides; a status that lags the event is caught by the next check.
                    JobEvent::Completed(_) | JobEvent::Failed(_) | JobEvent::Cancelled(_) => {
                        if let Some(o) = check_status(link, job, subs.request_seq, &pb, &mut total_known).await {
                            break o;
                        }
                        tracing::warn!(job = %job, subject = %m.subject, "terminal event not confirmed by the job's status, waiting on");
                    }
                    JobEvent::SegmentDone(_) => {}
                }
            }
            Some(m) = subs.live.next() => {
                let Ok(p) = messages::decode::<LiveProgress>("live progress", &m.payload) else { continue };
                pb.set_message("encoding");
                if !p.unit.is_audio() {
                    live_frames.insert(p.unit, p.frame);
                    let sum: u64 = live_frames.values().sum();
                    pb.set_position(pb.position().max(sum.min(pb.length().unwrap_or(sum))));
                }
            }
            _ = check.tick() => {
                if let Some(o) = check_status(link, job, subs.request_seq, &pb, &mut total_known).await {
                    break o;
                }
            }
            _ = watch.tick() => {
                let now = stats.connects.load(Ordering::Relaxed);
                if now != connects {
                    connects = now;
                    // Whatever was sent while the connection moved is lost to it: ask now
                    // rather than at the next check.
                    tracing::debug!(job = %job, "reconnected, checking the job's status");
                    if let Some(o) = check_status(link, job, subs.request_seq, &pb, &mut total_known).await {
                        break o;
                    }
                    check.reset();
                }
            }
        }
    };
    pb.finish_and_clear();
    Ok(outcome)
}

/// Checks the job's status: updates the bar, and returns the outcome once the job has ended.
async fn check_status(
    link: &Link,
    job: &JobId,
    request_seq: Option<u64>,
    pb: &ProgressBar,
    total_known: &mut bool,
) -> Option<Outcome> {
    let status = link.status(job).await?;
    if status.state == StatusState::Merging {
        pb.set_message("merging");
    }
    if !*total_known && let Some(total) = status.frames_total {
        pb.set_length(total);
        *total_known = true;
    }
    outcome(&status, request_seq)
}

/// The outcome a status carries for the request stored at `request_seq`: the data of the job's
/// terminal event, or of that request's refusal (an older request's refusal under the same id
/// says nothing about this one, which may still be on its way).
pub fn outcome(status: &JobStatus, request_seq: Option<u64>) -> Option<Outcome> {
    match status.state {
        StatusState::Completed => status.completed.clone().map(Outcome::Completed),
        StatusState::Failed => status.failed.clone().map(Outcome::Failed),
        StatusState::Cancelled => status.cancelled.clone().map(Outcome::Cancelled),
        StatusState::Refused if request_seq.is_some() && status.request_seq == request_seq => {
            status.failed.clone().map(Outcome::Failed)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::reason::Reason;

    #[test]
    fn only_the_followed_requests_refusal_ends_it() {
        let job = JobId::new("j").unwrap();
        let failed = Failed {
            version: messages::CURRENT,
            job_id: Some(job.clone()),
            reason: Reason::PriorityNotAllowed,
            message: "priority 5 is above 0".into(),
        };
        let refused = JobStatus::refused(job.clone(), failed.clone(), 7);
        assert!(matches!(outcome(&refused, Some(7)), Some(Outcome::Failed(f)) if f == failed));
        // An older request's refusal under the same id: this one may still be queued.
        assert!(outcome(&refused, Some(8)).is_none());
        assert!(outcome(&refused, None).is_none());
        assert!(outcome(&JobStatus::unknown(job), Some(7)).is_none());
    }
}
