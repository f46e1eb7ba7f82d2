//! The job status request (`subjects::API_STATUS`, NATS service `ffleet`, endpoint `status`):
//! `StatusRequest` names a job, `JobStatus` answers with what its record in KV says, terminal
//! outcome included, in the same shape as the terminal event. JSON Schemas:
//! `schemas/job-status-request.v1.json` and `schemas/job-status.v1.json`.
//!
//! It exists for clients that may not read the jobs bucket (the submitter role): core-NATS events
//! sent while such a client reconnects are lost to it, and this answer is how it still learns
//! that its job ended.

use super::events::{Cancelled, Completed, Failed};
use super::records::{JobRecord, JobState};
use super::{CURRENT, MIN_SUPPORTED, Versioned};
use crate::ids::{JobId, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest request read at all: a real one is about 40 bytes.
pub const MAX_STATUS_REQUEST_BYTES: usize = 1024;

/// Service error code of a request that could not be read (too large, not JSON, not the schema,
/// an unsupported version); the error's text says which.
pub const ERROR_BAD_REQUEST: u16 = 400;
/// Service error code when the job records could not be read in time: ask again later.
pub const ERROR_UNAVAILABLE: u16 = 503;

/// `{"version":1,"job_id":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub version: u32,
    pub job_id: JobId,
}

/// Why a status request was refused (answered with `ERROR_BAD_REQUEST`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusRequestError {
    #[error("status request is {0} bytes; the limit is {MAX_STATUS_REQUEST_BYTES}")]
    TooLarge(usize),
    #[error("status request is not a JSON object with version and job_id: {0}")]
    Malformed(String),
    #[error(
        "status request version {0} is not supported; this fleet reads {MIN_SUPPORTED}..={CURRENT}"
    )]
    Version(u64),
}

impl StatusRequest {
    pub fn new(job_id: JobId) -> Self {
        Self {
            version: CURRENT,
            job_id,
        }
    }

    /// Reads a request strictly: bounded size, the version checked before the fields (so a
    /// newer client hears that its version is the problem), unknown fields refused.
    pub fn parse(payload: &[u8]) -> Result<StatusRequest, StatusRequestError> {
        if payload.len() > MAX_STATUS_REQUEST_BYTES {
            return Err(StatusRequestError::TooLarge(payload.len()));
        }
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| StatusRequestError::Malformed(e.to_string()))?;
        let version = value
            .get("version")
            .ok_or_else(|| StatusRequestError::Malformed("missing field `version`".into()))?
            .as_u64()
            .ok_or_else(|| {
                StatusRequestError::Malformed("`version` must be a positive integer".into())
            })?;
        if !(u64::from(MIN_SUPPORTED)..=u64::from(CURRENT)).contains(&version) {
            return Err(StatusRequestError::Version(version));
        }
        serde_json::from_value(value).map_err(|e| StatusRequestError::Malformed(e.to_string()))
    }
}

impl Versioned for StatusRequest {
    fn version(&self) -> u32 {
        self.version
    }
}

/// A job's state as the status request reports it: the record's state; `refused` when there is
/// no record but a request naming the job was refused before one was made (the splitter refuses
/// a request it cannot read, or one whose priority the submitter may not ask for); `unknown`
/// when there is neither (never submitted, not yet taken in by the splitter, or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    Unknown,
    Refused,
    Splitting,
    Encoding,
    Merging,
    Completed,
    Failed,
    Cancelled,
}

impl From<JobState> for StatusState {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Splitting => StatusState::Splitting,
            JobState::Encoding => StatusState::Encoding,
            // Putting the output in place is the last of the merge to a client.
            JobState::Merging | JobState::Finalizing => StatusState::Merging,
            JobState::Completed => StatusState::Completed,
            JobState::Failed => StatusState::Failed,
            JobState::Cancelled => StatusState::Cancelled,
        }
    }
}

/// The answer to a `StatusRequest`. Counts appear once the record knows them; a completed job
/// carries `completed` and a failed one `failed`, each exactly the data of its terminal event;
/// a refused request `failed` (its refusal event's data) and `request_seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub version: u32,
    pub job_id: JobId,
    pub state: StatusState,
    /// Units (video segments and the tracks unit) collected by the merger so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_done: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_total: Option<usize>,
    /// Source frames of the collected video units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_total: Option<u64>,
    /// When the record last changed (RFC 3339, the writer's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Completed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// A cancelled job's `cancelled` event data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Cancelled>,
    /// The job's priority now (an operator's change, else its request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// The job that runs this failed or cancelled one again (`ffleet retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_as: Option<JobId>,
    /// With `refused`: the `FFLEET_JOBS` stream sequence of the refused request (what its
    /// publisher's ack said), so a client can tell its own request's refusal from an older one
    /// under the same id. In a retry's answer: the sequence of the retry's request, when that
    /// answer submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_seq: Option<u64>,
    /// The tenant whose job this is: its ids here are as the tenant named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Tenant>,
}

impl JobStatus {
    /// The answer for a job with no record.
    pub fn unknown(job_id: JobId) -> JobStatus {
        JobStatus {
            version: CURRENT,
            job_id,
            state: StatusState::Unknown,
            units_done: None,
            units_total: None,
            frames_done: None,
            frames_total: None,
            updated_at: None,
            completed: None,
            failed: None,
            cancelled: None,
            priority: None,
            retried_as: None,
            request_seq: None,
            tenant: None,
        }
    }

    /// The answer as the job's tenant sees it: every id as the tenant named it, beside
    /// `tenant` (as its events do). A job of no tenant is answered as it is.
    pub fn for_tenant(mut self) -> JobStatus {
        let Some(tenant) = self.job_id.tenant() else {
            return self;
        };
        let local = |j: &JobId| JobId::plain(j.local()).unwrap_or_else(|_| j.clone());
        self.job_id = local(&self.job_id);
        if let Some(c) = &mut self.completed {
            c.job_id = local(&c.job_id);
        }
        if let Some(f) = &mut self.failed {
            f.job_id = f.job_id.as_ref().map(local);
        }
        if let Some(c) = &mut self.cancelled {
            c.job_id = local(&c.job_id);
        }
        self.retried_as = self.retried_as.as_ref().map(local);
        self.tenant = Some(tenant);
        self
    }

    /// The answer for a job with no record whose request (stream sequence `request_seq`) was
    /// refused with `failed`.
    pub fn refused(job_id: JobId, failed: Failed, request_seq: u64) -> JobStatus {
        JobStatus {
            state: StatusState::Refused,
            failed: Some(failed),
            request_seq: Some(request_seq),
            ..JobStatus::unknown(job_id)
        }
    }

    /// What `rec` says.
    pub fn of_record(rec: &JobRecord) -> JobStatus {
        let units_total = rec.plan.as_ref().map(|p| p.unit_count());
        let (frames_done, frames_total) = rec.frame_progress();
        let segments = rec.plan.as_ref().map_or(0, |p| p.segments as usize);
        let completed = match (rec.state, &rec.output) {
            (JobState::Completed, Some(out)) => {
                Some(Completed::of_output(&rec.job_id, out, segments))
            }
            _ => None,
        };
        let failed = match (rec.state, &rec.failure) {
            (JobState::Failed, Some(f)) => Some(Failed {
                version: CURRENT,
                job_id: Some(rec.job_id.clone()),
                reason: f.reason,
                message: f.message.clone(),
            }),
            _ => None,
        };
        let cancelled = match (rec.state, rec.cancelled_during) {
            (JobState::Cancelled, Some(during)) => Some(Cancelled::of_record(rec, during)),
            _ => None,
        };
        JobStatus {
            version: CURRENT,
            job_id: rec.job_id.clone(),
            state: rec.state.into(),
            units_done: units_total.map(|_| rec.collected.len()),
            units_total,
            frames_done: (frames_total > 0).then_some(frames_done),
            frames_total: (frames_total > 0).then_some(frames_total),
            updated_at: Some(rec.updated_at.clone()),
            completed,
            failed,
            cancelled,
            priority: Some(rec.priority()),
            retried_as: rec.retried_as.clone(),
            request_seq: None,
            tenant: None,
        }
    }

    /// Whether the job has ended (its outcome is in `completed`, `failed` or `cancelled`).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state,
            StatusState::Completed | StatusState::Failed | StatusState::Cancelled
        )
    }
}

impl Versioned for JobStatus {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::records::OutputInfo;
    use crate::reason::{Failure, Reason};

    fn record(state: JobState) -> JobRecord {
        let req = serde_json::from_value(serde_json::json!({
            "version": 1, "job_id": "j-1", "input": "/in/a.mp4", "output": "/out/a.mp4"
        }))
        .unwrap();
        let mut rec = JobRecord::new(req, "h264".into());
        rec.state = state;
        rec
    }

    #[test]
    fn requests_are_read_strictly_and_versions_first() {
        let ok = StatusRequest::parse(br#"{"version":1,"job_id":"j-1"}"#).unwrap();
        assert_eq!(ok, StatusRequest::new(JobId::new("j-1").unwrap()));
        let back = StatusRequest::parse(&crate::messages::encode(&ok)).unwrap();
        assert_eq!(back, ok);
        for (bad, what) in [
            (&b"not json"[..], "JSON"),
            (br#"[1]"#, "version"),
            (br#"{"job_id":"j"}"#, "version"),
            (br#"{"version":"1","job_id":"j"}"#, "version"),
            (br#"{"version":1}"#, "job_id"),
            (br#"{"version":1,"job_id":"a.b"}"#, "job_id"),
            (br#"{"version":1,"job_id":"j","more":1}"#, "more"),
            (br#"{"version":2,"job_id":"j","more":1}"#, "version 2"),
            (br#"{"version":0,"job_id":"j"}"#, "version 0"),
        ] {
            let e = StatusRequest::parse(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{}: {e}", String::from_utf8_lossy(bad));
        }
        let big = format!(
            r#"{{"version":1,"job_id":"j","pad":"{}"}}"#,
            "x".repeat(MAX_STATUS_REQUEST_BYTES)
        );
        assert!(matches!(
            StatusRequest::parse(big.as_bytes()),
            Err(StatusRequestError::TooLarge(_))
        ));
    }

    #[test]
    fn a_refusal_names_the_request_it_refused() {
        let job = JobId::new("j").unwrap();
        let failed = Failed {
            version: CURRENT,
            job_id: Some(job.clone()),
            reason: Reason::PriorityNotAllowed,
            message: "too high".into(),
        };
        let st = JobStatus::refused(job, failed, 7);
        assert!(!st.is_terminal());
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["state"], "refused");
        assert_eq!(json["request_seq"], 7);
        assert_eq!(json["failed"]["reason"], "priority_not_allowed");
    }

    #[test]
    fn a_record_reads_as_its_state_and_a_terminal_one_as_its_event() {
        let splitting = JobStatus::of_record(&record(JobState::Splitting));
        assert_eq!(splitting.state, StatusState::Splitting);
        assert_eq!(splitting.units_total, None);
        assert!(!splitting.is_terminal());
        let json = serde_json::to_value(&splitting).unwrap();
        assert!(json.get("completed").is_none() && json.get("units_done").is_none());

        let mut done = record(JobState::Completed);
        let out = OutputInfo {
            uri: "file:///out/a.mp4".into(),
            frames: 50,
            duration_secs: 2.0,
            bytes: 1234,
            wall_secs: 1.5,
            decode_errors: 0,
            warnings: Vec::new(),
            media_bytes: 0,
            digest: None,
        };
        done.output = Some(out.clone());
        let status = JobStatus::of_record(&done);
        assert_eq!(status.state, StatusState::Completed);
        assert_eq!(
            status.completed,
            Some(Completed::of_output(&done.job_id, &out, 0))
        );
        assert!(status.is_terminal());

        let mut failed = record(JobState::Failed);
        failed.failure = Some(Failure::new(Reason::InputMissing, "no such file"));
        let status = JobStatus::of_record(&failed);
        assert_eq!(status.state, StatusState::Failed);
        let f = status.failed.clone().unwrap();
        assert_eq!(
            (f.reason, f.message.as_str()),
            (Reason::InputMissing, "no such file")
        );
        let back: JobStatus = serde_json::from_slice(&crate::messages::encode(&status)).unwrap();
        assert_eq!(back, status);

        let unknown = serde_json::to_value(JobStatus::unknown(JobId::new("x").unwrap())).unwrap();
        assert_eq!(
            unknown,
            serde_json::json!({"version": 1, "job_id": "x", "state": "unknown"})
        );
    }
}
