//! The job status service: every scheduler replica answers `ffleet.api.status` requests (NATS
//! service `ffleet`, endpoint `status`, in the service API's queue group, so one live replica
//! answers each), and tenants' on `ffleet.api.status.t.<tenant>` (endpoint `tenant-status`), with what the job's record in KV says, or for a job without one whether its
//! request was refused (`refusal`). Clients that may not read the jobs bucket (the submitter
//! role) ask here when they may have missed a job's terminal event.
//!
//! Leader or not makes no difference: the answer is a read of the record, which is the
//! authority. A read that comes back older than the newest record (a lagging replica) only
//! shows an earlier state; terminal states never go back, so no client ends on a stale answer.

use crate::Error;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::service;
use ffleet_runtime::JobId;
use ffleet_runtime::messages::status::{self as wire, JobStatus, StatusRequest};
use ffleet_runtime::messages::{CloudEvent, JobEvent};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::service::{self as service_nats, error};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects::{self, EventKind, msg_id, service_api};
use futures::StreamExt;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Requests answered at once by one replica; more wait in the subscription.
const IN_FLIGHT: usize = 32;
/// How long one answer may take: an asker waits a few seconds and asks again later, so reads
/// slower than this are answered as unavailable instead of piling up.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// Registers this replica as an instance of the `ffleet` service and answers status requests
/// until `shutdown` fires; the returned task ends once the service is stopped.
pub async fn start(ctx: Ctx, shutdown: CancellationToken) -> Result<JoinHandle<()>, Error> {
    let service = service_nats::start(&ctx.client, "job status requests").await?;
    let endpoint = service
        .endpoint_builder()
        .name(service_api::STATUS_ENDPOINT)
        .add(subjects::API_STATUS)
        .await
        .map_err(|e| NatsError::op("status endpoint", e))?;
    // Tenants ask on a subject of their own (the subject names the asker's tenant).
    let tenants = service
        .endpoint_builder()
        .name(service_api::TENANT_STATUS_ENDPOINT)
        .add(subjects::api_status_any_tenant())
        .await
        .map_err(|e| NatsError::op("tenant status endpoint", e))?;
    // The operator's priority changes share the service: both are the scheduler's reads and
    // writes of job records.
    let priorities = service
        .endpoint_builder()
        .name(service_api::PRIORITY_ENDPOINT)
        .add(subjects::API_PRIORITY)
        .await
        .map_err(|e| NatsError::op("priority endpoint", e))?;
    tracing::info!(subject = subjects::API_STATUS, "job status service running");
    Ok(tokio::spawn(async move {
        futures::stream::select(futures::stream::select(endpoint, tenants), priorities)
            .take_until(shutdown.cancelled_owned())
            .for_each_concurrent(IN_FLIGHT, |req| async {
                if req.message.subject.as_str() == subjects::API_PRIORITY {
                    crate::priority::answer(&ctx, req).await
                } else {
                    answer(&ctx, req).await
                }
            })
            .await;
        // Unsubscribes the endpoint and the discovery verbs (dropping the service would leave
        // its verb task answering).
        let _ = service.stop().await;
    }))
}

async fn answer(ctx: &Ctx, req: service::Request) {
    let (subject, payload) = (req.message.subject.clone(), req.message.payload.clone());
    let status = status(ctx, &subject, &payload);
    service_nats::answer_within(req, ANSWER_WITHIN, "job records not read", status).await
}

/// The answer to one request: the job's status, or a service error with its code.
/// A tenant's request names its own jobs only (a plain id, scoped here to the tenant its
/// subject names), and is answered in its own terms ([`JobStatus::for_tenant`]); a request on
/// the plain subject names plain ids only, so no tenant's job is answered there.
async fn status(
    ctx: &Ctx,
    subject: &str,
    payload: &[u8],
) -> Result<JobStatus, service::error::Error> {
    let req = StatusRequest::parse(payload).map_err(|e| {
        tracing::debug!(error = %e, "status request refused");
        error(wire::ERROR_BAD_REQUEST, e.to_string())
    })?;
    if let Err(e) = JobId::plain(req.job_id.as_str()) {
        return Err(error(wire::ERROR_BAD_REQUEST, e.to_string()));
    }
    let tenant = subjects::tenant_of_status(subject)
        .map_err(|e| error(wire::ERROR_BAD_REQUEST, e.to_string()))?;
    let job = match &tenant {
        Some(t) => JobId::scoped(t, &req.job_id),
        None => req.job_id,
    };
    let answer = match ctx.jobs.get(job.as_str()).await {
        Ok(Some((rec, _))) => Ok(JobStatus::of_record(&rec)),
        Ok(None) => Ok(match refusal(ctx, &job).await {
            Some(refused) => refused,
            None => JobStatus::unknown(job.clone()),
        }),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "status request: job record unreadable");
            Err(error(
                wire::ERROR_UNAVAILABLE,
                format!("job records unavailable, ask again: {e}"),
            ))
        }
    };
    answer.map(JobStatus::for_tenant)
}

/// A job with no record may have had its request refused: the splitter refuses a request it
/// cannot read (or whose priority the submitter may not ask for) before any record is made, and
/// tells it only by a `failed` event under the request's own id (`msg_id::refusal`). The newest
/// one stored for the job is reported with the request's stream sequence; anything that cannot
/// be read counts as no refusal (`unknown`, asked again later).
async fn refusal(ctx: &Ctx, job: &JobId) -> Option<JobStatus> {
    let stream = ctx
        .js
        .get_stream_no_info(subjects::STREAM_EVENTS)
        .await
        .ok()?;
    let subject = subjects::event(Some(job), EventKind::Failed);
    let msg = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => m,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return None,
        Err(e) => {
            tracing::debug!(job = %job, error = %e, "status request: refusals not read");
            return None;
        }
    };
    let ce: CloudEvent = serde_json::from_slice(&msg.payload).ok()?;
    let seq = msg_id::refusal_sequence(job, &ce.id)?;
    match JobEvent::from_cloudevent(&ce).ok()? {
        JobEvent::Failed(f) => Some(JobStatus::refused(job.clone(), f, seq)),
        _ => None,
    }
}
