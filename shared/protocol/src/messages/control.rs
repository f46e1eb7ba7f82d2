//! Operator control of one encoder node (`ffleet drain NODE`, `ffleet undrain NODE`): a request
//! on the node's own subject (`subjects::node_control`), answered by the node itself with what
//! it does now. Only the admin (operator) role may send one; the encoder role answers.
//!
//! A drained node takes no new unit: its heartbeat says `draining`, so the scheduler routes
//! nothing more to it, and its slots stop pulling. What it runs finishes. It can then be stopped
//! with no lost work, or undrained. A drain lasts as long as the node's process: a node id is
//! new on every start, so a restarted node is a new node, taking work.
//!
//! `PriorityRequest` (`ffleet priority JOB N`) is the operator's too, to the schedulers: a job's
//! units not yet released go out at the new priority.
//!
//! `JobDrop` is the scheduler's, not the operator's: a node whose heartbeat holds units of a
//! job that has ended (cancelled, or failed) is told to drop them (`subjects::node_drop`), and
//! it kills their ffmpeg and takes no more of that job's tasks. It is sent again for as long
//! as the heartbeat says the node holds them, so a lost message costs a moment, not the units.

use super::job::PRIORITY_RANGE;
use super::{CURRENT, DecodeError, Versioned};
use crate::ids::{JobId, NodeId};
use serde::{Deserialize, Serialize};

/// Largest request read at all: a real one is about 40 bytes.
pub const MAX_CONTROL_REQUEST_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeAction {
    /// Stop taking units; finish those held.
    Drain,
    /// Take units again.
    Undrain,
    /// Change nothing; say how the node stands.
    Show,
}

/// Why a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlRequestError {
    #[error("node control request is {0} bytes; the limit is {MAX_CONTROL_REQUEST_BYTES}")]
    TooLarge(usize),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// `{"version":1,"action":"drain"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeControl {
    pub version: u32,
    pub action: NodeAction,
}

impl NodeControl {
    pub fn new(action: NodeAction) -> Self {
        Self {
            version: CURRENT,
            action,
        }
    }

    /// Reads a request strictly: bounded, unknown fields and versions refused.
    pub fn parse(payload: &[u8]) -> Result<NodeControl, ControlRequestError> {
        if payload.len() > MAX_CONTROL_REQUEST_BYTES {
            return Err(ControlRequestError::TooLarge(payload.len()));
        }
        Ok(super::decode("node control request", payload)?)
    }
}

impl Versioned for NodeControl {
    fn version(&self) -> u32 {
        self.version
    }
}

/// The node's answer: how it stands after the request, or why the request was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub version: u32,
    pub node: NodeId,
    /// Taking no new units (by an operator's drain, or because the process is stopping).
    pub draining: bool,
    /// The process is stopping: an undrain cannot bring it back.
    #[serde(default)]
    pub stopping: bool,
    /// Units it runs now.
    pub running: u32,
    /// Why the request was refused (nothing changed), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Versioned for NodeState {
    fn version(&self) -> u32 {
        self.version
    }
}

/// `{"version":1,"job_id":"..."}` on a node's drop subject: drop every unit of the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDrop {
    pub version: u32,
    pub job_id: JobId,
}

impl JobDrop {
    pub fn new(job_id: JobId) -> Self {
        Self {
            version: CURRENT,
            job_id,
        }
    }

    /// Reads a drop strictly, bounded like a control request.
    pub fn parse(payload: &[u8]) -> Result<JobDrop, ControlRequestError> {
        if payload.len() > MAX_CONTROL_REQUEST_BYTES {
            return Err(ControlRequestError::TooLarge(payload.len()));
        }
        Ok(super::decode("job drop", payload)?)
    }
}

impl Versioned for JobDrop {
    fn version(&self) -> u32 {
        self.version
    }
}

/// `{"version":1,"job_id":"...","priority":50}` on `subjects::API_PRIORITY` (`ffleet priority`,
/// admin only): the job's units the scheduler has not released yet go out at this priority.
/// Answered by a scheduler replica with the job's status (`status::JobStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorityRequest {
    pub version: u32,
    pub job_id: JobId,
    pub priority: i32,
}

/// Why a priority request was refused.
#[derive(Debug, thiserror::Error)]
pub enum PriorityRequestError {
    #[error("priority request is {0} bytes; the limit is {MAX_CONTROL_REQUEST_BYTES}")]
    TooLarge(usize),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("priority {0} is outside {lo}..={hi}", lo = PRIORITY_RANGE.0, hi = PRIORITY_RANGE.1)]
    Range(i32),
}

impl PriorityRequest {
    pub fn new(job_id: JobId, priority: i32) -> Self {
        Self {
            version: CURRENT,
            job_id,
            priority,
        }
    }

    /// Reads a request strictly: bounded, unknown fields and versions refused, the priority
    /// within the bounds a job request's is held to.
    pub fn parse(payload: &[u8]) -> Result<PriorityRequest, PriorityRequestError> {
        if payload.len() > MAX_CONTROL_REQUEST_BYTES {
            return Err(PriorityRequestError::TooLarge(payload.len()));
        }
        let req: PriorityRequest = super::decode("priority request", payload)?;
        if !(PRIORITY_RANGE.0..=PRIORITY_RANGE.1).contains(&req.priority) {
            return Err(PriorityRequestError::Range(req.priority));
        }
        Ok(req)
    }
}

impl Versioned for PriorityRequest {
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_requests_are_read_strictly() {
        let ok = PriorityRequest::parse(br#"{"version":1,"job_id":"j-1","priority":50}"#).unwrap();
        assert_eq!(ok.priority, 50);
        for bad in [
            &br#"{"version":1,"job_id":"j-1","priority":101}"#[..],
            br#"{"version":1,"job_id":"j-1"}"#,
            br#"{"version":1,"job_id":"j-1","priority":5,"x":1}"#,
            br#"{"version":9,"job_id":"j-1","priority":5}"#,
            br#"{"version":1,"job_id":"a b","priority":5}"#,
            b"{",
        ] {
            assert!(
                PriorityRequest::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(PriorityRequest::parse(&vec![b' '; 2000]).is_err());
    }

    #[test]
    fn requests_are_read_strictly() {
        let ok = NodeControl::parse(br#"{"version":1,"action":"drain"}"#).unwrap();
        assert_eq!(ok.action, NodeAction::Drain);
        for bad in [
            &br#"{"version":1,"action":"reboot"}"#[..],
            br#"{"version":1,"action":"drain","node":"x"}"#,
            br#"{"version":99,"action":"drain"}"#,
            br#"not json"#,
        ] {
            assert!(
                NodeControl::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = format!(
            r#"{{"version":1,"action":"drain","pad":"{}"}}"#,
            "x".repeat(2000)
        );
        assert!(NodeControl::parse(big.as_bytes()).is_err());
    }
}
