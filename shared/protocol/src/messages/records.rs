//! What ffleet keeps in KV: one `JobRecord` per job (state, source facts, plan, which units are
//! collected) and one `SegmentRecord` per unit (its cut, attempt, owner and result).
//!
//! Both change only through revision-checked updates (`nats::kv::Typed::update`), so two
//! services racing on the same record cannot both win. Neither grows with the number of units
//! beyond one bit per unit (`UnitSet`): whatever is per unit lives in the unit's own record, so a
//! job of any length fits the server's message limit.

use super::heartbeat::GpuClass;
use super::job::JobRequest;
use super::unit_set::UnitSet;
use super::{CURRENT, Versioned};
use crate::ids::{Capability, JobId, NodeId, Unit};
/// Where it has always been named from; it is a media type (`media::container`).
pub use crate::media::container::Container;
use crate::media::hdr::Hdr;
use crate::media::picture::{ColorTags, DisplayMatrix, Picture};
use crate::media::rational::Rational;
use crate::media::tracks::TrackPlan;
use crate::reason::Failure;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted; being probed and cut.
    Splitting,
    /// Tasks are out; results are being collected.
    Encoding,
    /// Every unit is done; one merger is concatenating and verifying.
    Merging,
    /// The merged output is verified and going into place: the job completes (a cancel is
    /// refused from here on, so no output ever appears beside a `cancelled` event).
    Finalizing,
    Completed,
    Failed,
    /// Stopped on request (`ffleet cancel`): its units dropped, its media removed, no output.
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// The state's name on the wire (`splitting`, ..., `cancelled`).
    pub fn name(self) -> &'static str {
        match self {
            JobState::Splitting => "splitting",
            JobState::Encoding => "encoding",
            JobState::Merging => "merging",
            JobState::Finalizing => "finalizing",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// Facts about the source that planning, merging and verification need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub format: String,
    pub size_bytes: u64,
    /// Earliest start over all streams (what ffmpeg subtracts when it normalises timestamps).
    pub format_start_secs: f64,
    pub video: VideoInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix_fmt: Option<String>,
    /// Nominal rate (`r_frame_rate`); timing itself comes from packet timestamps.
    pub frame_rate: Rational,
    pub time_base: Rational,
    /// Packets read from the video stream, which is its frame count.
    pub frames: u64,
    /// First presentation timestamp, in `time_base` ticks.
    pub start_pts: i64,
    /// Last pts + last duration − first pts, in ticks.
    pub duration_ticks: i64,
    /// The container's display matrix (rotation, mirroring), applied as ffmpeg's autorotate does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_matrix: Option<DisplayMatrix>,
    #[serde(default)]
    pub color: ColorTags,
    /// HDR10 static metadata and the Dolby Vision mark (see `media::hdr`).
    #[serde(default, skip_serializing_if = "Hdr::is_empty")]
    pub hdr: Hdr,
}

impl VideoInfo {
    /// What the encoder needs to convert this stream's pictures the same way on every node.
    pub fn picture(&self) -> Picture {
        Picture {
            width: self.width,
            height: self.height,
            pix_fmt: self.pix_fmt.clone(),
            display_matrix: self.display_matrix,
            color: self.color.clone(),
            hdr: self.hdr,
        }
    }

    pub fn start_secs(&self) -> f64 {
        self.time_base.seconds(self.start_pts)
    }

    pub fn duration_secs(&self) -> f64 {
        self.time_base.seconds(self.duration_ticks)
    }

    /// One frame at the nominal rate, the tolerance for duration checks.
    pub fn frame_secs(&self) -> f64 {
        self.frame_rate.inverse_secs().unwrap_or(1.0 / 25.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    pub codec: String,
    pub channels: u32,
    pub sample_rate: u32,
    pub start_secs: f64,
    pub duration_secs: f64,
    /// Packets of the stream (0 where not counted): a single ffmpeg's decode-error rate counts
    /// them beside the video's frames.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub packets: u64,
}

/// One video segment of the plan: a run of source frames, and the stream-copied cut that holds it. Kept in the unit's
/// own record (`SegmentRecord::cut`), never in the job record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentPlan {
    pub index: u32,
    /// Presentation index of the segment's first frame in the source.
    pub first_frame: u64,
    pub frames: u64,
    /// Presentation time of the first frame, in source ticks.
    pub start_pts: i64,
    /// Until the next segment's first frame (or the stream end), in source ticks.
    pub duration_ticks: i64,
    /// Scratch key of the stream-copied cut.
    pub source_key: String,
    /// Digest of the cut as the splitter stored it (object store): an encoder reads only an
    /// object with this digest, whatever the object's own metadata says by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// Where the segment lies in its cut when the cut holds more than the segment (it starts
    /// between keyframes, or shares its cut with the next segment): see `cuts::Within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<crate::media::cuts::Within>,
    /// Frames of the segment before the source's first keyframe (a capture that starts
    /// mid-GOP): its encoder may lose them without a failed decode call, as a single ffmpeg's
    /// decoder drops them (see `cuts::Cut::headless`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub headless: u64,
    /// Where a result that lost those of them that lead the segment starts at the earliest,
    /// from its first frame, in source ticks (`cuts::Cut::headless_ticks`).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub headless_ticks: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Video segments `v00000`.. of the job; each one's cut is in its unit record.
    pub segments: u32,
    /// Whether the audio unit exists: it carries every track beside the video (audio,
    /// subtitles, attachments) and the source's chapters and metadata.
    pub audio: bool,
    /// What the audio unit carries, stream by stream.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracks: Vec<TrackPlan>,
    /// Source streams the output cannot hold, reported in the completed event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub container: Container,
    /// Absolute path of the source, read directly by the audio task (shared directory).
    pub source_path: String,
    /// Absolute path of the final output (empty when it goes to the object store).
    pub output_path: String,
    /// The source's copy in media storage, read by the audio task when nodes share no files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_key: Option<String>,
    /// Digest of `source_key`'s object as the splitter read or stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// Object-store key of the final output (`object:` outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// The pool's slots the segment length was sized for (0: not recorded): a retry sizes for
    /// the same, so its cuts come out the same whatever the pool is now.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub sized_for_slots: u32,
    /// Earlier runs of this job (a retry's) whose encoded units this one merges: their kept
    /// results go when this job completes or is cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reuses: Vec<JobId>,
}

impl Plan {
    /// Whether `unit` is one of the job's units.
    pub fn contains(&self, unit: Unit) -> bool {
        match unit {
            Unit::Video(i) => i < self.segments,
            Unit::Audio => self.audio,
        }
    }

    pub fn units(&self) -> impl Iterator<Item = Unit> + '_ {
        (0..self.segments)
            .map(Unit::Video)
            .chain(self.audio.then_some(Unit::Audio))
    }

    pub fn unit_count(&self) -> usize {
        self.segments as usize + usize::from(self.audio)
    }
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// Summary of a finished output, kept in the record and sent in the completed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputInfo {
    pub uri: String,
    pub frames: u64,
    pub duration_secs: f64,
    pub bytes: u64,
    pub wall_secs: f64,
    /// Decoder errors over all units: damaged input that was concealed, or whose undecodable
    /// frames were dropped as a single ffmpeg drops them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decode_errors: u64,
    /// What the output could not keep of the source (see `Plan::warnings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Bytes the job moved through the object store (sources, cuts, segments, output).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub media_bytes: u64,
    /// Digest of an output stored in the object store, as the merger stored it: its fetcher
    /// checks the bytes against this, not against the object's own metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub version: u32,
    pub job_id: JobId,
    pub state: JobState,
    pub request: JobRequest,
    /// The resolved profile name (request's, or the default).
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Units whose accepted result the merger has counted (their results are in their unit
    /// records).
    #[serde(default, skip_serializing_if = "UnitSet::is_empty")]
    pub collected: UnitSet,
    /// Planned frames of the collected video units, for progress.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frames_collected: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputInfo>,
    /// The state a cancelled job was stopped in (its `cancelled` event says so too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_during: Option<JobState>,
    /// The priority an operator set after submission (`ffleet priority`): it wins over the
    /// request's for every unit not yet released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The job that runs this one again (`ffleet retry`), once one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_as: Option<JobId>,
    /// Bytes the splitter and merger moved through the object store for this job (the units'
    /// own transfers are in their unit records, and summed into `output`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub media_bytes: u64,
    pub accepted_at: String,
    pub updated_at: String,
}

impl JobRecord {
    pub fn new(request: JobRequest, profile: String) -> Self {
        let now = crate::time::now_rfc3339();
        Self {
            version: CURRENT,
            job_id: request.job_id.clone(),
            state: JobState::Splitting,
            request,
            profile,
            source: None,
            plan: None,
            collected: UnitSet::default(),
            frames_collected: 0,
            failure: None,
            output: None,
            cancelled_during: None,
            priority: None,
            retried_as: None,
            media_bytes: 0,
            accepted_at: now.clone(),
            updated_at: now,
        }
    }

    /// The job's priority now: an operator's, else the request's.
    pub fn priority(&self) -> i32 {
        self.priority.unwrap_or(self.request.priority)
    }

    /// Frames of the units collected so far, and the total.
    pub fn frame_progress(&self) -> (u64, u64) {
        let total = self.source.as_ref().map_or(0, |s| s.video.frames);
        (self.frames_collected, total)
    }

    pub fn touch(&mut self) {
        self.updated_at = crate::time::now_rfc3339();
    }
}

impl Versioned for JobRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentState {
    /// Written by the splitter; the task is on its way to the scheduler.
    Planned,
    /// Routed to a capability queue by the scheduler.
    Queued,
    /// Claimed by an encoder.
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub version: u32,
    pub state: SegmentState,
    /// The video segment's cut (video units; the tracks unit reads the source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<SegmentPlan>,
    /// Current attempt; only its results count.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    /// Decoder errors of the attempt that produced the result.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decode_errors: u64,
    /// Digest of the result object this attempt uploaded (object store): the merger merges
    /// only an object with this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Bytes this attempt moved through the object store (its cut down, its result up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_moved: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Every attempt that failed on a node, oldest first: the retry budget counts its nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<AttemptFailure>,
    /// GPU class of the node that last claimed the unit for an accelerator: kept across
    /// attempts, so a re-issued attempt can prefer a node whose NVENC gives the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_class: Option<GpuClass>,
    /// The earlier run of the job (a retry's) whose result this unit reuses: the split wrote
    /// it done, and no task of it ever runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<JobId>,
    pub updated_at: String,
}

/// One failed attempt of a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptFailure {
    pub attempt: u32,
    pub node: NodeId,
    pub message: String,
}

impl SegmentRecord {
    /// Distinct nodes this unit failed on.
    pub fn failed_nodes(&self) -> Vec<&NodeId> {
        let mut nodes: Vec<&NodeId> = self.failures.iter().map(|f| &f.node).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Attempt 1 of a unit, not yet routed: `cut` for a video segment, `None` for the tracks
    /// unit.
    pub fn planned(cut: Option<SegmentPlan>) -> Self {
        Self {
            version: CURRENT,
            state: SegmentState::Planned,
            cut,
            attempt: 1,
            capability: None,
            owner: None,
            result_key: None,
            frames: None,
            decode_errors: 0,
            digest: None,
            bytes_moved: 0,
            failure: None,
            failures: Vec::new(),
            gpu_class: None,
            reused_from: None,
            updated_at: crate::time::now_rfc3339(),
        }
    }

    /// Attempt 1 of a unit, done already: the result `done` (a unit record of job `from`, an
    /// earlier run of this job) recorded for the same cut.
    pub fn reused(cut: Option<SegmentPlan>, done: &SegmentRecord, from: &JobId) -> Self {
        Self {
            state: SegmentState::Done,
            capability: done.capability.clone(),
            owner: done.owner.clone(),
            result_key: done.result_key.clone(),
            frames: done.frames,
            decode_errors: done.decode_errors,
            digest: done.digest.clone(),
            gpu_class: done.gpu_class.clone(),
            reused_from: Some(from.clone()),
            ..Self::planned(cut)
        }
    }
}

impl Versioned for SegmentRecord {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::MAX_VIDEO_UNITS;

    /// A job of `segments` video segments and a tracks unit, every unit collected (the largest
    /// its record gets), with the unit records it comes with.
    fn job(segments: u32) -> (JobRecord, SegmentRecord) {
        let req: JobRequest = serde_json::from_value(serde_json::json!({
            "version": 1, "job_id": "long-job", "input": "file:///in/two-hours.mp4",
            "output": "file:///out/two-hours.mp4", "segment_seconds": 1.0
        }))
        .unwrap();
        let mut rec = JobRecord::new(req, "h264".into());
        rec.state = JobState::Merging;
        rec.source = Some(SourceInfo {
            format: "mov,mp4,m4a,3gp,3g2,mj2".into(),
            size_bytes: 1 << 30,
            format_start_secs: 0.0,
            video: VideoInfo {
                codec: "h264".into(),
                width: 1920,
                height: 1080,
                pix_fmt: Some("yuv420p".into()),
                frame_rate: Rational::new(25, 1),
                time_base: Rational::new(1, 12800),
                frames: u64::from(segments) * 25,
                start_pts: 0,
                duration_ticks: i64::from(segments) * 12800,
                display_matrix: None,
                color: ColorTags::default(),
                hdr: Hdr::default(),
            },
            audio: None,
        });
        let plan = Plan {
            segments,
            audio: true,
            tracks: Vec::new(),
            warnings: Vec::new(),
            container: Container::Mp4,
            source_path: "/in/two-hours.mp4".into(),
            output_path: "/out/two-hours.mp4".into(),
            source_key: None,
            source_digest: None,
            output_key: None,
            sized_for_slots: 0,
            reuses: Vec::new(),
        };
        for u in plan.units() {
            rec.collected.insert(u);
        }
        rec.frames_collected = u64::from(segments) * 25;
        rec.plan = Some(plan);
        let last = segments - 1;
        let mut seg = SegmentRecord::planned(Some(SegmentPlan {
            index: last,
            first_frame: u64::from(last) * 25,
            frames: 25,
            start_pts: i64::from(last) * 12800,
            duration_ticks: 12800,
            source_key: format!("jobs/long-job/src/seg{last:05}.nut"),
            source_digest: None,
            within: None,
            headless: 0,
            headless_ticks: 0,
        }));
        seg.state = SegmentState::Done;
        seg.result_key = Some(format!("jobs/long-job/enc/v{last:05}.a1.nut"));
        seg.frames = Some(25);
        seg.digest = Some("SHA-256=".to_string() + &"A".repeat(44));
        (rec, seg)
    }

    fn size<T: Serialize>(v: &T) -> usize {
        crate::messages::encode(v).len()
    }

    #[test]
    fn the_job_record_does_not_grow_with_the_units_but_for_one_bit_each() {
        let (small, small_seg) = job(10);
        let (long, long_seg) = job(7_200);
        let (largest, largest_seg) = job(MAX_VIDEO_UNITS);
        // The plan is the same size whatever the number of segments (to the digits of the count).
        let plan = |r: &JobRecord| size(r.plan.as_ref().unwrap());
        assert!(
            plan(&largest) - plan(&small) <= 4,
            "{} vs {}",
            plan(&largest),
            plan(&small)
        );
        // What remains per unit is the collected bitmap: one bit (base64: 4/3 of a bit).
        let per_unit = |a: &JobRecord, b: &JobRecord, units: u32| {
            (size(a) - size(b)) as f64 / f64::from(units)
        };
        assert!(per_unit(&long, &small, 7_190) < 0.2);
        assert!(per_unit(&largest, &small, MAX_VIDEO_UNITS - 10) < 0.2);
        // The two-hour job of 1 s segments that used to need 1.16 MB, and the largest job there
        // can be, are far inside the server's 1 MiB message limit.
        assert!(size(&long) < 4_000, "{} bytes", size(&long));
        assert!(size(&largest) < 24_000, "{} bytes", size(&largest));
        // A unit record is the same size in any job (its cut and result are its own).
        assert!(size(&largest_seg) - size(&small_seg) <= 20);
        assert!(size(&long_seg) < 1_000, "{} bytes", size(&long_seg));
    }

    #[test]
    fn a_unit_record_keeps_its_cut_across_attempts() {
        let (_, mut seg) = job(3);
        seg.state = SegmentState::Planned;
        let step = crate::unit_protocol::Step::HandBack { attempt: 1 };
        let (next, _) = crate::unit_protocol::apply(Some(&seg), &step, "t").unwrap();
        assert_eq!(next.attempt, 2);
        assert_eq!(next.cut, seg.cut);
        let back: SegmentRecord =
            crate::messages::decode("segment", &crate::messages::encode(&next)).unwrap();
        assert_eq!(back, next);
    }
}
