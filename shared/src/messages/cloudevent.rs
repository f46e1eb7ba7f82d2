//! CloudEvents 1.0 envelopes in structured JSON mode, as the CloudEvents NATS protocol binding
//! carries them: the whole event is the payload, with `Content-Type:
//! application/cloudevents+json` in the NATS headers.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// `type` of a job request wrapped in a CloudEvent.
pub const TYPE_JOB_SUBMIT: &str = "io.ffleet.job.submit";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataschema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl CloudEvent {
    /// A new event from ffleet's `service` about `subject` (a job id).
    pub fn new(id: String, service: &str, ty: &str, subject: &str, data: Value) -> Self {
        Self {
            specversion: SPEC_VERSION.into(),
            id,
            source: format!("/ffleet/{service}"),
            ty: ty.into(),
            subject: Some(subject.into()),
            time: Some(crate::time::now_rfc3339()),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(data),
        }
    }

    /// True if a JSON object looks like a structured-mode CloudEvent.
    pub fn is_envelope(v: &Value) -> bool {
        v.get("specversion").is_some()
    }
}
