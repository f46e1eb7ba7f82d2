//! Asking the fleet about a job: one status request on `ffleet.api.status` (answered by a
//! scheduler replica from the job's record), or one cancel request on `ffleet.api.cancel`
//! (answered by a merger replica, which cancels it), bounded in time, with the service error
//! of a refused request read back from the reply's headers. Any role that may publish there can
//! ask; the submitter, which may not read the jobs bucket, has no other way.

use anyhow::{Context, Result, bail};
use ffleet_runtime::messages::{self, JobStatus, StatusRequest};
use ffleet_runtime::{JobId, subjects};
use std::time::Duration;

/// How long an answer is waited for: a replica answers in milliseconds or reports the records
/// unavailable within its own 3 s (5 s for a cancel's write); past this the asker tries again
/// later.
pub const ASK_WITHIN: Duration = Duration::from_secs(6);

/// `job`'s status as the fleet reports it (`state: unknown` when it has no record). A tenant's
/// job (scoped) is asked after on its tenant's subject, by the id the tenant gave it, and the
/// answer comes back scoped.
pub async fn status(client: &async_nats::Client, job: &JobId) -> Result<JobStatus> {
    let subject = match job.tenant() {
        Some(t) => subjects::api_status_tenant(&t),
        None => subjects::API_STATUS.to_owned(),
    };
    ask(client, subject, job, "status").await
}

/// Cancels `job` (a tenant's on its tenant's subject): its status after the request, which is
/// `cancelled`, or the state it had already ended in; `None` when the fleet knows no such job
/// (yet: a request the splitter has not taken in has no record).
pub async fn cancel(client: &async_nats::Client, job: &JobId) -> Result<Option<JobStatus>> {
    let subject = match job.tenant() {
        Some(t) => subjects::api_cancel_tenant(&t),
        None => subjects::API_CANCEL.to_owned(),
    };
    known(ask(client, subject, job, "cancel").await)
}

/// Runs `job`, failed or cancelled, again (a tenant's on its tenant's subject): its status,
/// naming the new job in `retried_as`; `None` when the fleet knows no such job. A job that has
/// not ended (or completed) is refused with the service's reason.
pub async fn retry(client: &async_nats::Client, job: &JobId) -> Result<Option<JobStatus>> {
    let subject = match job.tenant() {
        Some(t) => subjects::api_retry_tenant(&t),
        None => subjects::API_RETRY.to_owned(),
    };
    known(ask(client, subject, job, "retry").await)
}

/// Sets `job`'s priority (admin): its status after the change, or `None` for an unknown job.
pub async fn priority(
    client: &async_nats::Client,
    job: &JobId,
    priority: i32,
) -> Result<Option<JobStatus>> {
    let req = messages::encode(&ffleet_runtime::messages::PriorityRequest::new(
        job.clone(),
        priority,
    ));
    let subject = subjects::API_PRIORITY.to_owned();
    known(send(client, subject, req, job, "priority").await)
}

/// An answer, with a service's "unknown job" (404) as `None`.
fn known(answer: Result<JobStatus>) -> Result<Option<JobStatus>> {
    match answer {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if e.downcast_ref::<Refused>()
                .is_some_and(|r| r.code == UNKNOWN_JOB) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The cancel and retry services' code for a job they do not know
/// (`merger::cancel::ERROR_UNKNOWN_JOB`, `splitter::retry::ERROR_UNKNOWN_JOB`).
const UNKNOWN_JOB: &str = "404";

/// A request the service answered with an error.
#[derive(Debug)]
pub struct Refused {
    what: String,
    code: String,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} request refused ({}): {}",
            self.what, self.code, self.message
        )
    }
}

impl std::error::Error for Refused {}

/// One request about `job` on `subject` (`what` names it in errors): the answer, checked to
/// name the job asked about.
async fn ask(
    client: &async_nats::Client,
    subject: String,
    job: &JobId,
    what: &str,
) -> Result<JobStatus> {
    let asked = match job.tenant() {
        Some(_) => JobId::plain(job.local())?,
        None => job.clone(),
    };
    let req = messages::encode(&StatusRequest::new(asked.clone()));
    let mut status = send(client, subject, req, &asked, what).await?;
    if status.tenant != job.tenant() {
        bail!("{what} answer names job {}, not {job}", status.job_id);
    }
    status.job_id = job.clone();
    Ok(status)
}

/// Sends request `req` about `asked` on `subject`: the answer, checked to name that job.
async fn send(
    client: &async_nats::Client,
    subject: String,
    req: bytes::Bytes,
    asked: &JobId,
    what: &str,
) -> Result<JobStatus> {
    let reply = tokio::time::timeout(ASK_WITHIN, client.request(subject, req))
        .await
        .with_context(|| format!("no {what} answer within {} s", ASK_WITHIN.as_secs()))?;
    let reply = match reply {
        Ok(r) => r,
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
            bail!("no service answers {what} requests: is the fleet running?")
        }
        Err(e) => return Err(e).with_context(|| format!("sending the {what} request")),
    };
    if let Some((code, message)) = service_error(&reply) {
        return Err(Refused {
            what: what.to_owned(),
            code,
            message,
        }
        .into());
    }
    let status: JobStatus = messages::decode("job status", &reply.payload)?;
    if status.job_id != *asked {
        bail!("{what} answer names job {}, not {asked}", status.job_id);
    }
    Ok(status)
}

/// The service error a reply carries (`Nats-Service-Error-Code` and `Nats-Service-Error`).
pub fn service_error(reply: &async_nats::Message) -> Option<(String, String)> {
    use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
    let headers = reply.headers.as_ref()?;
    let code = headers.get(NATS_SERVICE_ERROR_CODE)?.as_str().to_owned();
    let message = headers
        .get(NATS_SERVICE_ERROR)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    Some((code, message))
}
