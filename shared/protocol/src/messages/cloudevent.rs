//! CloudEvents 1.0 envelopes in structured JSON mode, as the CloudEvents NATS protocol binding
//! carries them: the whole event is the payload, with `Content-Type:
//! application/cloudevents+json` in the NATS headers.

use crate::reason::{Reason, echo};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// `type` of a job request wrapped in a CloudEvent.
pub const TYPE_JOB_SUBMIT: &str = "io.ffleet.job.submit";
/// Longest string attribute of a received envelope (`source`, `subject`, `dataschema`...).
pub const MAX_ATTRIBUTE_BYTES: usize = 1024;

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

/// Opens a received job-submit envelope: its attributes bounded, its version and type checked,
/// and its JSON `data` with the event id. The error is a reason and a message quoting at most a
/// short, escaped piece of what was sent.
pub fn open_submit(value: Value) -> Result<(Value, String), (Reason, String)> {
    let Some(obj) = value.as_object() else {
        return Err((
            Reason::MalformedRequest,
            "request must be a JSON object".into(),
        ));
    };
    for (name, v) in obj {
        if name == "data" {
            continue;
        }
        if let Some(text) = v.as_str()
            && text.len() > MAX_ATTRIBUTE_BYTES
        {
            return Err((
                Reason::InvalidRequest,
                format!(
                    "CloudEvent attribute {:?} is {} bytes; the limit is {MAX_ATTRIBUTE_BYTES}",
                    echo(name, 40),
                    text.len()
                ),
            ));
        }
    }
    if obj.contains_key("data_base64") {
        return Err((
            Reason::InvalidRequest,
            "CloudEvent data_base64 is not accepted: send the request as JSON `data`".into(),
        ));
    }
    let ce: CloudEvent = serde_json::from_value(value).map_err(|e| {
        (
            Reason::InvalidRequest,
            format!("malformed CloudEvent envelope: {e}"),
        )
    })?;
    if ce.specversion != SPEC_VERSION {
        return Err((
            Reason::UnsupportedVersion,
            format!(
                "CloudEvents specversion {:?} is not 1.0",
                echo(&ce.specversion, 40)
            ),
        ));
    }
    if ce.ty != TYPE_JOB_SUBMIT {
        return Err((
            Reason::InvalidRequest,
            format!(
                "CloudEvent type {:?} is not {TYPE_JOB_SUBMIT:?}",
                echo(&ce.ty, 80)
            ),
        ));
    }
    if let Some(ct) = &ce.datacontenttype
        && ct != "application/json"
    {
        return Err((
            Reason::InvalidRequest,
            format!(
                "CloudEvent datacontenttype {:?} is not \"application/json\"",
                echo(ct, 80)
            ),
        ));
    }
    let Some(data) = ce.data else {
        return Err((
            Reason::MalformedRequest,
            "CloudEvent has no `data`: the job request goes there".into(),
        ));
    };
    Ok((data, ce.id))
}
