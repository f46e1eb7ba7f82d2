//! The job cancel service: every merger replica answers `ffleet.api.cancel` requests (NATS
//! service `ffleet`, endpoint `cancel`, in the service API's queue group, so one replica answers
//! each), and tenants' on `ffleet.api.cancel.t.<tenant>` (endpoint `tenant-cancel`, ids in them
//! their own). The request is the status request's shape; the answer is the job's status after
//! it (`cancelled`, or the state it had already ended in, unchanged).
//!
//! Mergers answer because they end jobs already: the cancel is a revision-checked write to the
//! job record like a merge's `finalize` and `complete` (`jobs::cancel`), so a cancel racing a
//! merge ends the job exactly once: a cancel before the merge's `finalize` wins and nothing is
//! placed, one after it is refused and the job completes. Every service hears of the cancel
//! (`jobs_ended`), and the scheduler has the nodes still running its units drop them.

use async_nats::service;
use ffleet_runtime::JobId;
use ffleet_runtime::jobs::{self, Cancel};
use ffleet_runtime::messages::status::{self as wire, JobStatus, StatusRequest};
use ffleet_runtime::messages::{JobRecord, JobState};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::service::{self as service_nats, Endpoint, error};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects::{self, service_api};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Service error code of a cancel naming a job that does not exist.
pub const ERROR_UNKNOWN_JOB: u16 = 404;
/// How long the record's write may take before the request is answered as unavailable (ask
/// again: a cancel is idempotent).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Registers this merger as an instance of the `ffleet` service and answers cancel requests
/// until `shutdown` fires; the returned task ends once the service is stopped.
pub async fn start(ctx: Ctx, shutdown: CancellationToken) -> Result<JoinHandle<()>, NatsError> {
    let tenants = subjects::api_cancel_any_tenant();
    let endpoints = [
        Endpoint {
            name: service_api::CANCEL_ENDPOINT,
            subject: subjects::API_CANCEL,
        },
        Endpoint {
            name: service_api::TENANT_CANCEL_ENDPOINT,
            subject: &tenants,
        },
    ];
    let client = ctx.client.clone();
    let about = "job cancel requests";
    service_nats::serve_job_action(&client, about, endpoints, shutdown, move |req| {
        let ctx = ctx.clone();
        async move { answer(&ctx, req).await }
    })
    .await
}

async fn answer(ctx: &Ctx, req: service::Request) {
    let (subject, payload) = (req.message.subject.clone(), req.message.payload.clone());
    let cancel = cancel(ctx, &subject, &payload);
    let late = "the job record was not written (a cancel is idempotent)";
    service_nats::answer_within(req, ANSWER_WITHIN, late, cancel).await
}

/// The answer to one request: the job's status after the cancel, or a service error. Only the
/// record's write is waited for; what follows a cancel (its event, the word to the nodes, the
/// scratch cleanup) runs on its own, so a slow broker delays it without losing it, and a
/// cancelled job met again (another cancel) has it run again, idempotently.
async fn cancel(
    ctx: &Ctx,
    subject: &str,
    payload: &[u8],
) -> Result<JobStatus, service::error::Error> {
    let job = requested_job(subject, payload)?;
    // The write and its follow-up run in a task of their own: an answer that runs out of time
    // does not drop a write that lands after it, nor what must follow it.
    let written = tokio::spawn({
        let (ctx, job) = (ctx.clone(), job.clone());
        async move {
            let outcome = jobs::cancel(&ctx, &job).await;
            if let Ok(Cancel::Cancelled(rec) | Cancel::Ended(rec)) = &outcome
                && rec.state == JobState::Cancelled
            {
                announce(&ctx, rec);
            }
            outcome
        }
    })
    .await
    .map_err(|e| error(wire::ERROR_UNAVAILABLE, format!("cancel interrupted: {e}")))?;
    match written {
        Ok(Cancel::Cancelled(rec) | Cancel::Ended(rec)) => {
            Ok(JobStatus::of_record(&rec).for_tenant())
        }
        Ok(Cancel::Unknown) => Err(error(
            ERROR_UNKNOWN_JOB,
            format!(
                "no job {} (never submitted, not yet taken in, or expired)",
                job.local()
            ),
        )),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "cancel request: job record not written");
            Err(error(
                wire::ERROR_UNAVAILABLE,
                format!("job records unavailable, ask again: {e}"),
            ))
        }
    }
}

/// Runs what follows a cancelled record (`jobs::announce_cancelled`) in a task of its own,
/// again after a pause while it fails (a broker electing a leader, out of space), for about
/// ten minutes; after that it is done again when the job is next met.
pub fn announce(ctx: &Ctx, rec: &JobRecord) {
    let (ctx, rec) = (ctx.clone(), rec.clone());
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        for _ in 0..ANNOUNCE_TRIES {
            match jobs::announce_cancelled(&ctx, &rec).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(job = %rec.job_id, error = %e, "cancelled job not announced yet; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(120));
                }
            }
        }
        tracing::error!(job = %rec.job_id, "cancelled job not announced; done again when it is next met");
    });
}

/// Tries of a cancel's follow-up (1 s, doubling to 2 min between them: about ten minutes).
const ANNOUNCE_TRIES: usize = 10;

/// The job a request names: a plain id, scoped to the tenant the subject names (a tenant can
/// name only its own jobs, and the plain subject names no tenant's).
fn requested_job(subject: &str, payload: &[u8]) -> Result<JobId, service::error::Error> {
    let bad = |e: String| error(wire::ERROR_BAD_REQUEST, e);
    let req = StatusRequest::parse(payload).map_err(|e| bad(e.to_string()))?;
    JobId::plain(req.job_id.as_str()).map_err(|e| bad(e.to_string()))?;
    let tenant = subjects::tenant_of_cancel(subject).map_err(|e| bad(e.to_string()))?;
    Ok(match &tenant {
        Some(t) => JobId::scoped(t, &req.job_id),
        None => req.job_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_plain_job_scoped_to_the_subjects_tenant() {
        let body = br#"{"version":1,"job_id":"j-1"}"#;
        assert_eq!(
            requested_job(subjects::API_CANCEL, body).unwrap().as_str(),
            "j-1"
        );
        let acme = ffleet_runtime::Tenant::new("acme").unwrap();
        let scoped = requested_job(&subjects::api_cancel_tenant(&acme), body).unwrap();
        assert_eq!(scoped.tenant(), Some(acme));
        assert_eq!(scoped.local(), "j-1");
        // A tenant-scoped id sent on the plain subject is no plain id.
        let forged = format!(
            r#"{{"version":1,"job_id":"acme{}j-1"}}"#,
            ffleet_runtime::ids::TENANT_SEPARATOR
        );
        assert_eq!(
            requested_job(subjects::API_CANCEL, forged.as_bytes())
                .unwrap_err()
                .code,
            usize::from(wire::ERROR_BAD_REQUEST)
        );
        assert!(requested_job(subjects::API_CANCEL, b"{}").is_err());
        assert!(requested_job("ffleet.api.cancel.x", body).is_err());
    }
}
