//! Machine-readable reasons a job fails, as carried by `failed` events.
//!
//! Other systems switch on the code; the human message beside it says what to fix.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The event was not JSON, or not a JSON object.
    MalformedRequest,
    /// The request does not match the JobRequest schema.
    InvalidRequest,
    /// The schema `version` is not one this ffleet accepts.
    UnsupportedVersion,
    UnknownProfile,
    OverrideOutOfRange,
    /// Input URI has a forbidden scheme or resolves outside the input roots.
    InputNotAllowed,
    /// Output URI has a forbidden scheme, container, or resolves outside the output roots.
    OutputNotAllowed,
    InputMissing,
    InputEmpty,
    /// ffprobe could not read the input as media (corrupt, truncated, not a video file).
    InputUnreadable,
    NoVideoStream,
    /// Dimensions, duration, frame rate or size beyond the configured limits.
    LimitsExceeded,
    /// Readable media that ffleet cannot cut exactly (e.g. no timestamps).
    UnsupportedInput,
    SplitFailed,
    EncodeFailed,
    /// A unit of the input failed the same way on two nodes: the input is damaged there beyond
    /// what the decoder conceals (the message names the unit and its time range).
    InputDamaged,
    MergeFailed,
    /// The merged output did not match the source (frames, duration, audio).
    VerifyFailed,
    /// The job was still unfinished at its deadline.
    DeadlineExceeded,
    /// The job required a kind of encoder (e.g. `gpu`) that no live node offered in time.
    NoCapableNode,
    Internal,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedRequest => "malformed_request",
            Reason::InvalidRequest => "invalid_request",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::UnknownProfile => "unknown_profile",
            Reason::OverrideOutOfRange => "override_out_of_range",
            Reason::InputNotAllowed => "input_not_allowed",
            Reason::OutputNotAllowed => "output_not_allowed",
            Reason::InputMissing => "input_missing",
            Reason::InputEmpty => "input_empty",
            Reason::InputUnreadable => "input_unreadable",
            Reason::NoVideoStream => "no_video_stream",
            Reason::LimitsExceeded => "limits_exceeded",
            Reason::UnsupportedInput => "unsupported_input",
            Reason::SplitFailed => "split_failed",
            Reason::EncodeFailed => "encode_failed",
            Reason::InputDamaged => "input_damaged",
            Reason::MergeFailed => "merge_failed",
            Reason::VerifyFailed => "verify_failed",
            Reason::DeadlineExceeded => "deadline_exceeded",
            Reason::NoCapableNode => "no_capable_node",
            Reason::Internal => "internal",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A reason with the human explanation, the unit of every failure report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}
