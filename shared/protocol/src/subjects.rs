//! Every subject, stream, consumer and bucket name ffleet uses, in one place.
//!
//! No other module writes a subject string: they call these functions, so a rename is one edit
//! and a typo is a compile error.

use crate::ids::{Capability, JobId, NodeId, Tenant};

/// Work-queue stream of job requests.
pub const STREAM_JOBS: &str = "FFLEET_JOBS";
/// Work-queue stream of tasks: the plan queue and one encode queue per capability.
pub const STREAM_TASKS: &str = "FFLEET_TASKS";
/// Limits stream of CloudEvents about jobs, kept for days for other systems to read.
pub const STREAM_EVENTS: &str = "FFLEET_EVENTS";

/// Limits stream of units that exhausted their retry budget, kept for inspection.
pub const STREAM_DEAD: &str = "FFLEET_DEAD";

/// Job state and plan, one key per job.
pub const BUCKET_JOBS: &str = "ffleet-jobs";
/// Per-unit ownership records (`<job>.<unit>`), changed only by revision-checked updates.
pub const BUCKET_SEGMENTS: &str = "ffleet-segments";
/// Encoder heartbeats, one key per node, expiring with the bucket's max age.
pub const BUCKET_WORKERS: &str = "ffleet-workers";

/// Media between services (cuts, encoded segments, uploaded sources and outputs) when nodes share
/// no filesystem: a JetStream Object Store bucket (default name; `storage.bucket`).
pub const BUCKET_MEDIA: &str = "ffleet-media";

/// The fleet's own media (cuts, encoded units, copied sources) beside media bucket `media`: a
/// bucket of its own, which only the services that make and read that media may touch, so no
/// client (the plain submitter included) reads or rewrites another job's scratch. Derived from
/// the media bucket's name, so every role's permissions follow `storage.bucket`.
pub fn scratch_bucket(media: &str) -> String {
    format!("{media}{SCRATCH_SUFFIX}")
}

/// What `scratch_bucket` appends to the media bucket's name.
pub const SCRATCH_SUFFIX: &str = "-scratch";

/// Leases (leader election), one key per role, expiring unless renewed.
pub const BUCKET_LEASES: &str = "ffleet-leases";
/// Tenants' usage (`TenantUsage`: the jobs each has in flight), one key per tenant.
pub const BUCKET_TENANTS: &str = "ffleet-tenants";
/// Every stream and bucket ffleet provisions (names accepted by `streams.replicas_for`).
pub const PROVISIONED: &[&str] = &[
    STREAM_JOBS,
    STREAM_TASKS,
    STREAM_EVENTS,
    STREAM_DEAD,
    BUCKET_JOBS,
    BUCKET_SEGMENTS,
    BUCKET_WORKERS,
    BUCKET_LEASES,
    BUCKET_TENANTS,
    BUCKET_MEDIA,
];

/// The stream behind every provisioned name (`PROVISIONED`): the media object store's, its job
/// index's and the scratch object store's only with `media` (fleets on the object-store
/// backend).
pub fn provisioned_streams(media: bool) -> Vec<String> {
    let mut out: Vec<String> = PROVISIONED
        .iter()
        .filter(|n| **n != BUCKET_MEDIA)
        .map(|n| {
            if n.starts_with("FFLEET_") {
                (*n).to_owned()
            } else {
                kv_stream(n)
            }
        })
        .collect();
    if media {
        out.push(object_stream(BUCKET_MEDIA));
        out.push(media_index_stream(BUCKET_MEDIA));
        // Its subjects name each object's job: no index beside it.
        out.push(object_stream(&scratch_bucket(BUCKET_MEDIA)));
    }
    out
}

/// The scheduler leader's lease key.
pub const LEASE_SCHEDULER: &str = "scheduler";

/// Where other systems (and `ffleet submit`) publish job requests.
pub const JOBS_SUBMIT: &str = "ffleet.jobs.submit";
/// Job requests from privileged clients (`ffleet submit --privileged`): not held to
/// `splitter.max_submitter_priority`. Inside `jobs_wildcard()`, so the jobs stream stores it;
/// only credentials allowed to publish here get the privilege.
pub const JOBS_SUBMIT_PRIVILEGED: &str = "ffleet.jobs.submit-privileged";
/// Where tenant `tenant`'s requests are published: only its credentials may, so the subject
/// names the tenant a request comes from (`ffleet.jobs.t.<tenant>.submit`).
pub fn jobs_submit_tenant(tenant: &Tenant) -> String {
    format!("ffleet.jobs.t.{tenant}.submit")
}

/// Every tenant's requests: the filter of the splitter's `CONSUMER_SPLITTER_TENANTS`.
pub fn jobs_submit_any_tenant() -> String {
    "ffleet.jobs.t.*.submit".into()
}

/// The tenant a request on `subject` comes from (`None`: not a tenant's submit subject).
pub fn tenant_of_submit(subject: &str) -> Option<Tenant> {
    let rest = subject.strip_prefix("ffleet.jobs.t.")?;
    Tenant::new(rest.strip_suffix(".submit")?).ok()
}

/// Tasks waiting for the scheduler to route them.
pub const TASKS_PLAN: &str = "ffleet.tasks.plan";

/// Job status requests, answered by every scheduler replica (NATS service `service_api::NAME`,
/// endpoint `service_api::STATUS_ENDPOINT`): the job's state from its record, for clients that may
/// not read the jobs bucket.
pub const API_STATUS: &str = "ffleet.api.status";

/// Operator control of encoder nodes (`messages::control`): `ffleet.api.node.<node>`, answered
/// by that node alone. Only the admin may publish here.
pub const API_NODE: &str = "ffleet.api.node";

/// Node `node`'s control subject.
pub fn node_control(node: &NodeId) -> String {
    format!("{API_NODE}.{node}")
}

/// Every node's control subject (what the encoder role may listen on).
pub fn node_control_wildcard() -> String {
    format!("{API_NODE}.*")
}

/// Job cancel requests (`messages::status::StatusRequest` in, `JobStatus` out), answered by
/// one merger replica (NATS service `service_api::NAME`, endpoint
/// `service_api::CANCEL_ENDPOINT`). Submitters and the admin may publish here.
pub const API_CANCEL: &str = "ffleet.api.cancel";

/// Priority changes of a job's units not yet released (`messages::control::PriorityRequest`),
/// answered by one scheduler replica (endpoint `service_api::PRIORITY_ENDPOINT`). Only the admin
/// may publish here.
pub const API_PRIORITY: &str = "ffleet.api.priority";

/// Tenant `tenant`'s cancel requests (ids in them are its own): `ffleet.api.cancel.t.<tenant>`.
pub fn api_cancel_tenant(tenant: &Tenant) -> String {
    format!("{API_CANCEL}.t.{tenant}")
}

/// Every tenant's cancel requests (the cancel endpoint's tenant subject).
pub fn api_cancel_any_tenant() -> String {
    format!("{API_CANCEL}.t.*")
}

/// The tenant a cancel request on `subject` comes from: `Ok(None)` from the plain subject.
pub fn tenant_of_cancel(subject: &str) -> Result<Option<Tenant>, NotAStatusSubject> {
    tenant_of_api(API_CANCEL, subject)
}

/// Retry requests of a failed or cancelled job (`messages::status::StatusRequest` in, the old
/// job's `JobStatus` with `retried_as` out), answered by one splitter replica (endpoint
/// `service_api::RETRY_ENDPOINT`). Submitters and the admin may publish here.
pub const API_RETRY: &str = "ffleet.api.retry";

/// Tenant `tenant`'s retry requests (ids in them are its own): `ffleet.api.retry.t.<tenant>`.
pub fn api_retry_tenant(tenant: &Tenant) -> String {
    format!("{API_RETRY}.t.{tenant}")
}

/// Every tenant's retry requests (the retry endpoint's tenant subject).
pub fn api_retry_any_tenant() -> String {
    format!("{API_RETRY}.t.*")
}

/// The tenant a retry request on `subject` comes from: `Ok(None)` from the plain subject.
pub fn tenant_of_retry(subject: &str) -> Result<Option<Tenant>, NotAStatusSubject> {
    tenant_of_api(API_RETRY, subject)
}

/// Where the scheduler tells node `node` to drop what it holds of an ended job
/// (`messages::control::JobDrop`, fire and forget): `ffleet.ctl.drop.<node>`.
pub fn node_drop(node: &NodeId) -> String {
    format!("{CTL_DROP}.{node}")
}

/// Every node's drop subject (what the scheduler may publish on, and encoders listen on).
pub fn node_drop_wildcard() -> String {
    format!("{CTL_DROP}.*")
}

const CTL_DROP: &str = "ffleet.ctl.drop";

/// Where every service hears that a job was cancelled: one `JobDrop` per job, from the merger
/// that cancelled it and from the scheduler's leader. Encoders let its units go, a splitter
/// stops cutting it, a merger stops merging it. Core NATS; a node that misses it is told again
/// on its own drop subject while it holds a unit.
pub fn jobs_ended() -> String {
    "ffleet.ctl.ended".into()
}

/// Tenant `tenant`'s job status requests (ids in them are its own): the same endpoint's
/// tenant form, `ffleet.api.status.t.<tenant>`.
pub fn api_status_tenant(tenant: &Tenant) -> String {
    format!("{API_STATUS}.t.{tenant}")
}

/// Every tenant's status requests (the endpoint's second subject).
pub fn api_status_any_tenant() -> String {
    format!("{API_STATUS}.t.*")
}

/// A subject that is neither the plain status subject nor a tenant's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a request subject of this endpoint")]
pub struct NotAStatusSubject(pub String);

/// The tenant a status request on `subject` comes from: `Ok(None)` from the plain subject.
pub fn tenant_of_status(subject: &str) -> Result<Option<Tenant>, NotAStatusSubject> {
    tenant_of_api(API_STATUS, subject)
}

/// The tenant a request on `subject` of request subject `api` comes from (`<api>.t.<tenant>`):
/// `Ok(None)` from `api` itself.
fn tenant_of_api(api: &str, subject: &str) -> Result<Option<Tenant>, NotAStatusSubject> {
    if subject == api {
        return Ok(None);
    }
    subject
        .strip_prefix(api)
        .and_then(|r| r.strip_prefix(".t."))
        .and_then(|t| Tenant::new(t).ok())
        .map(Some)
        .ok_or_else(|| NotAStatusSubject(subject.to_owned()))
}

/// The NATS service API (`$SRV`, ADR-32) under which ffleet's request endpoints are discoverable
/// by the standard tooling (`nats micro ls`, `info`, `stats`).
pub mod service_api {
    /// The service's name (one per fleet; every scheduler replica is an instance of it).
    pub const NAME: &str = "ffleet";
    /// The job status endpoint's name (on `super::API_STATUS`).
    pub const STATUS_ENDPOINT: &str = "status";
    /// The endpoint of tenants' status requests (on `super::api_status_any_tenant()`).
    pub const TENANT_STATUS_ENDPOINT: &str = "tenant-status";
    /// The job cancel endpoint (on `super::API_CANCEL`), served by the mergers.
    pub const CANCEL_ENDPOINT: &str = "cancel";
    /// The endpoint of tenants' cancel requests (on `super::api_cancel_any_tenant()`).
    pub const TENANT_CANCEL_ENDPOINT: &str = "tenant-cancel";
    /// The job priority endpoint (on `super::API_PRIORITY`), served by the schedulers.
    pub const PRIORITY_ENDPOINT: &str = "priority";
    /// The splitters' endpoint answering `API_RETRY`.
    pub const RETRY_ENDPOINT: &str = "retry";
    /// The same for tenants' retries (`api_retry_any_tenant`).
    pub const TENANT_RETRY_ENDPOINT: &str = "tenant-retry";
    /// The discovery verbs an instance answers (async-nats 0.51 serves no `SCHEMA`).
    pub const VERBS: [&str; 3] = ["PING", "INFO", "STATS"];

    /// Every discovery subject an instance of `NAME` subscribes to: `$SRV.<verb>` (all services),
    /// `$SRV.<verb>.<name>` and `$SRV.<verb>.<name>.<id>` (one instance; ids are random).
    pub fn discovery() -> Vec<String> {
        VERBS
            .iter()
            .flat_map(|v| [format!("$SRV.{v}"), verb(v), format!("{}.*", verb(v))])
            .collect()
    }

    /// `$SRV.<verb>.ffleet`, which every instance answers (`nats micro info ffleet` sends
    /// `INFO` here).
    pub fn verb(verb: &str) -> String {
        format!("$SRV.{verb}.{NAME}")
    }
}

/// Durable consumer names.
pub const CONSUMER_SPLITTER: &str = "splitter";
/// The splitter's consumer of `JOBS_SUBMIT_PRIVILEGED` (a second durable: nats-server 2.9 has
/// no multi-filter consumers, and an existing `splitter` durable keeps its filter).
pub const CONSUMER_SPLITTER_PRIVILEGED: &str = "splitter-privileged";
/// The splitter's consumer of every tenant's requests (`jobs_submit_any_tenant`).
pub const CONSUMER_SPLITTER_TENANTS: &str = "splitter-tenants";
pub const CONSUMER_SCHEDULER: &str = "scheduler";
pub const CONSUMER_MERGER: &str = "merger";

/// The stream backing KV bucket `bucket`.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subject a put of `key` into KV bucket `bucket` is published on.
pub fn kv_key(bucket: &str, key: &str) -> String {
    format!("$KV.{bucket}.{key}")
}

/// The stream backing object store `bucket`.
pub fn object_stream(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// Every subject of object store `bucket` (chunks and metadata).
pub fn object_wildcards(bucket: &str) -> Vec<String> {
    vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")]
}

/// The chunks of one stored object (`nuid` names one version of it).
pub fn object_chunks(bucket: &str, nuid: &str) -> String {
    format!("$O.{bucket}.C.{nuid}")
}

/// The stream that records which job each object of `bucket` belongs to, so a job's media is
/// removed without listing the whole bucket (a listing reads every object's metadata: per job,
/// that grew with everything stored).
pub fn media_index_stream(bucket: &str) -> String {
    format!("IDX_{bucket}")
}

/// Every subject of `bucket`'s index.
pub fn media_index_wildcard(bucket: &str) -> String {
    format!("ffleet.media-index.{bucket}.>")
}

/// The index entries of one job's objects in `bucket`.
pub fn media_index_of_job(bucket: &str, job: &str) -> String {
    format!("ffleet.media-index.{bucket}.{job}.>")
}

/// The index entry of object `encoded_name` (base64url of its name) of `job`; its last token
/// is the name.
pub fn media_index_entry(bucket: &str, job: &str, encoded_name: &str) -> String {
    format!("ffleet.media-index.{bucket}.{job}.{encoded_name}")
}

/// The index entry of one upload of object `encoded_name` of `job`: its chunks are under
/// `nuid`. Recorded before the first chunk is sent, so the job's cleanup purges the chunks of an
/// upload that failed or was replaced even when its writer may not purge.
pub fn media_index_upload(bucket: &str, job: &str, encoded_name: &str, nuid: &str) -> String {
    format!("ffleet.media-index.{bucket}.{job}.{encoded_name}.{nuid}")
}

/// The metadata subject of object `encoded_name` (base64url of its name, as the NATS tools do).
pub fn object_meta(bucket: &str, encoded_name: &str) -> String {
    format!("$O.{bucket}.M.{encoded_name}")
}

/// Every subject of KV bucket `bucket`.
pub fn kv_wildcard(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// Where request replies (JetStream API answers, publish acks, pushed consumer messages) arrive
/// for a client with no identity (an unsecured deployment): the NATS default.
pub const INBOX_WILDCARD: &str = "_INBOX.>";

/// The inbox prefix of `identity` (a role, or a tenant's submitter): its replies arrive under it,
/// and only it may subscribe there, so no credential reads another's replies.
pub fn inbox_prefix(identity: &str) -> String {
    format!("_INBOX_ffleet.{identity}")
}

/// The identity of tenant `tenant`'s credentials (its inbox prefix's last token, its nkey's
/// file name in a secrets directory): never a role's name.
pub fn tenant_identity(tenant: &Tenant) -> String {
    format!("tenant-{tenant}")
}

/// Every inbox of `identity`.
pub fn inbox_wildcard(identity: &str) -> String {
    format!("{}.>", inbox_prefix(identity))
}

pub fn jobs_wildcard() -> String {
    "ffleet.jobs.>".into()
}

pub fn tasks_wildcard() -> String {
    "ffleet.tasks.>".into()
}

pub fn events_wildcard() -> String {
    "ffleet.events.>".into()
}

pub fn dead_wildcard() -> String {
    "ffleet.dead.>".into()
}

/// Where a unit that exhausted its retry budget is kept: the task and why it failed.
pub fn dead_letter(job: &JobId, unit: crate::Unit) -> String {
    format!("ffleet.dead.{job}.{unit}")
}

/// Every encode queue, whatever the capability.
pub fn tasks_encode_wildcard() -> String {
    "ffleet.tasks.encode.*".into()
}

/// Every retry queue, whatever the capability.
pub fn tasks_retry_wildcard() -> String {
    "ffleet.tasks.retry.*".into()
}

/// The queue that encoders with `cap` pull from.
pub fn tasks_encode(cap: &Capability) -> String {
    format!("ffleet.tasks.encode.{cap}")
}

/// Re-issued attempts for `cap`: a unit handed on from a dead, stalled or failing node is on its
/// job's critical path, so encoders take from this queue before the backlog in `tasks_encode`.
pub fn tasks_retry(cap: &Capability) -> String {
    format!("ffleet.tasks.retry.{cap}")
}

/// The durable consumer of `tasks_retry(cap)`, shared like `encode_consumer`.
pub fn retry_consumer(cap: &Capability) -> String {
    format!("retry-{cap}")
}

/// The durable consumer shared by every encoder of one capability (work-queue filters must not
/// overlap, so it is one per capability, not one per worker).
pub fn encode_consumer(cap: &Capability) -> String {
    format!("encode-{cap}")
}

/// Kinds of events published under `ffleet.events.<job>.<kind>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Accepted,
    Progress,
    Completed,
    Failed,
    /// The job was stopped on request (`ffleet cancel`).
    Cancelled,
    /// An encoder finished with a unit (either outcome); consumed by the merger.
    SegmentDone,
}

impl EventKind {
    pub fn token(self) -> &'static str {
        match self {
            EventKind::Accepted => "accepted",
            EventKind::Progress => "progress",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::SegmentDone => "segment_done",
        }
    }

    pub fn from_token(s: &str) -> Option<Self> {
        [
            EventKind::Accepted,
            EventKind::Progress,
            EventKind::Completed,
            EventKind::Failed,
            EventKind::Cancelled,
            EventKind::SegmentDone,
        ]
        .into_iter()
        .find(|k| k.token() == s)
    }
}

/// Tokens that are ids' as well as subjects' (`ids` keeps them, so that no plain job is named
/// either): `TENANTS_TOKEN`, after `ffleet.events` (and `jobs`, `live`, `api.status`), under
/// which tenants' subjects lie; `UNNAMED_JOB`, in place of a job id when a request was too
/// broken to name its job.
pub use crate::ids::{TENANTS_TOKEN, UNNAMED_JOB};

impl EventKind {
    /// Whether clients see it (`segment_done` is between services).
    pub fn is_public(self) -> bool {
        self != EventKind::SegmentDone
    }
}

/// `ffleet.events.<job>.<kind>`; `job` is `None` for requests that carried no usable id. A
/// tenant's job's public events are `ffleet.events.t.<tenant>.<id>.<kind>`, where only that
/// tenant (of the clients) may subscribe; its `segment_done` stays with everyone else's, where
/// the merger consumes it.
pub fn event(job: Option<&JobId>, kind: EventKind) -> String {
    match job.and_then(JobId::tenant) {
        Some(t) if kind.is_public() => tenant_event(&t, job.map(JobId::local), kind),
        _ => {
            let job = job.map(JobId::as_str).unwrap_or(UNNAMED_JOB);
            format!("ffleet.events.{job}.{}", kind.token())
        }
    }
}

/// Tenant `tenant`'s event of `kind` about its job `local` (`None`: a request of its that
/// carried no usable id).
pub fn tenant_event(tenant: &Tenant, local: Option<&str>, kind: EventKind) -> String {
    let job = local.unwrap_or(UNNAMED_JOB);
    format!("ffleet.events.t.{tenant}.{job}.{}", kind.token())
}

/// Every public event about one job (`None`: about requests that carried no usable id).
pub fn job_events(job: Option<&JobId>) -> String {
    match job.and_then(JobId::tenant) {
        Some(t) => format!(
            "ffleet.events.t.{t}.{}.>",
            job.map_or(UNNAMED_JOB, JobId::local)
        ),
        None => {
            let job = job.map(JobId::as_str).unwrap_or(UNNAMED_JOB);
            format!("ffleet.events.{job}.>")
        }
    }
}

/// Every public event of tenant `tenant`'s jobs: what its credentials may read.
pub fn tenant_events_wildcard(tenant: &Tenant) -> String {
    format!("ffleet.events.t.{tenant}.>")
}

/// Events of `kind` about any tenant's jobs.
pub fn event_any_tenant_job(kind: EventKind) -> String {
    format!("ffleet.events.t.*.*.{}", kind.token())
}

/// What the merger consumes: every job's segment-done events.
pub fn segment_done_wildcard() -> String {
    event_any_job(EventKind::SegmentDone)
}

/// Events of `kind` about any job (and about requests too broken to name one).
pub fn event_any_job(kind: EventKind) -> String {
    format!("ffleet.events.*.{}", kind.token())
}

/// Live progress of every job.
pub fn live_wildcard() -> String {
    "ffleet.live.*".into()
}

/// Core-NATS (not stored) live progress of a job's running encodes, for progress bars; a
/// tenant's job's under its tenant (`ffleet.live.t.<tenant>.<id>`).
pub fn live_progress(job: &JobId) -> String {
    match job.tenant() {
        Some(t) => format!("ffleet.live.t.{t}.{}", job.local()),
        None => format!("ffleet.live.{job}"),
    }
}

/// Live progress of tenant `tenant`'s jobs.
pub fn tenant_live_wildcard(tenant: &Tenant) -> String {
    format!("ffleet.live.t.{tenant}.*")
}

/// Live progress of every tenant's jobs.
pub fn live_any_tenant() -> String {
    "ffleet.live.t.*.*".into()
}

/// KV key of one unit's ownership record.
pub fn segment_key(job: &JobId, unit: crate::Unit) -> String {
    format!("{job}.{unit}")
}

/// Every unit record key of `job` (a KV key filter).
pub fn segment_keys_of(job: &JobId) -> String {
    format!("{job}.>")
}

/// JetStream API and protocol subjects, for the per-role permissions a server enforces
/// (`security::roles`). The forms are the ones async-nats 0.51 sends; consumer creation also
/// has the older form without a consumer name (ephemeral and ordered consumers).
pub mod js_api {
    /// `STREAM.INFO`: looking a stream (or KV / object store bucket) up.
    pub fn stream_info(stream: &str) -> String {
        format!("$JS.API.STREAM.INFO.{stream}")
    }

    pub fn stream_create(stream: &str) -> String {
        format!("$JS.API.STREAM.CREATE.{stream}")
    }

    pub fn stream_update(stream: &str) -> String {
        format!("$JS.API.STREAM.UPDATE.{stream}")
    }

    pub fn stream_purge(stream: &str) -> String {
        format!("$JS.API.STREAM.PURGE.{stream}")
    }

    /// A stored message by sequence or last-by-subject (KV gets of replicated buckets).
    pub fn stream_msg_get(stream: &str) -> String {
        format!("$JS.API.STREAM.MSG.GET.{stream}")
    }

    /// Direct gets: the request form, and the form with the subject appended (2.9+).
    pub fn direct_get(stream: &str) -> [String; 2] {
        [
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!("$JS.API.DIRECT.GET.{stream}.>"),
        ]
    }

    /// Creating an unnamed (ephemeral, ordered) consumer, and any named one (2.9+ form
    /// `CONSUMER.CREATE.<stream>.<name>.<filter>`).
    pub fn consumer_create_any(stream: &str) -> [String; 2] {
        [
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        ]
    }

    /// Creating the named consumer `name` with no filter, or with several (2.10+).
    pub fn consumer_create_unfiltered(stream: &str, name: &str) -> String {
        format!("$JS.API.CONSUMER.CREATE.{stream}.{name}")
    }

    /// Creating the named consumer `name` with exactly `filter`.
    pub fn consumer_create(stream: &str, name: &str, filter: &str) -> String {
        format!("$JS.API.CONSUMER.CREATE.{stream}.{name}.{filter}")
    }

    pub fn consumer_info(stream: &str, name: &str) -> String {
        format!("$JS.API.CONSUMER.INFO.{stream}.{name}")
    }

    pub fn consumer_delete(stream: &str, name: &str) -> String {
        format!("$JS.API.CONSUMER.DELETE.{stream}.{name}")
    }

    /// Pulling from consumer `name`.
    pub fn consumer_next(stream: &str, name: &str) -> String {
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}")
    }

    /// Acks, naks, progress and terms of messages from consumer `name`.
    pub fn ack(stream: &str, name: &str) -> String {
        format!("$JS.ACK.{stream}.{name}.>")
    }

    /// Flow-control replies of pushed (ordered) consumers on `stream`.
    pub fn flow_control(stream: &str) -> String {
        format!("$JS.FC.{stream}.>")
    }

    /// Token standing for any consumer name.
    pub const ANY: &str = "*";
}

/// Nats-Msg-Id values: stable per logical message, so a republish after a crash is dropped by
/// the stream's duplicate window instead of doing the work twice.
pub mod msg_id {
    use crate::ids::{JobId, Unit};

    pub fn task(job: &JobId, unit: Unit, attempt: u32, stage: &str) -> String {
        format!("{job}.{unit}.{attempt}.{stage}")
    }

    pub fn dead_letter(job: &JobId, unit: Unit) -> String {
        format!("{job}.{unit}.dead")
    }

    pub fn segment_done(job: &JobId, unit: Unit, attempt: u32) -> String {
        format!("{job}.{unit}.{attempt}.done")
    }

    pub fn lifecycle(job: &JobId, kind: super::EventKind) -> String {
        format!("{job}.{}", kind.token())
    }

    pub fn progress(job: &JobId, done: usize) -> String {
        format!("{job}.progress.{done}")
    }

    /// A refused request's `failed` event: its own id (the request's stream sequence), never
    /// the job's terminal id, so a refusal cannot shadow the real job's `completed`.
    pub fn refusal(job: Option<&JobId>, stream_sequence: u64) -> String {
        let job = job.map(JobId::as_str).unwrap_or(super::UNNAMED_JOB);
        format!("{job}.refused.{stream_sequence}")
    }

    /// The request's stream sequence a refusal of `job` names (the inverse of `refusal`), or
    /// `None` when `id` is not a refusal of `job`.
    pub fn refusal_sequence(job: &JobId, id: &str) -> Option<u64> {
        id.strip_prefix(job.as_str())?
            .strip_prefix(".refused.")?
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_public_subjects_carry_its_name_and_its_own_ids() {
        let acme = Tenant::new("acme").unwrap();
        let job = JobId::scoped(&acme, &JobId::new("j1").unwrap());
        assert_eq!(
            event(Some(&job), EventKind::Completed),
            "ffleet.events.t.acme.j1.completed"
        );
        // Between services a tenant's job is like any other: the merger's filter takes it.
        assert_eq!(
            event(Some(&job), EventKind::SegmentDone),
            "ffleet.events.acme=j1.segment_done"
        );
        assert_eq!(job_events(Some(&job)), "ffleet.events.t.acme.j1.>");
        assert_eq!(live_progress(&job), "ffleet.live.t.acme.j1");
        assert_eq!(
            event(Some(&JobId::unnamed_of(&acme)), EventKind::Failed),
            "ffleet.events.t.acme._unnamed.failed"
        );
        assert_eq!(jobs_submit_tenant(&acme), "ffleet.jobs.t.acme.submit");
        assert_eq!(
            tenant_of_submit("ffleet.jobs.t.acme.submit"),
            Some(acme.clone())
        );
        for plain in [
            JOBS_SUBMIT,
            JOBS_SUBMIT_PRIVILEGED,
            "ffleet.jobs.t.a.b.submit",
        ] {
            assert_eq!(tenant_of_submit(plain), None, "{plain}");
        }
        assert_eq!(tenant_of_status(API_STATUS), Ok(None));
        assert_eq!(
            tenant_of_status(&api_status_tenant(&acme)),
            Ok(Some(acme.clone()))
        );
        assert!(tenant_of_status("ffleet.api.status.t.a=b").is_err());
        assert!(tenant_of_status("ffleet.api.statusx").is_err());
        // A plain job named like the tenants' token stays on its own, shorter subjects.
        let t = JobId::new("t").unwrap();
        assert_eq!(
            event(Some(&t), EventKind::Completed),
            "ffleet.events.t.completed"
        );
        assert_eq!(
            inbox_prefix(&tenant_identity(&acme)),
            "_INBOX_ffleet.tenant-acme"
        );
    }

    #[test]
    fn subjects_have_the_documented_shape() {
        let job = JobId::new("j1").unwrap();
        assert_eq!(
            event(Some(&job), EventKind::Completed),
            "ffleet.events.j1.completed"
        );
        assert_eq!(
            event(None, EventKind::Failed),
            "ffleet.events._unnamed.failed"
        );
        assert_eq!(tasks_encode(&Capability::cpu()), "ffleet.tasks.encode.cpu");
        assert_eq!(segment_done_wildcard(), "ffleet.events.*.segment_done");
        assert_eq!(API_STATUS, "ffleet.api.status");
        let refusal = msg_id::refusal(Some(&job), 17);
        assert_eq!(msg_id::refusal_sequence(&job, &refusal), Some(17));
        assert_eq!(msg_id::refusal_sequence(&job, "j1.terminal"), None);
        assert_eq!(
            msg_id::refusal_sequence(&JobId::new("j").unwrap(), &refusal),
            None
        );
        assert!(service_api::discovery().contains(&"$SRV.INFO.ffleet".to_owned()));
        for k in [
            "accepted",
            "progress",
            "completed",
            "failed",
            "segment_done",
        ] {
            assert_eq!(EventKind::from_token(k).unwrap().token(), k);
        }
    }
}
