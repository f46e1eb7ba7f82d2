//! Following one job to its end: its CloudEvents (`ffleet.events.<job>.>`) and live encode
//! progress (`ffleet.live.<job>`) drive a progress bar; the job record in KV is checked every few
//! seconds too, so a missed event (a reconnect) cannot leave the client waiting forever. A
//! client whose role may not read the jobs bucket (a submitter) follows by events only.

use super::display;
use anyhow::Result;
use ffleet_shared::messages::events::{Completed, Failed};
use ffleet_shared::messages::{self, CloudEvent, JobEvent, JobRecord, JobState, LiveProgress};
use ffleet_shared::nats::kv::Typed;
use ffleet_shared::runtime::Ctx;
use ffleet_shared::subjects::EventKind;
use ffleet_shared::{JobId, Unit, subjects};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub struct Subscriptions {
    events: futures::stream::SelectAll<async_nats::Subscriber>,
    live: async_nats::Subscriber,
}

/// What following needs: a connection, and the jobs bucket when the role may read it.
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

    async fn record(&self, job: &JobId) -> Option<JobRecord> {
        match &self.jobs {
            Some(jobs) => jobs.get(job.as_str()).await.ok().flatten().map(|(r, _)| r),
            None => None,
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
    ] {
        events.push(client.subscribe(subjects::event(Some(job), kind)).await?);
    }
    let live = client.subscribe(subjects::live_progress(job)).await?;
    // Make sure the server has the interest before anything is published.
    client.flush().await?;
    Ok(Subscriptions {
        events: futures::stream::select_all(events),
        live,
    })
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Completed(Completed),
    Failed(Failed),
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
    let mut check = tokio::time::interval(Duration::from_secs(2));
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
                    JobEvent::Completed(c) => break Outcome::Completed(c),
                    JobEvent::Failed(f) => break Outcome::Failed(f),
                    JobEvent::SegmentDone(_) => {}
                }
            }
            Some(m) = subs.live.next() => {
                let Ok(p) = messages::decode::<LiveProgress>("live progress", &m.payload) else { continue };
                if !total_known
                    && let Some(rec) = link.record(job).await
                        && let Some(src) = rec.source {
                            pb.set_length(src.video.frames);
                            total_known = true;
                        }
                pb.set_message("encoding");
                if !p.unit.is_audio() {
                    live_frames.insert(p.unit, p.frame);
                    let sum: u64 = live_frames.values().sum();
                    pb.set_position(pb.position().max(sum.min(pb.length().unwrap_or(sum))));
                }
            }
            _ = check.tick() => {
                if let Some(rec) = link.record(job).await {
                    if rec.state == JobState::Merging {
                        pb.set_message("merging");
                    }
                    if let Some(o) = outcome_from_record(&rec) {
                        break o;
                    }
                }
            }
        }
    };
    pb.finish_and_clear();
    Ok(outcome)
}

fn outcome_from_record(rec: &ffleet_shared::messages::JobRecord) -> Option<Outcome> {
    match (&rec.state, &rec.output, &rec.failure) {
        (JobState::Completed, Some(o), _) => {
            Some(Outcome::Completed(ffleet_shared::jobs::completed(
                &rec.job_id,
                o,
                rec.plan.as_ref().map_or(0, |p| p.segments as usize),
            )))
        }
        (JobState::Failed, _, Some(f)) => Some(Outcome::Failed(Failed {
            version: messages::CURRENT,
            job_id: Some(rec.job_id.clone()),
            reason: f.reason,
            message: f.message.clone(),
        })),
        _ => None,
    }
}
