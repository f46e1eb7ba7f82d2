//! `Task`: one unit of encode work, first on `ffleet.tasks.plan` (from the splitter), then on
//! `ffleet.tasks.encode.<capability>` (routed by the scheduler).
//!
//! A task names a server-side profile, never ffmpeg arguments: each encoder builds its command
//! from its own configuration.

use super::heartbeat::GpuClass;
use super::job::Preference;
use super::records::{AttemptFailure, JobRecord, SegmentPlan, SegmentRecord};
use super::{CURRENT, Versioned};
use crate::cost;
use crate::ids::{Capability, JobId, Unit};
use crate::media::picture::Picture;
use crate::media::tracks::TrackPlan;
use crate::reason::Failure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskInput {
    /// An object in media storage: a stream-copied cut, or the source's stored copy.
    Scratch {
        key: String,
        /// The digest its trusted writer recorded (the splitter): the encoder reads only an
        /// object with it. Absent over a shared directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
    /// The source itself, as the job request named it (audio is encoded once, from the source, as
    /// a single ffmpeg would): the encoder resolves the URI against its own input roots when it
    /// opens the file, so a task can never make it read outside them.
    Source {
        #[serde(alias = "path")]
        uri: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub version: u32,
    pub job_id: JobId,
    pub unit: Unit,
    pub attempt: u32,
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<i32>,
    pub input: TaskInput,
    /// Frames the result must have (video only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_frames: Option<u64>,
    /// Which of the cut's frames are the segment's, when the cut holds more (see
    /// `cuts::Within`): the encoder decodes the whole lead-in and keeps only these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<crate::media::cuts::Within>,
    /// Of `expected_frames`, those before the source's first keyframe (a capture that starts
    /// mid-GOP): the decoder may drop them without a failed decode call, as a single ffmpeg's
    /// does.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub headless: u64,
    /// Where a result that lost those of them that lead the segment starts at the earliest, in
    /// seconds from its first frame (halfway to the first frame that can decode; 0: none
    /// leads).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub headless_secs: f64,
    /// Media duration of the unit, for progress and time limits.
    pub duration_secs: f64,
    /// Where the unit starts in the source, in seconds from the video's first frame (for
    /// failure reports that name the input's time range).
    #[serde(default)]
    pub start_secs: f64,
    /// The source's picture facts (video units): every node converts them the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picture: Option<Picture>,
    /// Which source streams the audio unit carries and how (audio unit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackPlan>,
    /// Extension of the result intermediate (`nut` for video, `m4a`/`mka` for audio).
    pub result_ext: String,
    pub priority: i32,
    /// Set by the scheduler when it routes the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
    /// The job's preference and whether it is a requirement (copied from the request).
    #[serde(default, skip_serializing_if = "Preference::is_any")]
    pub prefer: Preference,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require: bool,
    /// Estimated work (see `cost`): orders the backlog within a job, largest first.
    #[serde(default)]
    pub work: f64,
    /// Slots the task takes on its node (cores for `cpu`, sessions for accelerators); set by
    /// the scheduler from the routed variant.
    #[serde(default = "one")]
    pub slots: u32,
    /// Set by the scheduler on a re-issued accelerator attempt when a live node of the GPU
    /// class that ran the unit before offers the capability: nodes of another class step aside
    /// for its first deliveries (NVENC bytes differ between GPU models and drivers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_class: Option<GpuClass>,
    /// The unit's record as the publisher of this task wrote it, and that write's revision: the
    /// receiver's revision-checked update of the record starts from this copy instead of a read.
    /// Only ever a guess: a copy that is no longer current loses the revision check, and the
    /// update is decided again on a read. Trusted as far as the task is: every role that may
    /// publish tasks may write unit records itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordCopy>,
}

/// A unit record and the revision it was written at (see `Task::record`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordCopy {
    pub revision: u64,
    pub record: SegmentRecord,
}

/// Largest record a task carries a copy of: the copy only saves a read, so a record grown large
/// (a long list of failed attempts) is left out, keeping the task far from the message limit.
const COPY_MAX_BYTES: usize = 4096;

impl RecordCopy {
    /// A copy of `record` as written at `revision`, unless the record is too large to carry.
    pub fn of(record: SegmentRecord, revision: u64) -> Option<RecordCopy> {
        let bytes = serde_json::to_vec(&record).map_or(usize::MAX, |b| b.len());
        (bytes <= COPY_MAX_BYTES).then_some(RecordCopy { revision, record })
    }
}

impl Task {
    /// The record copy this task carries, as `Typed::modify_known` takes it.
    pub fn known_record(&self) -> Option<(SegmentRecord, u64)> {
        self.record.as_ref().map(|c| (c.record.clone(), c.revision))
    }
}

fn one() -> u32 {
    1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

impl Task {
    /// Attempt `attempt` of `unit`, built from the job's plan and, for a video segment, its cut
    /// (kept in the unit's record): the splitter issues attempt 1 of every unit this way, and the
    /// scheduler and merger re-issue later attempts the same way. `None` when the job has no
    /// plan yet, the plan has no such unit, or a video segment comes without its cut.
    pub fn for_unit(
        rec: &JobRecord,
        unit: Unit,
        cut: Option<&SegmentPlan>,
        attempt: u32,
    ) -> Option<Task> {
        let (plan, src) = (rec.plan.as_ref()?, rec.source.as_ref()?);
        let v = &src.video;
        let work = match unit {
            Unit::Video(_) => cost::video_work(
                v.width,
                v.height,
                &v.codec,
                v.pix_fmt.as_deref(),
                cut.map_or(0, |c| c.frames),
            ),
            Unit::Audio => src
                .audio
                .as_ref()
                .map_or(0.0, |a| cost::audio_work(a.duration_secs)),
        };
        let tb = src.video.time_base;
        let (mut within, mut headless, mut headless_secs) = (None, 0, 0.0);
        let (input, expected_frames, duration_secs, start_secs, result_ext) = match unit {
            Unit::Video(i) => {
                let s = cut.filter(|s| s.index == i && i < plan.segments)?;
                within = s.within;
                headless = s.headless;
                headless_secs = tb.seconds(s.headless_ticks);
                (
                    TaskInput::Scratch {
                        key: s.source_key.clone(),
                        digest: s.source_digest.clone(),
                    },
                    Some(s.frames),
                    tb.seconds(s.duration_ticks),
                    tb.seconds(s.start_pts - src.video.start_pts),
                    crate::media::INTERMEDIATE_FORMAT,
                )
            }
            Unit::Audio if plan.audio => (
                match &plan.source_key {
                    Some(key) => TaskInput::Scratch {
                        key: key.clone(),
                        digest: plan.source_digest.clone(),
                    },
                    None => TaskInput::Source {
                        uri: rec.request.input.clone(),
                    },
                },
                None,
                src.audio
                    .as_ref()
                    .map_or(src.video.duration_secs(), |a| a.duration_secs),
                0.0,
                plan.container.audio_intermediate_ext(),
            ),
            Unit::Audio => return None,
        };
        let (picture, tracks) = match unit {
            Unit::Video(_) => (Some(src.video.picture()), Vec::new()),
            Unit::Audio => (None, plan.tracks.clone()),
        };
        Some(Task {
            version: CURRENT,
            job_id: rec.job_id.clone(),
            unit,
            attempt,
            profile: rec.profile.clone(),
            quality: rec.request.overrides.quality,
            input,
            expected_frames,
            within,
            headless,
            headless_secs,
            duration_secs,
            start_secs,
            picture,
            tracks,
            result_ext: result_ext.into(),
            priority: rec.priority(),
            capability: None,
            prefer: rec.request.prefer,
            require: rec.request.require,
            work,
            slots: 1,
            prefer_class: None,
            record: None,
        })
    }

    /// Scratch key of this attempt's result: attempts never overwrite each other.
    pub fn result_key(&self) -> String {
        crate::keys::result(&self.job_id, self.unit, self.attempt, &self.result_ext)
    }
}

impl Versioned for Task {
    fn version(&self) -> u32 {
        self.version
    }
}

/// What `ffleet.dead.<job>.<unit>` keeps about a unit that exhausted its retry budget: the task
/// as last issued, the failure that ended its job, and every failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub version: u32,
    pub task: Task,
    pub failure: Failure,
    pub failures: Vec<AttemptFailure>,
    pub at: String,
}

impl Versioned for DeadLetter {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    #[test]
    fn a_task_carries_a_small_records_copy_and_reads_without_one() {
        let plain = serde_json::json!({"version": 1, "job_id": "j", "unit": "v00001",
            "attempt": 1, "profile": "h264", "input": {"kind": "scratch", "key": "k"},
            "duration_secs": 1.0, "result_ext": "nut", "priority": 0});
        let mut task: Task = serde_json::from_value(plain).unwrap();
        assert_eq!(task.known_record(), None);
        let record = SegmentRecord::planned(None);
        task.record = RecordCopy::of(record.clone(), 42);
        let back: Task = serde_json::from_slice(&serde_json::to_vec(&task).unwrap()).unwrap();
        assert_eq!(back.known_record(), Some((record.clone(), 42)));

        // A record grown large is not carried: the task stays far from the message limit.
        let mut big = record;
        big.failures = (0..100)
            .map(|attempt| AttemptFailure {
                attempt,
                node: NodeId::new("enc-1").unwrap(),
                message: "x".repeat(100),
            })
            .collect();
        assert_eq!(RecordCopy::of(big, 43), None);
    }
}
