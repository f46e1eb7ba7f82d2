//! The operator's priority changes (`ffleet priority JOB N`): requests on
//! `ffleet.api.priority` (endpoint `priority` of the `ffleet` service, beside the status
//! endpoints; only the admin may publish there), each one revision-checked write of the job's
//! record (`JobStep::Prioritize`). The leader's backlog reads the priority from its view of
//! the records before every round, so the job's units it still holds go out at the new one;
//! those already released to an encode queue (at most `scheduler.release_buffer` per
//! capability, beside the free slots) and those running keep their place.
//!
//! A job that has ended is answered with its final state, unchanged; an unknown one with 404.

use async_nats::service;
use ffleet_runtime::JobId;
use ffleet_runtime::job_protocol::{self, JobRefused, JobStep};
use ffleet_runtime::messages::JobRecord;
use ffleet_runtime::messages::control::PriorityRequest;
use ffleet_runtime::messages::status::{self as wire, JobStatus};
use ffleet_runtime::nats::kv::Change;
use ffleet_runtime::nats::service::{self as service_nats, error};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::now_rfc3339;
use std::time::Duration;

/// Service error code of a request naming a job that does not exist.
pub const ERROR_UNKNOWN_JOB: u16 = 404;
/// How long one answer may take before it is answered as unavailable (ask again).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

pub async fn answer(ctx: &Ctx, req: service::Request) {
    let payload = req.message.payload.clone();
    let change = change(ctx, &payload);
    service_nats::answer_within(req, ANSWER_WITHIN, "the job record was not written", change).await
}

async fn change(ctx: &Ctx, payload: &[u8]) -> Result<JobStatus, service::error::Error> {
    let req = PriorityRequest::parse(payload)
        .map_err(|e| error(wire::ERROR_BAD_REQUEST, e.to_string()))?;
    let job: &JobId = &req.job_id;
    let step = JobStep::Prioritize {
        priority: req.priority,
    };
    let rec = ctx
        .jobs
        .modify(job.as_str(), |r| {
            match job_protocol::apply(r, &step, &now_rfc3339()) {
                Ok((n, _)) => Change::Write(n.clone(), Some(n)),
                Err(JobRefused::Missing) => Change::Keep(None),
                Err(_) => Change::Keep(r.cloned()),
            }
        })
        .await;
    match rec {
        Ok(Some(rec)) => {
            log(&rec, req.priority);
            Ok(JobStatus::of_record(&rec))
        }
        Ok(None) => Err(error(ERROR_UNKNOWN_JOB, format!("no job {job}"))),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "priority request: job record not written");
            Err(error(
                wire::ERROR_UNAVAILABLE,
                format!("job records unavailable, ask again: {e}"),
            ))
        }
    }
}

fn log(rec: &JobRecord, asked: i32) {
    if rec.state.is_terminal() {
        tracing::info!(job = %rec.job_id, state = rec.state.name(), "priority of an ended job left as it was");
    } else {
        tracing::info!(job = %rec.job_id, priority = asked, "job priority changed by the operator");
    }
}
