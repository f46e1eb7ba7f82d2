//! `JobRequest` v1: what other systems send on `ffleet.jobs.submit`, plain or inside a
//! CloudEvent. The JSON Schema in `schemas/job-request.v1.json` describes the same shape.
//!
//! Parsing is strict (unknown fields are refused) and split in two: `parse` checks what needs no
//! configuration; the splitter then checks profile, overrides and paths against its config.

use super::cloudevent::{self, CloudEvent};
use crate::ids::JobId;
use crate::reason::{Failure, Reason, echo};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bounds on `segment_seconds` accepted from a request.
pub const SEGMENT_SECONDS_RANGE: (f64, f64) = (1.0, 600.0);
/// Bounds on `priority`.
pub const PRIORITY_RANGE: (i32, i32) = (-100, 100);
/// Largest request payload read at all: a real request is a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest `input` or `output` URI, in bytes.
pub const MAX_URI_BYTES: usize = 4096;
/// Longest profile name; profiles are tokens of `[A-Za-z0-9._-]`.
pub const MAX_PROFILE_LEN: usize = 64;
/// How much of a refused value a failure message quotes.
const ECHO: usize = 80;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub version: u32,
    pub job_id: JobId,
    /// `file:///abs/path` or `/abs/path`, inside one of the configured input roots.
    pub input: String,
    /// Same forms, inside an output root; the extension picks the container.
    pub output: String,
    /// A server-side profile name; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Overrides::is_empty")]
    pub overrides: Overrides,
    /// Wanted segment length; cuts land on the nearest usable keyframes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_seconds: Option<f64>,
    /// Higher runs first; 0 by default.
    #[serde(default)]
    pub priority: i32,
    /// Which kind of encoder the job would like: `gpu`, `cpu` or `any` (the default).
    #[serde(default, skip_serializing_if = "Preference::is_any")]
    pub prefer: Preference,
    /// The preference is a requirement: never spill to the other kind; with no live encoder of
    /// the wanted kind the job fails after `scheduler.capability_wait_secs`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require: bool,
    /// `SHA-256=<base64url>` of an `object:` input as its submitter uploaded it: the splitter
    /// reads only an object with this digest, so nobody can swap the input in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_digest: Option<String>,
    /// Set by the fleet on a retried job (`ffleet retry`, `ffleet.api.retry`): the failed or
    /// cancelled job it runs again, whose encoded segments it reuses. A request naming a job
    /// that was not retried as this one is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<JobId>,
}

/// The kind of encoder a job asks for. `gpu` means any accelerator capability (`nvenc`, `qsv`,
/// `vaapi`...), `cpu` the software encoders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    Gpu,
    Cpu,
    #[default]
    Any,
}

impl Preference {
    pub fn is_any(&self) -> bool {
        *self == Preference::Any
    }

    pub fn token(self) -> &'static str {
        match self {
            Preference::Gpu => "gpu",
            Preference::Cpu => "cpu",
            Preference::Any => "any",
        }
    }
}

/// The only knobs a job may turn, each bounded by the profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Quality level on the profile's own scale (QP/CRF/CQ), within the profile's range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<i32>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.quality.is_none()
    }
}

/// A request that cannot be accepted, with whatever job id could be recovered from it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{failure}")]
pub struct RequestError {
    pub job_id: Option<JobId>,
    pub failure: Failure,
}

impl super::Versioned for JobRequest {
    fn version(&self) -> u32 {
        self.version
    }
}

impl JobRequest {
    /// Decodes a submit payload. `msg_id` is the `Nats-Msg-Id` header, which names the job when
    /// the body is too broken to.
    pub fn parse(payload: &[u8], msg_id: Option<&str>) -> Result<JobRequest, RequestError> {
        let header_id = msg_id.and_then(|m| JobId::plain(m).ok());
        let fail = |job_id: Option<JobId>, reason, msg: String| RequestError {
            job_id,
            failure: Failure::new(reason, msg),
        };
        if payload.len() > MAX_REQUEST_BYTES {
            return Err(fail(
                header_id,
                Reason::InvalidRequest,
                format!(
                    "request is {} bytes; the limit is {MAX_REQUEST_BYTES}",
                    payload.len()
                ),
            ));
        }
        let value: Value = serde_json::from_slice(payload).map_err(|e| {
            fail(
                header_id.clone(),
                Reason::MalformedRequest,
                format!("request is not valid JSON: {e}"),
            )
        })?;
        let (mut body, ce_id) = if CloudEvent::is_envelope(&value) {
            let (data, id) = cloudevent::open_submit(value)
                .map_err(|(reason, msg)| fail(header_id.clone(), reason, msg))?;
            (data, Some(id))
        } else {
            (value, None)
        };
        let Some(obj) = body.as_object_mut() else {
            return Err(fail(
                header_id,
                Reason::MalformedRequest,
                "request must be a JSON object".into(),
            ));
        };
        // A CloudEvent's id names the job when the data does not; when both do, they agree.
        if let (Some(ce), Some(body)) = (&ce_id, obj.get("job_id"))
            && body.as_str() != Some(ce.as_str())
        {
            return Err(fail(
                JobId::plain(ce.as_str()).ok(),
                Reason::InvalidRequest,
                format!(
                    "CloudEvent id {:?} and data.job_id {} name different jobs",
                    echo(ce, ECHO),
                    echo(&body.to_string(), ECHO)
                ),
            ));
        }
        if !obj.contains_key("job_id")
            && let Some(id) = ce_id.or_else(|| msg_id.map(str::to_owned))
        {
            obj.insert("job_id".into(), Value::String(id));
        }
        let body_id = obj
            .get("job_id")
            .and_then(Value::as_str)
            .and_then(|s| JobId::plain(s).ok());
        let job_id = body_id.or(header_id);
        match obj.get("version") {
            None => {
                return Err(fail(
                    job_id,
                    Reason::InvalidRequest,
                    "missing field `version` (this ffleet reads version 1)".into(),
                ));
            }
            Some(v) if !v.is_number() => {
                return Err(fail(
                    job_id,
                    Reason::UnsupportedVersion,
                    format!(
                        "`version` must be the number 1 (got {})",
                        echo(&v.to_string(), ECHO)
                    ),
                ));
            }
            Some(v) if v.as_u64() != Some(u64::from(super::CURRENT)) => {
                return Err(fail(
                    job_id,
                    Reason::UnsupportedVersion,
                    format!(
                        "schema version {} is not supported; this ffleet reads version 1",
                        echo(&v.to_string(), ECHO)
                    ),
                ));
            }
            Some(_) => {}
        }
        let req: JobRequest = serde_json::from_value(body).map_err(|e| {
            fail(
                job_id.clone(),
                Reason::InvalidRequest,
                format!("request does not match the JobRequest v1 schema: {e}"),
            )
        })?;
        // A scoped id is the fleet's, and a few ids are its own subjects' tokens; a retried
        // job names the job it runs again as its submitter does.
        let plain = std::iter::once(&req.job_id).chain(req.retry_of.as_ref());
        if let Some(e) = plain.filter_map(|j| JobId::plain(j.as_str()).err()).next() {
            return Err(fail(
                None,
                Reason::InvalidRequest,
                echo(&e.to_string(), 2 * ECHO),
            ));
        }
        req.check_ranges()
            .map_err(|failure| RequestError { job_id, failure })?;
        Ok(req)
    }

    fn check_ranges(&self) -> Result<(), Failure> {
        if let Some(s) = self.segment_seconds {
            let (lo, hi) = SEGMENT_SECONDS_RANGE;
            if !(lo..=hi).contains(&s) {
                return Err(Failure::new(
                    Reason::OverrideOutOfRange,
                    format!("segment_seconds {s} is outside {lo}..={hi}"),
                ));
            }
        }
        let (lo, hi) = PRIORITY_RANGE;
        if !(lo..=hi).contains(&self.priority) {
            return Err(Failure::new(
                Reason::OverrideOutOfRange,
                format!("priority {} is outside {lo}..={hi}", self.priority),
            ));
        }
        if self.require && self.prefer.is_any() {
            return Err(Failure::new(
                Reason::InvalidRequest,
                "require needs prefer = \"gpu\" or \"cpu\" (\"any\" cannot be required)",
            ));
        }
        for (what, uri) in [("input", &self.input), ("output", &self.output)] {
            if uri.is_empty() || uri.len() > MAX_URI_BYTES {
                return Err(Failure::new(
                    Reason::InvalidRequest,
                    format!("{what} must be a non-empty URI of at most {MAX_URI_BYTES} bytes"),
                ));
            }
            if uri.contains('\0') {
                return Err(Failure::new(
                    Reason::InvalidRequest,
                    format!("{what} contains a NUL character"),
                ));
            }
        }
        if let Some(p) = &self.profile {
            check_profile(p)?;
        }
        Ok(())
    }

    /// Whether a request on the ordinary submit subject may run at this priority.
    pub fn check_priority(&self, max: i32) -> Result<(), Failure> {
        if self.priority > max {
            return Err(Failure::new(
                Reason::PriorityNotAllowed,
                format!(
                    "priority {} is above {max}, the most a submitter may ask for; privileged \
                     clients submit on the privileged subject",
                    self.priority
                ),
            ));
        }
        Ok(())
    }

    /// A CloudEvent wrapping this request, as another system would send it.
    pub fn to_cloudevent(&self, source: &str) -> CloudEvent {
        CloudEvent {
            specversion: cloudevent::SPEC_VERSION.into(),
            id: self.job_id.to_string(),
            source: source.into(),
            ty: cloudevent::TYPE_JOB_SUBMIT.into(),
            subject: None,
            time: Some(crate::time::now_rfc3339()),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            data: Some(serde_json::to_value(self).expect("request serialises")),
        }
    }
}

/// A profile name is a short token: it is echoed in events and logs and looked up in config.
fn check_profile(p: &str) -> Result<(), Failure> {
    let ok = !p.is_empty()
        && p.len() <= MAX_PROFILE_LEN
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        return Ok(());
    }
    Err(Failure::new(
        Reason::InvalidRequest,
        format!(
            "profile {:?} must be 1 to {MAX_PROFILE_LEN} characters of A-Z a-z 0-9 . _ -",
            echo(p, ECHO)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
        serde_json::json!({"version": 1, "job_id": "j1", "input": "/in/a.mp4", "output": "/out/a.mp4"})
    }

    fn parse(v: &Value) -> Result<JobRequest, RequestError> {
        JobRequest::parse(&serde_json::to_vec(v).unwrap(), None)
    }

    #[test]
    fn plain_and_cloudevent_requests_parse_to_the_same_thing() {
        let plain = parse(&body()).unwrap();
        let ce = plain.to_cloudevent("test");
        let wrapped = parse(&serde_json::to_value(ce).unwrap()).unwrap();
        assert_eq!(plain, wrapped);
        assert_eq!(plain.priority, 0);
    }

    #[test]
    fn a_cloudevent_id_names_the_job_when_data_does_not() {
        let mut data = body();
        data.as_object_mut().unwrap().remove("job_id");
        let ce = serde_json::json!({"specversion": "1.0", "id": "from-ce", "source": "x",
            "type": cloudevent::TYPE_JOB_SUBMIT, "data": data});
        assert_eq!(parse(&ce).unwrap().job_id.as_str(), "from-ce");
    }

    #[test]
    fn broken_requests_name_a_reason_and_keep_the_job_id_when_they_can() {
        let e = JobRequest::parse(b"{not json", Some("hdr")).unwrap_err();
        assert_eq!(e.failure.reason, Reason::MalformedRequest);
        assert_eq!(e.job_id.unwrap().as_str(), "hdr");

        let mut v = body();
        v["version"] = 2.into();
        let e = parse(&v).unwrap_err();
        assert_eq!(e.failure.reason, Reason::UnsupportedVersion);
        assert_eq!(e.job_id.unwrap().as_str(), "j1");

        let mut v = body();
        v["ffmpeg_args"] = serde_json::json!(["-i", "x"]);
        let e = parse(&v).unwrap_err();
        assert_eq!(e.failure.reason, Reason::InvalidRequest);
        assert!(
            e.failure.message.contains("ffmpeg_args"),
            "{}",
            e.failure.message
        );

        let mut v = body();
        v["segment_seconds"] = 0.1.into();
        assert_eq!(
            parse(&v).unwrap_err().failure.reason,
            Reason::OverrideOutOfRange
        );

        let mut v = body();
        v["prefer"] = "tpu".into();
        let e = parse(&v).unwrap_err();
        assert_eq!(e.failure.reason, Reason::InvalidRequest);
        assert!(e.failure.message.contains("tpu"), "{}", e.failure.message);

        let mut v = body();
        v["require"] = true.into();
        assert_eq!(
            parse(&v).unwrap_err().failure.reason,
            Reason::InvalidRequest
        );
        v["prefer"] = "gpu".into();
        let r = parse(&v).unwrap();
        assert_eq!((r.prefer, r.require), (Preference::Gpu, true));

        let mut v = body();
        v["job_id"] = "a.b".into();
        let e = parse(&v).unwrap_err();
        assert_eq!(e.failure.reason, Reason::InvalidRequest);
        assert!(e.job_id.is_none());

        // A scoped id is the fleet's: no client names a tenant's job, from any field.
        let mut v = body();
        v["job_id"] = "acme=j1".into();
        let e = parse(&v).unwrap_err();
        assert_eq!(e.failure.reason, Reason::InvalidRequest);
        assert!(e.job_id.is_none());
        let mut v = body();
        v.as_object_mut().unwrap().remove("job_id");
        let raw = serde_json::to_vec(&v).unwrap();
        let e = JobRequest::parse(&raw, Some("acme=j1")).unwrap_err();
        assert!(e.job_id.is_none(), "{e:?}");

        assert_eq!(
            JobRequest::parse(b"[1,2]", None)
                .unwrap_err()
                .failure
                .reason,
            Reason::MalformedRequest
        );
    }
}
