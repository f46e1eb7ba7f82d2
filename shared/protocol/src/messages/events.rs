//! Lifecycle events (`accepted`, `progress`, `completed`, `failed`, `cancelled`) for other
//! systems, and the
//! internal `segment_done`, all published as CloudEvents under `ffleet.events.<job>.<kind>`.

use super::CURRENT;
use super::cloudevent::CloudEvent;
use super::records::{JobRecord, JobState, OutputInfo};
use crate::ids::{JobId, NodeId, Unit};
use crate::reason::{Failure, Reason};
use crate::subjects::{EventKind, msg_id};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub version: u32,
    pub job_id: JobId,
    pub input: String,
    pub output: String,
    pub profile: String,
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub version: u32,
    pub job_id: JobId,
    pub units_done: usize,
    pub units_total: usize,
    pub frames_done: u64,
    pub frames_total: u64,
    pub percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completed {
    pub version: u32,
    pub job_id: JobId,
    pub output: String,
    pub frames: u64,
    pub duration_secs: f64,
    pub wall_secs: f64,
    pub segments: usize,
    pub bytes: u64,
    /// Decoder errors in the source (damaged packets), concealed or dropped as a single ffmpeg
    /// would: 0 for an intact source.
    #[serde(default)]
    pub decode_errors: u64,
    /// Source streams the output could not hold (e.g. bitmap subtitles in MP4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Bytes moved through the object store for the job (0 over a shared directory).
    #[serde(default)]
    pub media_bytes: u64,
    /// `SHA-256=<base64url>` of an output stored in the object store (`object:` outputs): what
    /// its fetcher must find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl Completed {
    /// The completed event's data for a job's finished output (`segments`: its video units).
    pub fn of_output(job: &JobId, out: &OutputInfo, segments: usize) -> Completed {
        Completed {
            version: CURRENT,
            job_id: job.clone(),
            output: out.uri.clone(),
            frames: out.frames,
            duration_secs: out.duration_secs,
            wall_secs: out.wall_secs,
            segments,
            bytes: out.bytes,
            decode_errors: out.decode_errors,
            warnings: out.warnings.clone(),
            media_bytes: out.media_bytes,
            digest: out.digest.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub version: u32,
    /// Absent only when the request carried no usable job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    pub reason: Reason,
    pub message: String,
}

/// The job was stopped on request: nothing of it is left (no output, no scratch media).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancelled {
    pub version: u32,
    pub job_id: JobId,
    /// The state the job was stopped in (`splitting`, `encoding` or `merging`).
    pub during: JobState,
    /// Units collected by then, of how many (absent before the job was planned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_done: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_total: Option<usize>,
}

impl Cancelled {
    /// The cancelled event of `rec`, a record just cancelled while it was `during`.
    pub fn of_record(rec: &JobRecord, during: JobState) -> Cancelled {
        let units_total = rec.plan.as_ref().map(|p| p.unit_count());
        Cancelled {
            version: CURRENT,
            job_id: rec.job_id.clone(),
            during,
            units_done: units_total.map(|_| rec.collected.len()),
            units_total,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SegmentOutcome {
    Encoded {
        result_key: String,
        frames: u64,
        encode_secs: f64,
    },
    Failed {
        #[serde(flatten)]
        failure: Failure,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentDone {
    pub version: u32,
    pub job_id: JobId,
    pub unit: Unit,
    pub attempt: u32,
    pub node: NodeId,
    pub outcome: SegmentOutcome,
}

/// Any event ffleet publishes about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    Accepted(Accepted),
    Progress(Progress),
    Completed(Completed),
    Failed(Failed),
    Cancelled(Cancelled),
    SegmentDone(SegmentDone),
}

impl JobEvent {
    pub fn failed(job_id: Option<JobId>, failure: &Failure) -> Self {
        JobEvent::Failed(Failed {
            version: CURRENT,
            job_id,
            reason: failure.reason,
            message: failure.message.clone(),
        })
    }

    pub fn kind(&self) -> EventKind {
        match self {
            JobEvent::Accepted(_) => EventKind::Accepted,
            JobEvent::Progress(_) => EventKind::Progress,
            JobEvent::Completed(_) => EventKind::Completed,
            JobEvent::Failed(_) => EventKind::Failed,
            JobEvent::Cancelled(_) => EventKind::Cancelled,
            JobEvent::SegmentDone(_) => EventKind::SegmentDone,
        }
    }

    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            JobEvent::Accepted(e) => Some(&e.job_id),
            JobEvent::Progress(e) => Some(&e.job_id),
            JobEvent::Completed(e) => Some(&e.job_id),
            JobEvent::Failed(e) => e.job_id.as_ref(),
            JobEvent::Cancelled(e) => Some(&e.job_id),
            JobEvent::SegmentDone(e) => Some(&e.job_id),
        }
    }

    /// CloudEvents `type`.
    pub fn ce_type(&self) -> &'static str {
        match self {
            JobEvent::Accepted(_) => "io.ffleet.job.accepted",
            JobEvent::Progress(_) => "io.ffleet.job.progress",
            JobEvent::Completed(_) => "io.ffleet.job.completed",
            JobEvent::Failed(_) => "io.ffleet.job.failed",
            JobEvent::Cancelled(_) => "io.ffleet.job.cancelled",
            JobEvent::SegmentDone(_) => "io.ffleet.segment.done",
        }
    }

    /// Stable message id: a republished event is dropped by the stream's duplicate window, and
    /// it doubles as the CloudEvent id so consumers can de-duplicate too.
    pub fn message_id(&self) -> String {
        let Some(job) = self.job_id() else {
            return format!("unnamed-{}", uuid::Uuid::new_v4());
        };
        match self {
            JobEvent::Progress(p) => msg_id::progress(job, p.units_done),
            JobEvent::SegmentDone(s) => msg_id::segment_done(job, s.unit, s.attempt),
            // One terminal event per job, whichever it is.
            JobEvent::Completed(_) | JobEvent::Failed(_) | JobEvent::Cancelled(_) => {
                format!("{job}.terminal")
            }
            JobEvent::Accepted(_) => msg_id::lifecycle(job, self.kind()),
        }
    }

    /// The event's data. A tenant's public event names the job as its tenant did (`job_id`,
    /// plain) beside `tenant`: what the tenant sent, not the fleet's scoped id.
    fn data(&self) -> serde_json::Value {
        let mut v = match self {
            JobEvent::Accepted(e) => serde_json::to_value(e),
            JobEvent::Progress(e) => serde_json::to_value(e),
            JobEvent::Completed(e) => serde_json::to_value(e),
            JobEvent::Failed(e) => serde_json::to_value(e),
            JobEvent::Cancelled(e) => serde_json::to_value(e),
            JobEvent::SegmentDone(e) => serde_json::to_value(e),
        }
        .expect("event payloads serialise");
        if let (Some(job), true, Some(obj)) =
            (self.job_id(), self.kind().is_public(), v.as_object_mut())
            && let Some(tenant) = job.tenant()
        {
            if job.local() == crate::subjects::UNNAMED_JOB {
                obj.remove("job_id");
            } else {
                obj.insert("job_id".into(), job.local().into());
            }
            obj.insert("tenant".into(), tenant.as_str().into());
        }
        v
    }

    pub fn to_cloudevent(&self, service: &str) -> CloudEvent {
        let subject = match self.job_id() {
            Some(job) if self.kind().is_public() => job.local(),
            Some(job) => job.as_str(),
            None => crate::subjects::UNNAMED_JOB,
        };
        CloudEvent::new(
            self.message_id(),
            service,
            self.ce_type(),
            subject,
            self.data(),
        )
    }

    /// Reads an event back from a CloudEvent (clients, the merger, tests).
    pub fn from_cloudevent(ce: &CloudEvent) -> Result<Self, serde_json::Error> {
        let mut data = ce.data.clone().unwrap_or(serde_json::Value::Null);
        if let Some(obj) = data.as_object_mut()
            && let Some(tenant) = obj.remove("tenant")
        {
            // Back to the fleet's scoped id (`<tenant>=<id>`), which the types hold.
            let tenant = tenant.as_str().unwrap_or_default().to_owned();
            let local = obj
                .get("job_id")
                .and_then(|j| j.as_str())
                .unwrap_or(crate::subjects::UNNAMED_JOB)
                .to_owned();
            let scoped = format!("{tenant}{}{local}", crate::ids::TENANT_SEPARATOR);
            obj.insert("job_id".into(), scoped.into());
        }
        Ok(match ce.ty.as_str() {
            "io.ffleet.job.accepted" => JobEvent::Accepted(serde_json::from_value(data)?),
            "io.ffleet.job.progress" => JobEvent::Progress(serde_json::from_value(data)?),
            "io.ffleet.job.completed" => JobEvent::Completed(serde_json::from_value(data)?),
            "io.ffleet.job.failed" => JobEvent::Failed(serde_json::from_value(data)?),
            "io.ffleet.job.cancelled" => JobEvent::Cancelled(serde_json::from_value(data)?),
            "io.ffleet.segment.done" => JobEvent::SegmentDone(serde_json::from_value(data)?),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown event type {other:?}"
                )));
            }
        })
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobEvent::Completed(_) | JobEvent::Failed(_) | JobEvent::Cancelled(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_cloudevents() {
        let job = JobId::new("j").unwrap();
        let ev = JobEvent::SegmentDone(SegmentDone {
            version: CURRENT,
            job_id: job.clone(),
            unit: Unit::Video(3),
            attempt: 2,
            node: NodeId::new("n").unwrap(),
            outcome: SegmentOutcome::Failed {
                failure: Failure::new(Reason::EncodeFailed, "boom"),
            },
        });
        let ce = ev.to_cloudevent("encoder");
        assert_eq!(ce.specversion, "1.0");
        assert_eq!(ce.id, "j.v00003.2.done");
        let json = serde_json::to_string(&ce).unwrap();
        let back: CloudEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(JobEvent::from_cloudevent(&back).unwrap(), ev);
        let failed = JobEvent::failed(Some(job), &Failure::new(Reason::InputMissing, "x"));
        assert_eq!(failed.message_id(), "j.terminal");
    }

    #[test]
    fn a_tenants_public_events_name_its_own_id_and_round_trip_to_the_scoped_one() {
        let t = crate::ids::Tenant::new("acme").unwrap();
        let job = JobId::scoped(&t, &JobId::new("j").unwrap());
        let failed = JobEvent::failed(Some(job.clone()), &Failure::new(Reason::InputMissing, "x"));
        let ce = failed.to_cloudevent("splitter");
        let data = ce.data.clone().unwrap();
        assert_eq!(data["job_id"], "j");
        assert_eq!(data["tenant"], "acme");
        assert_eq!(ce.subject.as_deref(), Some("j"));
        assert_eq!(JobEvent::from_cloudevent(&ce).unwrap(), failed);
        let unnamed = JobId::new("acme=_unnamed").unwrap();
        let ce = JobEvent::failed(
            Some(unnamed.clone()),
            &Failure::new(Reason::InputMissing, "x"),
        )
        .to_cloudevent("splitter");
        assert!(ce.data.as_ref().unwrap().get("job_id").is_none());
        assert_eq!(
            JobEvent::from_cloudevent(&ce).unwrap().job_id(),
            Some(&unnamed)
        );
        // Between services the scoped id stays.
        let done = JobEvent::SegmentDone(SegmentDone {
            version: CURRENT,
            job_id: job.clone(),
            unit: Unit::Audio,
            attempt: 1,
            node: NodeId::new("n").unwrap(),
            outcome: SegmentOutcome::Failed {
                failure: Failure::new(Reason::EncodeFailed, "boom"),
            },
        });
        assert_eq!(
            done.to_cloudevent("encoder").data.unwrap()["job_id"],
            "acme=j"
        );
    }
}
