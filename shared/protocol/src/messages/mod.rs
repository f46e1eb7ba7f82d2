//! Wire messages. Each carries a `version`; consumers accept every version from
//! `MIN_SUPPORTED` to `CURRENT` and refuse others with a clear reason.

pub mod cloudevent;
pub mod control;
pub mod events;
pub mod heartbeat;
pub mod job;
pub mod lease;
pub mod live;
pub mod records;
#[cfg(test)]
mod request_props;
pub mod status;
pub mod task;
pub mod tenant;
pub mod unit_set;

pub use cloudevent::CloudEvent;
pub use control::{NodeAction, NodeControl, NodeState, PriorityRequest};
pub use events::{Accepted, Completed, Failed, JobEvent, Progress, SegmentDone, SegmentOutcome};
pub use heartbeat::Heartbeat;
pub use job::{JobRequest, Overrides, Preference, RequestError};
pub use lease::SchedulerLease;
pub use live::LiveProgress;
pub use records::{
    JobRecord, JobState, Plan, SegmentPlan, SegmentRecord, SegmentState, SourceInfo,
};
pub use status::{JobStatus, StatusRequest, StatusState};
pub use task::{DeadLetter, RecordCopy, Task, TaskInput};
pub use tenant::TenantUsage;
pub use unit_set::{MAX_VIDEO_UNITS, UnitSet};

/// Version of every message schema this build writes.
pub const CURRENT: u32 = 1;
/// Oldest version this build still reads.
pub const MIN_SUPPORTED: u32 = 1;

/// Errors decoding an internal message (tasks, records): these are written by ffleet itself, so
/// a failure means a bug or a foreign writer, never a user mistake.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid JSON for {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} has schema version {found}, this build reads {MIN_SUPPORTED}..={CURRENT}")]
    Version { what: &'static str, found: u32 },
}

/// Decodes an internal, versioned message.
pub fn decode<T: serde::de::DeserializeOwned + Versioned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let v: T =
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Json { what, source })?;
    let found = v.version();
    if !(MIN_SUPPORTED..=CURRENT).contains(&found) {
        return Err(DecodeError::Version { what, found });
    }
    Ok(v)
}

/// Encodes a message as JSON bytes. Serialising these plain data types cannot fail.
pub fn encode<T: serde::Serialize>(v: &T) -> bytes::Bytes {
    serde_json::to_vec(v)
        .expect("message types serialise infallibly")
        .into()
}

/// A message with a schema version.
pub trait Versioned {
    fn version(&self) -> u32;
}
