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
    /// A priority above what the submitting client may ask for.
    PriorityNotAllowed,
    /// The submitting tenant has as many jobs in flight as its quota allows
    /// (`splitter.tenants.<name>.max_active_jobs`): submit again once one has ended.
    QuotaExceeded,
    /// A request under a job id that is already taken (answered unnamed: the job keeps its id).
    DuplicateJob,
    /// Input URI has a forbidden scheme, resolves outside the input roots, or names a file with
    /// several hard links (unless `storage.allow_hard_links`).
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
    /// The media bucket had no room for the job's media (`storage.max_bytes` or the server's
    /// storage limits): the job is failed instead of waiting for space.
    StorageFull,
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
            Reason::PriorityNotAllowed => "priority_not_allowed",
            Reason::QuotaExceeded => "quota_exceeded",
            Reason::DuplicateJob => "duplicate_job",
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
            Reason::StorageFull => "storage_full",
            Reason::Internal => "internal",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Longest failure message, in bytes: a message often echoes what a request sent, and an echo
/// of a 400 KB field must neither exceed the server's max payload (the event would never be
/// stored, the request retried to exhaustion) nor flood the logs.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// A reason with the human explanation, the unit of every failure report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    pub reason: Reason,
    /// At most `MAX_MESSAGE_BYTES` when built by `new` (and read back capped).
    #[serde(deserialize_with = "capped_message")]
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: cap(message.into(), MAX_MESSAGE_BYTES),
        }
    }
}

fn capped_message<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d).map(|s| cap(s, MAX_MESSAGE_BYTES))
}

/// `s` cut to at most `max` bytes on a character boundary, ending in an ellipsis when cut.
pub fn cap(mut s: String, max: usize) -> String {
    const ELLIPSIS: &str = "…";
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(ELLIPSIS.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(ELLIPSIS);
    s
}

/// A short, printable rendering of untrusted text for a message: control characters escaped,
/// at most `max` bytes.
pub fn echo(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() > max {
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    cap(out, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_capped_on_a_character_boundary() {
        let f = Failure::new(Reason::InvalidRequest, "é".repeat(4000));
        assert!(f.message.len() <= MAX_MESSAGE_BYTES, "{}", f.message.len());
        assert!(f.message.ends_with('…'));
        assert_eq!(Failure::new(Reason::Internal, "short").message, "short");
        let json = serde_json::json!({"reason": "internal", "message": "x".repeat(5000)});
        let back: Failure = serde_json::from_value(json).unwrap();
        assert!(back.message.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(echo("a\0b\nc", 64), "a\\u{0}b\\nc");
        assert!(echo(&"x".repeat(10_000), 100).len() <= 100);
    }
}
