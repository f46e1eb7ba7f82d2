//! The job retry service: every splitter replica answers `ffleet.api.retry` requests (NATS
//! service `ffleet`, endpoint `retry`, one replica answering each), and tenants' on
//! `ffleet.api.retry.t.<tenant>` (endpoint `tenant-retry`, ids in them their own). The request
//! is the status request's shape; the answer is the old job's status, with `retried_as`.
//!
//! A retry is a new job, linked both ways: the old record gets `retried_as` in one
//! revision-checked write (`job_protocol::retry`), so a job is retried once and a retry asked
//! twice is answered with the same job; the new request is the old one under the new id, with
//! `retry_of` naming the old job, submitted as its first request was (a tenant's on its
//! tenant's subject, held to its quota; a plain job's on the privileged subject, since its
//! priority was admitted once already). Splitting it, the splitter reuses the old job's
//! encoded units where their cut comes out the same (`reuse`).

use async_nats::service;
use ffleet_runtime::job_protocol::{self, RetryRefused};
use ffleet_runtime::messages::status::{self as wire, JobStatus, StatusRequest};
use ffleet_runtime::messages::{self, JobRecord, JobRequest, JobState};
use ffleet_runtime::nats::kv::Change;
use ffleet_runtime::nats::service::{self as service_nats, Endpoint, error};
use ffleet_runtime::nats::{BoxError, NatsError, publish};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects::{self, service_api};
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::{JobId, Tenant};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Service error code of a retry naming a job that does not exist.
pub const ERROR_UNKNOWN_JOB: u16 = 404;
/// Service error code of a retry of a job that has not failed or been cancelled.
pub const ERROR_NOT_ENDED: u16 = 409;
/// How long the record's write and the new request's publish may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Registers this splitter as an instance of the `ffleet` service and answers retry requests
/// until `shutdown` fires; the returned task ends once the service is stopped.
pub async fn start(ctx: Ctx, shutdown: CancellationToken) -> Result<JoinHandle<()>, NatsError> {
    let tenants = subjects::api_retry_any_tenant();
    let endpoints = [
        Endpoint {
            name: service_api::RETRY_ENDPOINT,
            subject: subjects::API_RETRY,
        },
        Endpoint {
            name: service_api::TENANT_RETRY_ENDPOINT,
            subject: &tenants,
        },
    ];
    let client = ctx.client.clone();
    let about = "job retry requests";
    service_nats::serve_job_action(&client, about, endpoints, shutdown, move |req| {
        let ctx = ctx.clone();
        async move { answer(&ctx, req).await }
    })
    .await
}

async fn answer(ctx: &Ctx, req: service::Request) {
    let (subject, payload) = (req.message.subject.clone(), req.message.payload.clone());
    let retry = retry(ctx, &subject, &payload);
    let late = "the retry was not recorded (a retry is idempotent)";
    service_nats::answer_within(req, ANSWER_WITHIN, late, retry).await
}

/// The answer to one request: the old job's status with `retried_as`, or a service error.
async fn retry(
    ctx: &Ctx,
    subject: &str,
    payload: &[u8],
) -> Result<JobStatus, service::error::Error> {
    let (job, tenant) = requested_job(subject, payload)?;
    // Decided, written and submitted in a task of its own: an answer that runs out of time
    // does not drop a write that lands after it, nor the request that must follow it.
    let done = tokio::spawn({
        let (ctx, job) = (ctx.clone(), job.clone());
        async move { retry_job(&ctx, &job, tenant.as_ref()).await }
    })
    .await
    .map_err(|e| error(wire::ERROR_UNAVAILABLE, format!("retry interrupted: {e}")))?;
    match done {
        Ok(Retried::Done { record, sequence }) => {
            let mut status = JobStatus::of_record(&record).for_tenant();
            status.request_seq = sequence;
            Ok(status)
        }
        Ok(Retried::NotEnded(state)) => Err(error(
            ERROR_NOT_ENDED,
            format!(
                "job {} is {}: only a failed or cancelled job can be retried",
                job.local(),
                state.name()
            ),
        )),
        Ok(Retried::Unknown) => Err(error(
            ERROR_UNKNOWN_JOB,
            format!(
                "no job {} (never submitted, not yet taken in, or expired)",
                job.local()
            ),
        )),
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "retry request: job records unavailable");
            Err(error(
                wire::ERROR_UNAVAILABLE,
                format!("job records unavailable, ask again: {e}"),
            ))
        }
    }
}

/// What a retry request came to.
enum Retried {
    /// The old job's record, naming its retry; the sequence of the retry's request when this
    /// call submitted it.
    Done {
        record: Box<JobRecord>,
        sequence: Option<u64>,
    },
    NotEnded(JobState),
    Unknown,
}

/// Retries `job`: names a retry in its record (a fresh id, or the one it names already) and
/// submits the retry's request unless that job exists.
async fn retry_job(ctx: &Ctx, job: &JobId, tenant: Option<&Tenant>) -> Result<Retried, BoxError> {
    let Some((old, _)) = ctx.jobs.get(job.as_str()).await? else {
        return Ok(Retried::Unknown);
    };
    if !matches!(old.state, JobState::Failed | JobState::Cancelled) {
        return Ok(Retried::NotEnded(old.state));
    }
    let stale = match &old.retried_as {
        None => None,
        Some(named) => match ctx.jobs.get(named.as_str()).await? {
            // Retried already: the same answer, nothing new.
            Some((r, _)) if r.request.retry_of.as_ref() == Some(job) => {
                return Ok(Retried::Done {
                    record: Box::new(old),
                    sequence: None,
                });
            }
            // Another job took the id before the retry's request arrived: a new id.
            Some(_) => Some(named.clone()),
            // Not taken in yet, or its request never arrived (its splitter stopped) or was
            // refused (a tenant at its quota): sent again.
            None => {
                let sequence = submit(ctx, &old, named, tenant).await?;
                return Ok(Retried::Done {
                    record: Box::new(old),
                    sequence: Some(sequence),
                });
            }
        },
    };
    let again = free_id(ctx, &old).await?;
    let marked = ctx
        .jobs
        .modify(job.as_str(), |rec| {
            match job_protocol::retry(rec, &again, stale.as_ref(), &now_rfc3339()) {
                Ok(n) => Change::Write(n.clone(), Ok(n)),
                Err(why) => Change::Keep(Err(why)),
            }
        })
        .await?;
    match marked {
        Ok(rec) => {
            let sequence = submit(ctx, &rec, &again, tenant).await?;
            tracing::info!(job = %job, retry = %again, "job retried");
            Ok(Retried::Done {
                record: Box::new(rec),
                sequence: Some(sequence),
            })
        }
        // Another replica's retry won the write: its answer, and its request.
        Err(RetryRefused::Retried(_)) => match ctx.jobs.get(job.as_str()).await? {
            Some((rec, _)) => Ok(Retried::Done {
                record: Box::new(rec),
                sequence: None,
            }),
            None => Ok(Retried::Unknown),
        },
        Err(RetryRefused::NotEnded(state)) => Ok(Retried::NotEnded(state)),
        Err(RetryRefused::Missing) => Ok(Retried::Unknown),
    }
}

/// Submits `again`, the retry of `old`: the old request under the new id, `retry_of` naming
/// the old job. Returns the request's stream sequence.
async fn submit(
    ctx: &Ctx,
    old: &JobRecord,
    again: &JobId,
    tenant: Option<&Tenant>,
) -> Result<u64, NatsError> {
    let local = |j: &JobId| JobId::plain(j.local()).unwrap_or_else(|_| j.clone());
    let owner = old.job_id.tenant();
    let mut req: JobRequest = old.request.clone();
    // A tenant's request names its jobs as the tenant does; the splitter scopes them again.
    req.job_id = local(again);
    req.retry_of = Some(local(&old.job_id));
    let subject = match owner.as_ref().or(tenant) {
        // Held to the tenant's own cap again: its request's priority, not an operator's.
        Some(t) => subjects::jobs_submit_tenant(t),
        None => {
            req.priority = old.priority();
            subjects::JOBS_SUBMIT_PRIVILEGED.to_owned()
        }
    };
    // Unguessable, as a client's: the stream's duplicate window is shared by every client, and
    // a guessable id could be sent first to have this request dropped.
    let msg_id = format!("{again}.{}", uuid::Uuid::new_v4().simple());
    let stored = publish::raw(&ctx.js, ctx.retry, subject, messages::encode(&req), &msg_id).await?;
    Ok(stored.sequence)
}

/// The first retry id of `old` that names no job yet (`retry_id`, counting on).
async fn free_id(ctx: &Ctx, old: &JobRecord) -> Result<JobId, BoxError> {
    let (base, from) = base_of(old);
    for n in from.saturating_add(1)..from.saturating_add(MAX_TAKEN) {
        let id = retry_id(old, base, n);
        if ctx.jobs.get(id.as_str()).await?.is_none() {
            return Ok(id);
        }
    }
    Err(format!(
        "the next {MAX_TAKEN} retry ids of job {} are taken",
        old.job_id.local()
    )
    .into())
}

/// Retry ids tried before a retry is refused as having none free.
const MAX_TAKEN: u32 = 100;

/// The base a retry of `old` is named from, and the count it goes on from: a retry's own
/// `-r<n>` counts (`clip-r1` is retried as `clip-r2`), a first job's id is the base.
fn base_of(old: &JobRecord) -> (&str, u32) {
    let local = old.job_id.local();
    if old.request.retry_of.is_some()
        && let Some((base, n)) = local.rsplit_once("-r")
        && let Ok(n) = n.parse::<u32>()
    {
        return (base, n);
    }
    (local, 0)
}

/// Retry `n` of `old`: `<base>-r<n>`, the base shortened where the whole would pass the id's
/// length, in `old`'s tenant.
fn retry_id(old: &JobRecord, base: &str, n: u32) -> JobId {
    let suffix = format!("-r{n}");
    let keep = base.len().min(JobId::MAX_LEN - suffix.len());
    let id = JobId::plain(format!("{}{suffix}", &base[..keep]))
        .expect("a job id's prefix and a suffix of id characters make an id");
    match old.job_id.tenant() {
        Some(t) => JobId::scoped(&t, &id),
        None => id,
    }
}

/// The first retry id of `old`, before any is found taken.
#[cfg(test)]
fn next_id(old: &JobRecord) -> JobId {
    let (base, n) = base_of(old);
    retry_id(old, base, n + 1)
}

/// The job a request names: a plain id, scoped to the tenant the subject names (a tenant can
/// name only its own jobs, and the plain subject names no tenant's).
fn requested_job(
    subject: &str,
    payload: &[u8],
) -> Result<(JobId, Option<Tenant>), service::error::Error> {
    let bad = |e: String| error(wire::ERROR_BAD_REQUEST, e);
    let req = StatusRequest::parse(payload).map_err(|e| bad(e.to_string()))?;
    JobId::plain(req.job_id.as_str()).map_err(|e| bad(e.to_string()))?;
    let tenant = subjects::tenant_of_retry(subject).map_err(|e| bad(e.to_string()))?;
    Ok(match tenant {
        Some(t) => (JobId::scoped(&t, &req.job_id), Some(t)),
        None => (req.job_id, None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, retry_of: Option<&str>) -> JobRecord {
        let mut req: JobRequest = serde_json::from_value(serde_json::json!({
            "version": 1, "job_id": "x", "input": "/in/a.mp4", "output": "/out/a.mp4"
        }))
        .unwrap();
        req.job_id = JobId::new(id).unwrap();
        req.retry_of = retry_of.map(|r| JobId::new(r).unwrap());
        JobRecord::new(req, "h264".into())
    }

    #[test]
    fn a_retry_counts_on_from_the_job_it_retries() {
        assert_eq!(next_id(&record("clip", None)).as_str(), "clip-r1");
        assert_eq!(
            next_id(&record("clip-r1", Some("clip"))).as_str(),
            "clip-r2"
        );
        // Only a retry's own suffix counts: a first job that happens to end so does not.
        assert_eq!(next_id(&record("take-r7", None)).as_str(), "take-r7-r1");
        assert_eq!(
            next_id(&record("acme=clip-r3", Some("acme=clip"))).as_str(),
            "acme=clip-r4"
        );
        let long = "a".repeat(JobId::MAX_LEN);
        let again = next_id(&record(&long, None));
        assert!(again.as_str().len() <= JobId::MAX_LEN);
        assert!(again.as_str().ends_with("-r1"));
    }

    #[test]
    fn a_request_names_a_plain_job_scoped_to_the_subjects_tenant() {
        let body = br#"{"version":1,"job_id":"j-1"}"#;
        let (job, tenant) = requested_job(subjects::API_RETRY, body).unwrap();
        assert_eq!((job.as_str(), tenant), ("j-1", None));
        let acme = Tenant::new("acme").unwrap();
        let (scoped, _) = requested_job(&subjects::api_retry_tenant(&acme), body).unwrap();
        assert_eq!(scoped.tenant(), Some(acme));
        let forged = format!(
            r#"{{"version":1,"job_id":"acme{}j-1"}}"#,
            ffleet_runtime::ids::TENANT_SEPARATOR
        );
        assert!(requested_job(subjects::API_RETRY, forged.as_bytes()).is_err());
        assert!(requested_job(subjects::API_RETRY, b"{}").is_err());
        assert!(requested_job("ffleet.api.retry.x", body).is_err());
    }
}
