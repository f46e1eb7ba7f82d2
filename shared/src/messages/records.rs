//! What ffleet keeps in KV: one `JobRecord` per job (state, source facts, plan, collected
//! results) and one `SegmentRecord` per unit (attempt and owner).
//!
//! Both change only through revision-checked updates (`nats::kv::Typed::update`), so two
//! services racing on the same record cannot both win.

use super::heartbeat::GpuClass;
use super::job::JobRequest;
use super::{CURRENT, Versioned};
use crate::ids::{Capability, JobId, NodeId, Unit};
use crate::media::picture::{ColorTags, DisplayMatrix, Picture};
use crate::media::rational::Rational;
use crate::media::tracks::TrackPlan;
use crate::reason::Failure;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted; being probed and cut.
    Splitting,
    /// Tasks are out; results are being collected.
    Encoding,
    /// Every unit is done; one merger is concatenating and verifying.
    Merging,
    Completed,
    Failed,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed)
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
}

/// Output container, chosen by the output file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    Mp4,
    Mov,
    Matroska,
}

impl Container {
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "mp4" | "m4v" => Some(Container::Mp4),
            "mov" => Some(Container::Mov),
            "mkv" => Some(Container::Matroska),
            _ => None,
        }
    }

    /// ffmpeg muxer name.
    pub fn muxer(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mov => "mov",
            Container::Matroska => "matroska",
        }
    }

    /// Extension of the encoded-audio intermediate that this container can take by stream copy.
    pub fn audio_intermediate_ext(self) -> &'static str {
        match self {
            Container::Mp4 | Container::Mov => "m4a",
            Container::Matroska => "mka",
        }
    }
}

/// One video segment of the plan: a keyframe-aligned run of source frames.
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub segments: Vec<SegmentPlan>,
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
    /// Absolute path of the source, read directly by the audio task.
    pub source_path: String,
    /// Absolute path of the final output.
    pub output_path: String,
}

impl Plan {
    pub fn units(&self) -> impl Iterator<Item = Unit> + '_ {
        self.segments
            .iter()
            .map(|s| Unit::Video(s.index))
            .chain(self.audio.then_some(Unit::Audio))
    }

    pub fn unit_count(&self) -> usize {
        self.segments.len() + usize::from(self.audio)
    }
}

/// A unit's accepted result, as collected by the merger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collected {
    pub attempt: u32,
    pub result_key: String,
    pub frames: u64,
    /// Decoder errors seen while encoding the unit (damaged input).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub decode_errors: u64,
}

fn is_zero(n: &u64) -> bool {
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
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub collected: BTreeMap<Unit, Collected>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputInfo>,
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
            collected: BTreeMap::new(),
            failure: None,
            output: None,
            accepted_at: now.clone(),
            updated_at: now,
        }
    }

    /// Frames of the units collected so far, and the total.
    pub fn frame_progress(&self) -> (u64, u64) {
        let total = self.source.as_ref().map_or(0, |s| s.video.frames);
        let done = self
            .collected
            .iter()
            .filter(|(u, _)| !u.is_audio())
            .map(|(_, c)| c.frames)
            .sum();
        (done, total)
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Every attempt that failed on a node, oldest first: the retry budget counts its nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<AttemptFailure>,
    /// GPU class of the node that last claimed the unit for an accelerator: kept across
    /// attempts, so a re-issued attempt can prefer a node whose NVENC gives the same bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_class: Option<GpuClass>,
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

    /// Moves the unit to a fresh attempt, owned by nobody, waiting to be routed again: a result
    /// of any earlier attempt will no longer be accepted.
    pub fn next_attempt(&self) -> SegmentRecord {
        SegmentRecord {
            state: SegmentState::Planned,
            attempt: self.attempt + 1,
            capability: None,
            owner: None,
            updated_at: crate::time::now_rfc3339(),
            ..self.clone()
        }
    }

    pub fn planned() -> Self {
        Self {
            version: CURRENT,
            state: SegmentState::Planned,
            attempt: 1,
            capability: None,
            owner: None,
            result_key: None,
            frames: None,
            decode_errors: 0,
            failure: None,
            failures: Vec::new(),
            gpu_class: None,
            updated_at: crate::time::now_rfc3339(),
        }
    }
}

impl Versioned for SegmentRecord {
    fn version(&self) -> u32 {
        self.version
    }
}
