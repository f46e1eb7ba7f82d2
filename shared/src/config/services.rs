//! The services' sections (`[splitter]`, `[scheduler]`, `[encoder]`, `[merger]`), each with its
//! own rules.

use ffleet_protocol::settings::{Invalid, Section, positive};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitterConfig {
    /// Jobs split at the same time by one splitter.
    pub concurrency: usize,
    /// Longest segment when the job does not ask for one (a request's `segment_seconds` takes
    /// its place). Below it the length follows the pool: about two segments per live slot.
    pub default_segment_secs: f64,
    /// Shortest segment the pool rule cuts, against per-segment start-up cost (a request's own
    /// shorter `segment_seconds` is still honoured).
    pub min_segment_secs: f64,
    /// Highest priority a request on `ffleet.jobs.submit` may ask for; requests above it are
    /// refused (`priority_not_allowed`). Requests on `ffleet.jobs.submit-privileged` (clients
    /// allowed to publish there) are not capped.
    pub max_submitter_priority: i32,
}

impl Default for SplitterConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            default_segment_secs: 10.0,
            min_segment_secs: 1.0,
            max_submitter_priority: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A heartbeat older than this marks its node as dead: its units are handed to others.
    pub heartbeat_ttl_secs: f64,
    /// The leader's lease: a follower takes over within this long of the leader dying.
    pub lease_ttl_secs: f64,
    /// How often the leader compares every active job's units with the live pool and the
    /// queues, re-issuing what went missing (the slow path behind heartbeat staleness).
    pub reconcile_interval_secs: f64,
    /// A unit queued this long whose queue holds no message is re-issued (a lost message).
    pub lost_task_secs: f64,
    /// A job still unfinished this long after it was accepted fails.
    pub job_deadline_secs: f64,
    /// Tasks released into a capability queue beyond the pool's free slots, so a node that
    /// frees a slot finds its next task waiting instead of a round trip away.
    pub release_buffer: u32,
    /// A GPU-preferring task spills to CPU (if its job allows it) once more than this many
    /// tasks wait for GPU capacity.
    pub spill_queue_depth: u32,
    /// A task whose allowed capabilities have no live node at all waits this long for one,
    /// then fails its job (`no_capable_node`).
    pub capability_wait_secs: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_ttl_secs: 3.0,
            lease_ttl_secs: 3.0,
            reconcile_interval_secs: 5.0,
            lost_task_secs: 30.0,
            job_deadline_secs: 24.0 * 3600.0,
            release_buffer: 1,
            spill_queue_depth: 4,
            capability_wait_secs: 60.0,
        }
    }
}

impl SchedulerConfig {
    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_ttl_secs)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// Stable node id; generated from the host name when absent.
    pub node_id: Option<String>,
    /// Concurrent segment encodes; default: CPU cores / the profile threads (1).
    pub slots: Option<u32>,
    /// Restrict or label capabilities; default: detected (`cpu` from `ffmpeg -encoders`,
    /// `nvenc` when NVML finds an NVIDIA GPU and ffmpeg has h264_nvenc). Either way an
    /// accelerator capability is offered only once a test encode with an encoder its profile
    /// variants use succeeded.
    pub capabilities: Option<Vec<String>>,
    /// Concurrent accelerator encodes (GPU sessions); default: what the driver allows per
    /// GPU (consumer boards 3/5/8 by driver version, less the sessions already open; 8 for
    /// professional and data-center boards), or `slots` for a labelled node without a GPU.
    pub gpu_slots: Option<u32>,
    /// Limit for each start-up test encode/decode (and the re-test after a GPU failure).
    pub proof_timeout_secs: f64,
    /// Accelerator encodes failing in a row after which the node gives the capability up even
    /// though its variant still passes a test encode (a failing variant demotes at once).
    pub demote_after_failures: u32,
    pub heartbeat_interval_secs: f64,
    /// Kill an ffmpeg that reports no progress for this long.
    pub stall_timeout_secs: f64,
    /// Hard limit per unit: max(min_timeout_secs, media duration × this factor).
    pub timeout_factor: f64,
    pub min_timeout_secs: f64,
    /// How long one pull waits for a task before asking again.
    pub fetch_wait_secs: f64,
    /// Attempts after which a unit that keeps failing is failed for good, however few nodes
    /// it failed on (a fleet of one node never reaches `retry_nodes`).
    pub max_attempts: u32,
    /// A unit that failed on this many distinct nodes fails its job.
    pub retry_nodes: u32,
    /// On SIGTERM: how long held units may run on before they are handed back.
    pub stop_grace_secs: f64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            slots: None,
            capabilities: None,
            gpu_slots: None,
            proof_timeout_secs: 15.0,
            demote_after_failures: 3,
            heartbeat_interval_secs: 1.0,
            stall_timeout_secs: 30.0,
            timeout_factor: 30.0,
            min_timeout_secs: 300.0,
            fetch_wait_secs: 2.0,
            max_attempts: 5,
            retry_nodes: 3,
            stop_grace_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergerConfig {
    /// Merges run at the same time by one merger.
    pub concurrency: usize,
    /// Keep scratch media of failed jobs for inspection.
    pub keep_failed_scratch: bool,
}

impl Default for MergerConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            keep_failed_scratch: false,
        }
    }
}

impl Section for SplitterConfig {
    const KEY: &'static str = "splitter";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "splitter",
            &[
                ("default_segment_secs", self.default_segment_secs),
                ("min_segment_secs", self.min_segment_secs),
            ],
        )?;
        if self.concurrency == 0 {
            return Err(Invalid("splitter.concurrency must be >= 1".into()));
        }
        Ok(())
    }
}

impl Section for SchedulerConfig {
    const KEY: &'static str = "scheduler";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "scheduler",
            &[
                ("heartbeat_ttl_secs", self.heartbeat_ttl_secs),
                ("lease_ttl_secs", self.lease_ttl_secs),
                ("reconcile_interval_secs", self.reconcile_interval_secs),
                ("lost_task_secs", self.lost_task_secs),
                ("job_deadline_secs", self.job_deadline_secs),
                ("capability_wait_secs", self.capability_wait_secs),
            ],
        )
    }
}

impl Section for EncoderConfig {
    const KEY: &'static str = "encoder";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "encoder",
            &[
                ("heartbeat_interval_secs", self.heartbeat_interval_secs),
                ("stall_timeout_secs", self.stall_timeout_secs),
                ("fetch_wait_secs", self.fetch_wait_secs),
                ("timeout_factor", self.timeout_factor),
            ],
        )?;
        if self.slots == Some(0) {
            return Err(Invalid("encoder.slots must be >= 1".into()));
        }
        if self.gpu_slots == Some(0) {
            return Err(Invalid("encoder.gpu_slots must be >= 1".into()));
        }
        if !(self.proof_timeout_secs.is_finite() && self.proof_timeout_secs > 0.0)
            || self.demote_after_failures == 0
        {
            return Err(Invalid(
                "encoder.proof_timeout_secs must be > 0 and encoder.demote_after_failures >= 1"
                    .into(),
            ));
        }
        if !(self.stop_grace_secs.is_finite() && self.stop_grace_secs >= 0.0) {
            return Err(Invalid("encoder.stop_grace_secs must be >= 0".into()));
        }
        if self.retry_nodes == 0 {
            return Err(Invalid("encoder.retry_nodes must be >= 1".into()));
        }
        if self.max_attempts == 0 {
            return Err(Invalid("encoder.max_attempts must be >= 1".into()));
        }
        Ok(())
    }
}

impl Section for MergerConfig {
    const KEY: &'static str = "merger";

    fn validate(&self) -> Result<(), Invalid> {
        if self.concurrency == 0 {
            return Err(Invalid("merger.concurrency must be >= 1".into()));
        }
        Ok(())
    }
}
