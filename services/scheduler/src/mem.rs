//! The scheduler's ports in memory, for tests under a paused clock: unit and job records go
//! through the same pure state machines as on the broker (`unit_protocol`, `job_protocol`), and
//! what the failover paths send is kept for the test to read.

use crate::Error;
use crate::ports::{Jobs, Outbox, Queues, Records, Units, Workers};
use ffleet_runtime::job_protocol::{self, JobStep};
use ffleet_runtime::media::Rational;
use ffleet_runtime::media::picture::ColorTags;
use ffleet_runtime::messages::records::{Container, VideoInfo};
use ffleet_runtime::messages::{
    Heartbeat, JobEvent, JobRecord, JobRequest, JobState, Plan, SegmentPlan, SegmentRecord,
    SourceInfo, Task,
};
use ffleet_runtime::reason::Failure;
use ffleet_runtime::unit_protocol::{self, Step};
use ffleet_runtime::{JobId, NodeId, Unit, subjects};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct State {
    pub units: HashMap<String, (SegmentRecord, u64)>,
    pub jobs: HashMap<JobId, JobRecord>,
    pub workers: HashMap<NodeId, (u64, Option<Heartbeat>)>,
    /// Consumers known to exist, by stream and name, and whether each has nothing waiting and
    /// nothing in hand. One not here is not idle, as on the broker.
    pub queues: HashMap<(String, String), bool>,
    pub planned: Vec<Task>,
    pub events: Vec<(JobEvent, String)>,
    /// Jobs whose records were purged, in order.
    pub purged: Vec<JobId>,
    revision: u64,
}

#[derive(Clone, Default)]
pub struct Mem(pub Arc<Mutex<State>>);

impl Mem {
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.0.lock().expect("mem lock"))
    }

    /// Stores a unit record at the next revision; that revision.
    pub fn put_unit(&self, job: &JobId, unit: Unit, rec: SegmentRecord) -> u64 {
        self.with(|s| {
            s.revision += 1;
            let r = s.revision;
            s.units.insert(subjects::segment_key(job, unit), (rec, r));
            r
        })
    }

    /// Consumer `consumer` of `stream` exists, idle or not.
    pub fn queue(&self, stream: &str, consumer: &str, idle: bool) {
        self.with(|s| {
            s.queues
                .insert((stream.to_owned(), consumer.to_owned()), idle)
        });
    }

    /// Every consumer the reconciler may ask about exists and is idle.
    pub fn all_idle(&self) {
        let cpu = ffleet_runtime::Capability::cpu();
        for (stream, consumer) in [
            (subjects::STREAM_TASKS, subjects::encode_consumer(&cpu)),
            (subjects::STREAM_TASKS, subjects::retry_consumer(&cpu)),
            (
                subjects::STREAM_TASKS,
                subjects::CONSUMER_SCHEDULER.to_owned(),
            ),
            (
                subjects::STREAM_EVENTS,
                subjects::CONSUMER_MERGER.to_owned(),
            ),
        ] {
            self.queue(stream, &consumer, true);
        }
    }

    pub fn unit_of(&self, job: &JobId, unit: Unit) -> SegmentRecord {
        self.with(|s| s.units[&subjects::segment_key(job, unit)].0.clone())
    }
}

impl Records for Mem {
    async fn purge_finished(&self, job: &JobId) -> Result<(), Error> {
        let prefix = format!("{job}.");
        self.with(|s| {
            s.units.retain(|k, _| !k.starts_with(&prefix));
            s.purged.push(job.clone());
        });
        Ok(())
    }
}

impl Units for Mem {
    async fn unit(&self, key: &str) -> Result<Option<(SegmentRecord, u64)>, Error> {
        Ok(self.with(|s| s.units.get(key).cloned()))
    }

    async fn step(&self, key: &str, step: &Step<'_>) -> Result<Option<SegmentRecord>, Error> {
        Ok(self.with(|s| {
            let current = s.units.get(key).map(|(r, _)| r.clone());
            let (next, _) = unit_protocol::apply(current.as_ref(), step, "now").ok()?;
            s.revision += 1;
            s.units.insert(key.to_owned(), (next.clone(), s.revision));
            Some(next)
        }))
    }
}

impl Jobs for Mem {
    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, Error> {
        Ok(self.with(|s| s.jobs.get(id).cloned()))
    }

    async fn fail(&self, id: &JobId, failure: &Failure) -> Result<bool, Error> {
        Ok(self.with(|s| {
            let step = JobStep::Fail { failure };
            let Ok((next, _)) = job_protocol::apply(s.jobs.get(id), &step, "now") else {
                return false;
            };
            s.jobs.insert(id.clone(), next);
            let ev = JobEvent::failed(Some(id.clone()), failure);
            let msg_id = ev.message_id();
            s.events.push((ev, msg_id));
            true
        }))
    }
}

impl Workers for Mem {
    async fn heartbeat(&self, node: &NodeId) -> Result<Option<(u64, Option<Heartbeat>)>, Error> {
        Ok(self.with(|s| s.workers.get(node).cloned()))
    }
}

impl Outbox for Mem {
    async fn plan(&self, task: &Task) -> Result<(), Error> {
        self.with(|s| s.planned.push(task.clone()));
        Ok(())
    }

    async fn event(&self, ev: &JobEvent, id: String) -> Result<(), Error> {
        self.with(|s| s.events.push((ev.clone(), id)));
        Ok(())
    }
}

impl Queues for Mem {
    async fn idle(&self, stream: &str, consumer: &str) -> bool {
        self.with(|s| {
            s.queues
                .get(&(stream.to_owned(), consumer.to_owned()))
                .copied()
                .unwrap_or(false)
        })
    }
}

/// A job of `segments` one-second video segments at 25 fps and no audio, encoding, with every
/// unit record planned at attempt 1; stored in `mem`.
pub fn encoding_job(mem: &Mem, id: &str, segments: u32) -> JobRecord {
    let req: JobRequest = serde_json::from_value(serde_json::json!({
        "version": 1, "job_id": id, "input": "file:///in/a.mp4", "output": "file:///out/a.mp4"
    }))
    .expect("request");
    let mut rec = JobRecord::new(req, "h264".into());
    rec.state = JobState::Encoding;
    rec.source = Some(SourceInfo {
        format: "mov,mp4,m4a,3gp,3g2,mj2".into(),
        size_bytes: 1 << 20,
        format_start_secs: 0.0,
        video: VideoInfo {
            codec: "h264".into(),
            width: 320,
            height: 180,
            pix_fmt: Some("yuv420p".into()),
            frame_rate: Rational::new(25, 1),
            time_base: Rational::new(1, 12800),
            frames: u64::from(segments) * 25,
            start_pts: 0,
            duration_ticks: i64::from(segments) * 12800,
            display_matrix: None,
            color: ColorTags::default(),
            hdr: Default::default(),
        },
        audio: None,
    });
    rec.plan = Some(Plan {
        segments,
        audio: false,
        tracks: Vec::new(),
        warnings: Vec::new(),
        container: Container::Mp4,
        source_path: "/in/a.mp4".into(),
        output_path: "/out/a.mp4".into(),
        source_key: None,
        source_digest: None,
        output_key: None,
        sized_for_slots: 0,
        reuses: Vec::new(),
    });
    for i in 0..segments {
        let cut = SegmentPlan {
            index: i,
            first_frame: u64::from(i) * 25,
            frames: 25,
            start_pts: i64::from(i) * 12800,
            duration_ticks: 12800,
            source_key: format!("jobs/{id}/src/v{i:05}.nut"),
            source_digest: None,
            within: None,
            headless: 0,
            headless_ticks: 0,
        };
        mem.put_unit(
            &rec.job_id,
            Unit::Video(i),
            SegmentRecord::planned(Some(cut)),
        );
    }
    mem.with(|s| s.jobs.insert(rec.job_id.clone(), rec.clone()));
    rec
}

/// A heartbeat of `node` offering `cpu`, holding `held` (job, unit, attempt).
pub fn heartbeat(node: &str, held: &[(&JobId, Unit, u32)]) -> Heartbeat {
    serde_json::from_value(serde_json::json!({
        "version": 1, "node_id": node, "host": node, "capabilities": ["cpu"],
        "slots_total": 2, "slots_busy": held.len(), "at": "2026-12-06T00:00:00Z",
        "holding": held.iter().map(|(j, u, a)| serde_json::json!({
            "job_id": j, "unit": u, "attempt": a, "slots": 1, "capability": "cpu"
        })).collect::<Vec<_>>(),
    }))
    .expect("heartbeat")
}
