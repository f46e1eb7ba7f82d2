//! The role/permission matrix. Every subject comes from `subjects`, so the permissions follow a
//! rename. Each role gets what its code uses and nothing more: an encoder reports
//! `segment_done` but cannot publish `completed`/`failed`, submit jobs or write the jobs bucket;
//! a submitter publishes requests, asks the scheduler for a job's status, asks a merger to
//! cancel a job and reads job events, with no KV, stream or consumer API except on the media
//! object store.

use ffleet_protocol::Tenant;
use ffleet_protocol::subjects::{self, EventKind, js_api};
use serde::{Deserialize, Serialize};

/// The identity a process connects as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Other systems and `ffleet submit`: publish job requests, ask for a job's status, cancel
    /// a job, read job events.
    Submitter,
    Splitter,
    Scheduler,
    Encoder,
    Merger,
    /// Operators: provisions streams and buckets, reads state (`ffleet status`, `workers`),
    /// submits with uncapped priority.
    Admin,
    /// The dashboard's reads (`ffleet dashboard`): watches and gets of the jobs, unit-record
    /// and workers buckets, and nothing else; it publishes nothing but those reads.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Submitter,
        Role::Splitter,
        Role::Scheduler,
        Role::Encoder,
        Role::Merger,
        Role::Admin,
        Role::Viewer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Splitter => "splitter",
            Role::Scheduler => "scheduler",
            Role::Encoder => "encoder",
            Role::Merger => "merger",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    /// The role a service of this name runs as (`SERVICE` of each service crate).
    pub fn of_service(service: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == service)
    }

    /// Whether this role may read the jobs bucket (clients following a job fall back on it).
    pub fn reads_job_records(self) -> bool {
        !matches!(self, Role::Submitter | Role::Encoder)
    }

    /// Whether this role may purge the media stream: the services that remove a job's media when
    /// it ends, and the admin. A purge names its subject in its body, so the grant is the whole
    /// stream's: never a client's or an encoder's.
    pub fn purges_media(self) -> bool {
        matches!(self, Role::Splitter | Role::Merger | Role::Admin)
    }

    /// Whether this role reaches the fleet's scratch bucket (`subjects::scratch_bucket`): the
    /// services that make and read cuts and encoded units, and the admin who provisions it.
    /// Never a client: what clients store and fetch is in the media bucket.
    pub fn uses_scratch(self) -> bool {
        matches!(
            self,
            Role::Splitter | Role::Encoder | Role::Merger | Role::Admin
        )
    }

    /// Whether this role came after the first secured release: a secrets directory made
    /// before it may lack its credentials, and works on without them.
    pub fn added_later(self) -> bool {
        self == Role::Viewer
    }

    /// Whether this role may create streams and buckets.
    pub fn provisions(self) -> bool {
        self == Role::Admin
    }

    /// The permissions with the default media bucket.
    pub fn permissions(self) -> Permissions {
        self.permissions_for(subjects::BUCKET_MEDIA)
    }

    /// The permissions with `media` as the object store bucket (`storage.bucket`).
    pub fn permissions_for(self, media: &str) -> Permissions {
        let mut g = Permissions {
            media_bucket: media.to_owned(),
            ..Permissions::default()
        };
        // Its own inbox prefix only (`nats.role` sets it on the connection): never `_INBOX.>`.
        g.sub(subjects::inbox_wildcard(self.name()));
        match self {
            Role::Submitter => {
                g.publish(subjects::JOBS_SUBMIT);
                // Asking the fleet how a job stands: the only read of job state this role has.
                g.publish(subjects::API_STATUS);
                // Stopping a job (`ffleet cancel`): plain ids only, so no tenant's job.
                g.publish(subjects::API_CANCEL);
                // Running a failed or cancelled job again (`ffleet retry`): plain ids only.
                g.publish(subjects::API_RETRY);
                for k in PUBLIC_EVENTS {
                    g.sub(subjects::event_any_job(k));
                }
                g.sub(subjects::live_wildcard());
                g.media(self.purges_media(), self.uses_scratch());
            }
            Role::Admin => {
                g.publish(subjects::JOBS_SUBMIT);
                g.publish(subjects::JOBS_SUBMIT_PRIVILEGED);
                g.publish(subjects::API_STATUS);
                g.publish(subjects::API_CANCEL);
                // An operator may stop any tenant's job (`ffleet cancel <tenant>=<id>`).
                g.publish(subjects::api_cancel_any_tenant());
                // ...and run any job again (`ffleet retry <tenant>=<id>`).
                g.publish(subjects::API_RETRY);
                g.publish(subjects::api_retry_any_tenant());
                // Changing a queued job's priority (`ffleet priority`).
                g.publish(subjects::API_PRIORITY);
                // Draining and undraining encoder nodes (`ffleet drain`).
                g.publish(subjects::node_control_wildcard());
                // `nats micro ls/info/stats` on ffleet's service.
                for d in subjects::service_api::discovery() {
                    g.publish(d);
                }
                let scratch = subjects::object_stream(&subjects::scratch_bucket(media));
                for s in all_streams(media).into_iter().chain([scratch]) {
                    g.publish(js_api::stream_info(&s));
                    g.publish(js_api::stream_create(&s));
                    g.publish(js_api::stream_update(&s));
                }
                for b in BUCKETS {
                    g.kv_read(b);
                    g.kv_watch(b);
                }
                // Reading the retained streams (events for other systems, dead letters).
                g.events_reader();
                g.reader(subjects::STREAM_DEAD);
                g.sub(subjects::events_wildcard());
                g.sub(subjects::live_wildcard());
                g.sub(subjects::live_any_tenant());
                g.sub(subjects::dead_wildcard());
                g.media(self.purges_media(), self.uses_scratch());
            }
            Role::Splitter => {
                g.lookup_all();
                // The only consumer of the jobs stream (plain and privileged requests, under
                // one filter, several or none).
                g.durable(subjects::STREAM_JOBS, js_api::ANY, ">");
                g.publish(js_api::consumer_create_unfiltered(
                    subjects::STREAM_JOBS,
                    js_api::ANY,
                ));
                g.kv_read(subjects::BUCKET_JOBS);
                g.kv_write(subjects::BUCKET_JOBS);
                g.kv_read(subjects::BUCKET_SEGMENTS);
                g.kv_write(subjects::BUCKET_SEGMENTS);
                // Tenants' jobs in flight: admitted against their quota here.
                g.kv_read(subjects::BUCKET_TENANTS);
                g.kv_write(subjects::BUCKET_TENANTS);
                // The pool's slots, which size the segments: from the scheduler's lease, else
                // from the heartbeats.
                g.kv_read(subjects::BUCKET_LEASES);
                g.kv_read(subjects::BUCKET_WORKERS);
                g.kv_watch(subjects::BUCKET_WORKERS);
                g.publish(subjects::TASKS_PLAN);
                for k in [EventKind::Accepted, EventKind::Completed, EventKind::Failed] {
                    g.publish(subjects::event_any_job(k));
                    g.publish(subjects::event_any_tenant_job(k));
                }
                // Word that a job ended: a split under way for it stops.
                g.sub(subjects::jobs_ended());
                // The retry service (`retry`): its endpoints (queue subscriptions), the service
                // API's discovery verbs, one answer to each request (`allow_responses`). A
                // retry is a new request, on the subject its job's first came in by (a plain
                // job's on the privileged one: its priority was admitted once already).
                g.sub(subjects::API_RETRY);
                g.sub(subjects::api_retry_any_tenant());
                for d in subjects::service_api::discovery() {
                    g.sub(d);
                }
                g.responses = true;
                g.publish(subjects::JOBS_SUBMIT_PRIVILEGED);
                g.publish(subjects::jobs_submit_any_tenant());
                // A retry's units reused from the job it runs again are reported done as an
                // encoder reports them. A splitter writes unit records already, and the merger
                // counts a report only if the record agrees, so this grants no new power.
                g.publish(subjects::event_any_job(EventKind::SegmentDone));
                g.media(self.purges_media(), self.uses_scratch());
            }
            Role::Scheduler => {
                g.lookup_all();
                g.durable(
                    subjects::STREAM_TASKS,
                    subjects::CONSUMER_SCHEDULER,
                    subjects::TASKS_PLAN,
                );
                // Queue depths of the encoders' consumers (room to release, gauges, reconcile).
                g.publish(js_api::consumer_info(subjects::STREAM_TASKS, js_api::ANY));
                g.kv_read(subjects::BUCKET_JOBS);
                g.kv_watch(subjects::BUCKET_JOBS);
                g.kv_write(subjects::BUCKET_JOBS);
                g.kv_read(subjects::BUCKET_SEGMENTS);
                g.kv_write(subjects::BUCKET_SEGMENTS);
                g.kv_read(subjects::BUCKET_WORKERS);
                g.kv_watch(subjects::BUCKET_WORKERS);
                g.kv_read(subjects::BUCKET_LEASES);
                g.kv_write(subjects::BUCKET_LEASES);
                // A job it fails leaves its tenant's jobs in flight.
                g.kv_read(subjects::BUCKET_TENANTS);
                g.kv_write(subjects::BUCKET_TENANTS);
                // What finished jobs leave in the record buckets, purged by subject after a
                // while: a scheduler writes both buckets already.
                for bucket in [subjects::BUCKET_SEGMENTS, subjects::BUCKET_JOBS] {
                    g.publish(js_api::stream_purge(&subjects::kv_stream(bucket)));
                }
                g.publish(subjects::TASKS_PLAN);
                g.publish(subjects::tasks_encode_wildcard());
                g.publish(subjects::tasks_retry_wildcard());
                g.publish(subjects::event_any_job(EventKind::Failed));
                g.publish(subjects::event_any_tenant_job(EventKind::Failed));
                // Telling nodes to drop the units of jobs that ended (`drops`): fire and
                // forget, no answer.
                g.publish(subjects::node_drop_wildcard());
                g.publish(subjects::jobs_ended());
                // A done unit whose report was lost gets it sent again, when the merger has
                // nothing in hand. A scheduler can write unit records already, and the merger
                // counts a report only if the record agrees, so this grants no new power.
                g.publish(subjects::event_any_job(EventKind::SegmentDone));
                g.publish(js_api::consumer_info(
                    subjects::STREAM_EVENTS,
                    subjects::CONSUMER_MERGER,
                ));
                // The job status service: its endpoint (a queue subscription), the service
                // API's discovery verbs, and one answer to each request received (to the
                // asker's inbox, which no grant names: `allow_responses`).
                g.sub(subjects::API_STATUS);
                g.sub(subjects::api_status_any_tenant());
                // The operator's priority changes, on the same service.
                g.sub(subjects::API_PRIORITY);
                for d in subjects::service_api::discovery() {
                    g.sub(d);
                }
                g.responses = true;
                // A job without a record may have had its request refused: the refusal is
                // only in the events stream (read by subject, the newest).
                g.publish(js_api::stream_msg_get(subjects::STREAM_EVENTS));
            }
            Role::Encoder => {
                g.lookup_all();
                let tasks = subjects::STREAM_TASKS;
                // One shared durable per capability, named after it: capabilities are not known
                // here, so any name, but only with an encode or retry filter, and never the
                // scheduler's plan consumer.
                for filter in [
                    subjects::tasks_encode_wildcard(),
                    subjects::tasks_retry_wildcard(),
                ] {
                    g.publish(js_api::consumer_create(tasks, js_api::ANY, &filter));
                }
                g.publish(js_api::consumer_info(tasks, js_api::ANY));
                g.publish(js_api::consumer_next(tasks, js_api::ANY));
                g.publish(js_api::ack(tasks, js_api::ANY));
                g.deny(js_api::consumer_next(tasks, subjects::CONSUMER_SCHEDULER));
                g.deny(js_api::ack(tasks, subjects::CONSUMER_SCHEDULER));
                g.kv_read(subjects::BUCKET_WORKERS);
                g.kv_write(subjects::BUCKET_WORKERS);
                g.kv_read(subjects::BUCKET_SEGMENTS);
                g.kv_write(subjects::BUCKET_SEGMENTS);
                g.publish(subjects::event_any_job(EventKind::SegmentDone));
                g.publish(subjects::live_wildcard());
                g.publish(subjects::live_any_tenant());
                // Units handed back for re-planning, and units out of retries.
                g.publish(subjects::TASKS_PLAN);
                g.publish(subjects::dead_wildcard());
                // The operator's drain requests (its node's own subject; node ids are not known
                // here), each answered once to the asker's inbox (`allow_responses`).
                g.sub(subjects::node_control_wildcard());
                g.responses = true;
                // The word that a job ended: to every node, and to its node's own subject.
                g.sub(subjects::node_drop_wildcard());
                g.sub(subjects::jobs_ended());
                g.media(self.purges_media(), self.uses_scratch());
            }
            Role::Viewer => {
                // Its buckets' lookups and the media stores' (a connection opens them), then
                // gets and watches: a live picture, no writes, no requests.
                g.lookup_all();
                for b in [
                    subjects::BUCKET_JOBS,
                    subjects::BUCKET_SEGMENTS,
                    subjects::BUCKET_WORKERS,
                ] {
                    g.kv_read(b);
                    g.kv_watch(b);
                }
                // A job's events on its page, and the segments done in the last minutes
                // (throughput): read from the stream, never subscribed to as they are sent.
                g.events_reader();
            }
            Role::Merger => {
                g.lookup_all();
                g.durable(
                    subjects::STREAM_EVENTS,
                    subjects::CONSUMER_MERGER,
                    &subjects::segment_done_wildcard(),
                );
                g.kv_read(subjects::BUCKET_JOBS);
                g.kv_write(subjects::BUCKET_JOBS);
                g.kv_read(subjects::BUCKET_SEGMENTS);
                g.kv_write(subjects::BUCKET_SEGMENTS);
                // A job it ends leaves its tenant's jobs in flight.
                g.kv_read(subjects::BUCKET_TENANTS);
                g.kv_write(subjects::BUCKET_TENANTS);
                for k in [
                    EventKind::Progress,
                    EventKind::Completed,
                    EventKind::Failed,
                    EventKind::Cancelled,
                ] {
                    g.publish(subjects::event_any_job(k));
                    g.publish(subjects::event_any_tenant_job(k));
                }
                // The job cancel service (`cancel`): its endpoints (queue subscriptions), the
                // service API's discovery verbs, one answer to each request (`allow_responses`).
                g.sub(subjects::API_CANCEL);
                g.sub(subjects::api_cancel_any_tenant());
                for d in subjects::service_api::discovery() {
                    g.sub(d);
                }
                g.responses = true;
                // Telling every node at once that a job it cancelled ended; and whether the
                // events stream holds a cancelled job's event yet (a repair publishes it
                // only if not). It reads the events stream already.
                g.publish(subjects::jobs_ended());
                g.publish(js_api::stream_msg_get(subjects::STREAM_EVENTS));
                // ...and hearing it, so a merge under way for a cancelled job stops.
                g.sub(subjects::jobs_ended());
                g.media(self.purges_media(), self.uses_scratch());
            }
        }
        g
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?} (expected one of {})",
                    Role::ALL.map(Role::name).join(", ")
                )
            })
    }
}

/// The permissions of tenant `tenant`'s submitter identity: its own submit and status subjects,
/// its own jobs' public events and live progress, replies under its own inbox prefix. Nothing
/// of the plain submitter's, no other tenant's, and no JetStream API at all (its media is files
/// under its directory of the roots: the media bucket is one namespace).
pub fn tenant_permissions(tenant: &Tenant) -> Permissions {
    let mut g = Permissions::default();
    g.sub(subjects::inbox_wildcard(&subjects::tenant_identity(tenant)));
    g.publish(subjects::jobs_submit_tenant(tenant));
    g.publish(subjects::api_status_tenant(tenant));
    g.publish(subjects::api_cancel_tenant(tenant));
    g.publish(subjects::api_retry_tenant(tenant));
    for k in PUBLIC_EVENTS {
        g.sub(subjects::tenant_event(tenant, Some("*"), k));
    }
    g.sub(subjects::tenant_live_wildcard(tenant));
    g
}

/// The events other systems read (`segment_done` is internal to the fleet).
const PUBLIC_EVENTS: [EventKind; 5] = [
    EventKind::Accepted,
    EventKind::Progress,
    EventKind::Completed,
    EventKind::Failed,
    EventKind::Cancelled,
];

const STREAMS: [&str; 4] = [
    subjects::STREAM_JOBS,
    subjects::STREAM_TASKS,
    subjects::STREAM_EVENTS,
    subjects::STREAM_DEAD,
];

const BUCKETS: [&str; 5] = [
    subjects::BUCKET_JOBS,
    subjects::BUCKET_SEGMENTS,
    subjects::BUCKET_WORKERS,
    subjects::BUCKET_LEASES,
    subjects::BUCKET_TENANTS,
];

/// Every stream ffleet provisions, KV and object store backing streams included, but the
/// scratch bucket's: that one is granted with the bucket (`Permissions::media`) to the roles
/// that use it, and to the admin, so no other role even lists the names of its objects.
fn all_streams(media: &str) -> Vec<String> {
    STREAMS
        .iter()
        .map(|s| s.to_string())
        .chain(BUCKETS.iter().map(|b| subjects::kv_stream(b)))
        .chain([
            subjects::object_stream(media),
            subjects::media_index_stream(media),
        ])
        .collect()
}

/// Subjects a role may publish to (minus `publish_deny`) and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe: Vec<String>,
    /// The media object store bucket these permissions name (the scratch bucket's name follows
    /// from it: `subjects::scratch_bucket`).
    pub media_bucket: String,
    /// May answer the requests it receives: one reply to each request's reply subject, for the
    /// server's default two minutes (`allow_responses`), whatever inbox the asker uses.
    pub responses: bool,
}

impl Permissions {
    fn publish(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !self.publish.contains(&s) {
            self.publish.push(s);
        }
    }

    fn deny(&mut self, s: impl Into<String>) {
        self.publish_deny.push(s.into());
    }

    fn sub(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !self.subscribe.contains(&s) {
            self.subscribe.push(s);
        }
    }

    /// Looking up every stream and bucket at start (a lookup that finds one needs no create
    /// right).
    fn lookup_all(&mut self) {
        for s in all_streams(&self.media_bucket.clone()) {
            self.publish(js_api::stream_info(&s));
        }
    }

    /// Gets by key: direct gets on single-replica buckets, stream message gets on replicated
    /// ones.
    fn kv_read(&mut self, bucket: &str) {
        let s = subjects::kv_stream(bucket);
        self.publish(js_api::stream_info(&s));
        self.publish(js_api::stream_msg_get(&s));
        for d in js_api::direct_get(&s) {
            self.publish(d);
        }
    }

    /// Key listings and watches: ordered consumers pushed to an inbox, with flow control.
    fn kv_watch(&mut self, bucket: &str) {
        let s = subjects::kv_stream(bucket);
        for c in js_api::consumer_create_any(&s) {
            self.publish(c);
        }
        self.publish(js_api::flow_control(&s));
        // An ordered consumer rebuilt after a reconnect deletes the one it replaces; without
        // this the old one lingers until its inactivity threshold and the server logs a
        // violation. KV streams hold no durable consumers, so this can end only watches.
        self.publish(js_api::consumer_delete(&s, js_api::ANY));
    }

    /// Puts, creates, revision-checked updates and deletes.
    fn kv_write(&mut self, bucket: &str) {
        self.publish(subjects::kv_wildcard(bucket));
    }

    /// A durable pull consumer `name` (or any name: `js_api::ANY`) filtered on `filter`.
    fn durable(&mut self, stream: &str, name: &str, filter: &str) {
        self.publish(js_api::consumer_create(stream, name, filter));
        self.publish(js_api::consumer_info(stream, name));
        self.publish(js_api::consumer_next(stream, name));
        self.publish(js_api::ack(stream, name));
    }

    /// Reading a retained stream through ordered consumers.
    fn reader(&mut self, stream: &str) {
        for c in js_api::consumer_create_any(stream) {
            self.publish(c);
        }
        self.publish(js_api::consumer_info(stream, js_api::ANY));
        self.publish(js_api::consumer_next(stream, js_api::ANY));
        self.publish(js_api::consumer_delete(stream, js_api::ANY));
        self.publish(js_api::flow_control(stream));
        self.publish(js_api::stream_msg_get(stream));
    }

    /// Reading the events stream. A reader's consumers are ordered ones with generated names,
    /// so the grant is any name: the merger's durable, the one consumer of this stream that is
    /// work, is held back by name (pulling it would take reports from the merger, deleting it
    /// would lose them).
    fn events_reader(&mut self) {
        self.reader(subjects::STREAM_EVENTS);
        let (events, merger) = (subjects::STREAM_EVENTS, subjects::CONSUMER_MERGER);
        self.deny(js_api::consumer_next(events, merger));
        self.deny(js_api::ack(events, merger));
        self.deny(js_api::consumer_delete(events, merger));
        // Creating a consumer of that name would update the merger's: its filter, its limits.
        self.deny(js_api::consumer_create_unfiltered(events, merger));
        self.deny(format!(
            "{}.>",
            js_api::consumer_create_unfiltered(events, merger)
        ));
    }

    /// The media object store: chunks and metadata written and read (message gets: no consumer
    /// on the media stream for anyone, since a consumer can be pointed at any subject). With
    /// `purge`, an object's chunks are purged when it is deleted and a job's index entries at
    /// its cleanup: a purge request names its subject only in its body, so the grant is the
    /// whole stream's, and clients do not get it.
    ///
    /// With `scratch`, the same on the fleet's scratch bucket, which holds every job's cuts and
    /// encoded units: no client gets it.
    fn media(&mut self, purge: bool, scratch: bool) {
        let media = self.media_bucket.clone();
        self.bucket(&media, purge, true);
        if scratch {
            self.bucket(&subjects::scratch_bucket(&media), purge, false);
        }
    }

    /// `media`'s grants on one object store bucket, `b`, and on its job index where it has one
    /// (the scratch bucket's subjects name each object's job instead).
    fn bucket(&mut self, b: &str, purge: bool, index: bool) {
        let s = subjects::object_stream(b);
        for w in subjects::object_wildcards(b) {
            self.publish(w);
        }
        self.publish(js_api::stream_info(&s));
        self.publish(js_api::stream_msg_get(&s));
        for d in js_api::direct_get(&s) {
            self.publish(d);
        }
        if purge {
            self.publish(js_api::stream_purge(&s));
        }
        if !index {
            return;
        }
        // The index of which job each scratch object belongs to: recorded on upload, read
        // (stream info with a subject filter) and purged at a job's cleanup.
        let index = subjects::media_index_stream(b);
        self.publish(subjects::media_index_wildcard(b));
        self.publish(js_api::stream_info(&index));
        if purge {
            self.publish(js_api::stream_purge(&index));
        }
    }

    /// These permissions with what a process of an earlier release (0.2 and before) needs
    /// beside them, for the length of a rolling upgrade (`ffleet secrets auth --upgrade`):
    /// replies on the default `_INBOX.>`, and on the media stream the consumers its reader
    /// creates and the purges every media role made. Each is a hole this release closes, so
    /// the strict file goes back once no earlier process runs.
    pub fn with_upgrade_grants(mut self) -> Self {
        self.sub(subjects::INBOX_WILDCARD);
        let b = self.media_bucket.clone();
        let obj = subjects::object_stream(&b);
        if self.may_publish(&subjects::object_chunks(&b, "x")) {
            for c in js_api::consumer_create_any(&obj) {
                self.publish(c);
            }
            self.publish(js_api::flow_control(&obj));
            self.publish(js_api::stream_purge(&obj));
            self.publish(js_api::stream_purge(&subjects::media_index_stream(&b)));
        }
        self
    }

    /// Whether publishing to the literal subject `subject` is allowed (NATS token matching).
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| matches(p, subject))
            && !self.publish_deny.iter().any(|p| matches(p, subject))
    }

    /// Whether subscribing to the literal subject `subject` is allowed.
    pub fn may_subscribe(&self, subject: &str) -> bool {
        self.subscribe.iter().any(|p| matches(p, subject))
    }
}

/// NATS subject matching: `*` is one token, a trailing `>` one or more.
fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_reaches_its_own_jobs_only() {
        let (acme, rival) = (Tenant::new("acme").unwrap(), Tenant::new("rival").unwrap());
        let p = tenant_permissions(&acme);
        let job = |t: &Tenant| JobId::scoped(t, &JobId::new("j").unwrap());
        assert!(p.may_publish(&subjects::jobs_submit_tenant(&acme)));
        assert!(p.may_publish(&subjects::api_status_tenant(&acme)));
        for kind in PUBLIC_EVENTS {
            assert!(p.may_subscribe(&subjects::event(Some(&job(&acme)), kind)));
            assert!(!p.may_subscribe(&subjects::event(Some(&job(&rival)), kind)));
            assert!(!p.may_publish(&subjects::event(Some(&job(&acme)), kind)));
        }
        assert!(p.may_subscribe(&subjects::live_progress(&job(&acme))));
        assert!(!p.may_subscribe(&subjects::live_progress(&job(&rival))));
        for denied in [
            subjects::JOBS_SUBMIT.to_owned(),
            subjects::JOBS_SUBMIT_PRIVILEGED.to_owned(),
            subjects::API_STATUS.to_owned(),
            subjects::jobs_submit_tenant(&rival),
            subjects::api_status_tenant(&rival),
            js_api::stream_info(subjects::STREAM_JOBS),
            subjects::object_meta(subjects::BUCKET_MEDIA, "eA"),
        ] {
            assert!(!p.may_publish(&denied), "{denied}");
        }
        let plain = JobId::new("j").unwrap();
        assert!(!p.may_subscribe(&subjects::event(Some(&plain), EventKind::Completed)));
        assert!(!p.may_subscribe(subjects::INBOX_WILDCARD));
        assert!(!p.may_subscribe(&subjects::inbox_wildcard("submitter")));
        // And the plain submitter reaches no tenant's.
        let s = Role::Submitter.permissions();
        assert!(!s.may_subscribe(&subjects::event(Some(&job(&acme)), EventKind::Completed)));
        assert!(!s.may_publish(&subjects::jobs_submit_tenant(&acme)));
        assert!(!s.may_publish(&subjects::api_status_tenant(&acme)));
        // The services that speak for jobs do for tenants' too.
        for (role, kind) in [
            (Role::Splitter, EventKind::Accepted),
            (Role::Merger, EventKind::Completed),
            (Role::Scheduler, EventKind::Failed),
        ] {
            assert!(
                role.permissions()
                    .may_publish(&subjects::event(Some(&job(&acme)), kind)),
                "{role}"
            );
        }
        assert!(
            Role::Encoder
                .permissions()
                .may_publish(&subjects::live_progress(&job(&acme)))
        );
    }
    use ffleet_protocol::ids::{Capability, JobId};
    use ffleet_protocol::subjects::event;

    /// Cancelling: clients ask (a tenant on its own subject only), mergers answer and alone
    /// publish `cancelled`; the scheduler alone tells nodes to drop an ended job's units, and
    /// only encoders hear it.
    #[test]
    fn clients_ask_for_cancels_mergers_answer_and_only_the_scheduler_drops_units() {
        let job = JobId::new("j1").unwrap();
        let acme = Tenant::new("acme").unwrap();
        let other = Tenant::new("other").unwrap();
        let node = ffleet_protocol::NodeId::new("n1").unwrap();
        for r in [Role::Submitter, Role::Admin] {
            let p = r.permissions();
            assert!(p.may_publish(subjects::API_CANCEL), "{r}");
            assert_eq!(
                p.may_publish(&subjects::api_cancel_tenant(&acme)),
                r == Role::Admin,
                "{r}"
            );
            assert!(!p.may_publish(&subjects::node_drop(&node)), "{r}");
            assert!(!p.may_subscribe(subjects::API_CANCEL), "{r}");
        }
        let t = tenant_permissions(&acme);
        assert!(t.may_publish(&subjects::api_cancel_tenant(&acme)));
        assert!(!t.may_publish(&subjects::api_cancel_tenant(&other)));
        assert!(!t.may_publish(subjects::API_CANCEL));
        let tenant_job = JobId::scoped(&acme, &JobId::plain("j1").unwrap());
        assert!(t.may_subscribe(&event(Some(&tenant_job), EventKind::Cancelled)));
        assert!(!t.may_subscribe(&event(Some(&job), EventKind::Cancelled)));
        assert!(
            Role::Submitter
                .permissions()
                .may_subscribe(&event(Some(&job), EventKind::Cancelled))
        );
        // Priorities are the operator's to change, the schedulers' to apply.
        for r in Role::ALL {
            let p = r.permissions();
            assert_eq!(
                p.may_publish(subjects::API_PRIORITY),
                r == Role::Admin,
                "{r}"
            );
            assert_eq!(
                p.may_subscribe(subjects::API_PRIORITY),
                r == Role::Scheduler,
                "{r}"
            );
        }
        assert!(!t.may_publish(subjects::API_PRIORITY));
        let m = Role::Merger.permissions();
        assert!(m.may_subscribe(subjects::API_CANCEL));
        assert!(m.may_subscribe(&subjects::api_cancel_any_tenant()));
        assert!(m.responses);
        for r in Role::ALL {
            let p = r.permissions();
            assert_eq!(
                p.may_publish(&event(Some(&job), EventKind::Cancelled)),
                r == Role::Merger,
                "{r}"
            );
            assert_eq!(
                p.may_publish(&subjects::node_drop(&node)),
                r == Role::Scheduler,
                "{r}"
            );
            assert_eq!(
                p.may_subscribe(&subjects::node_drop(&node)),
                r == Role::Encoder,
                "{r}"
            );
            assert_eq!(
                p.may_publish(&subjects::jobs_ended()),
                matches!(r, Role::Scheduler | Role::Merger),
                "{r}"
            );
            assert_eq!(
                p.may_subscribe(&subjects::jobs_ended()),
                matches!(r, Role::Encoder | Role::Splitter | Role::Merger),
                "{r}"
            );
        }
    }

    /// Retrying: clients ask (a tenant on its own subject only), splitters answer and alone
    /// resubmit; the submit subjects a splitter may publish on are the privileged one and the
    /// tenants', never the plain one a submitter uses.
    #[test]
    fn clients_ask_for_retries_and_splitters_resubmit() {
        let acme = Tenant::new("acme").unwrap();
        let other = Tenant::new("other").unwrap();
        for r in Role::ALL {
            let p = r.permissions();
            assert_eq!(
                p.may_publish(subjects::API_RETRY),
                matches!(r, Role::Submitter | Role::Admin),
                "{r}"
            );
            assert_eq!(
                p.may_publish(&subjects::api_retry_tenant(&acme)),
                r == Role::Admin,
                "{r}"
            );
            assert_eq!(
                p.may_subscribe(subjects::API_RETRY),
                r == Role::Splitter,
                "{r}"
            );
            assert_eq!(
                p.may_subscribe(&subjects::api_retry_tenant(&acme)),
                r == Role::Splitter,
                "{r}"
            );
        }
        let t = tenant_permissions(&acme);
        assert!(t.may_publish(&subjects::api_retry_tenant(&acme)));
        assert!(!t.may_publish(&subjects::api_retry_tenant(&other)));
        assert!(!t.may_publish(subjects::API_RETRY));
        let s = Role::Splitter.permissions();
        assert!(s.may_publish(subjects::JOBS_SUBMIT_PRIVILEGED));
        assert!(s.may_publish(&subjects::jobs_submit_tenant(&acme)));
        assert!(!s.may_publish(subjects::JOBS_SUBMIT));
        assert!(s.may_publish(&event(
            Some(&JobId::new("j1").unwrap()),
            EventKind::SegmentDone
        )));
        assert!(!s.may_publish(&event(
            Some(&JobId::new("j1").unwrap()),
            EventKind::Cancelled
        )));
    }

    /// The dashboard's role reads and watches, and publishes nothing but the JetStream API
    /// calls of those reads: no request, event, task, KV write or object.
    #[test]
    fn the_viewer_only_reads() {
        let p = Role::Viewer.permissions();
        for pattern in &p.publish {
            assert!(
                pattern.starts_with("$JS.API.") || pattern.starts_with("$JS.FC."),
                "{pattern}"
            );
        }
        assert!(!p.responses);
        for s in [
            subjects::JOBS_SUBMIT,
            subjects::API_CANCEL,
            subjects::API_RETRY,
            subjects::API_STATUS,
            subjects::TASKS_PLAN,
        ] {
            assert!(!p.may_publish(s), "{s}");
        }
        assert!(!p.may_publish(&format!("$KV.{}.j1", subjects::BUCKET_JOBS)));
        assert!(p.may_publish(&js_api::stream_msg_get(&subjects::kv_stream(
            subjects::BUCKET_JOBS
        ))));
        assert!(!p.may_subscribe(&subjects::events_wildcard()));
        // It reads the events stream, but never takes the merger's reports.
        let events = subjects::STREAM_EVENTS;
        assert!(p.may_publish(&js_api::stream_msg_get(events)));
        for denied in [
            js_api::consumer_next(events, subjects::CONSUMER_MERGER),
            js_api::ack(events, subjects::CONSUMER_MERGER),
            js_api::consumer_delete(events, subjects::CONSUMER_MERGER),
            js_api::consumer_create_unfiltered(events, subjects::CONSUMER_MERGER),
            js_api::consumer_create(
                events,
                subjects::CONSUMER_MERGER,
                &subjects::segment_done_wildcard(),
            ),
        ] {
            assert!(!p.may_publish(&denied), "{denied}");
        }
    }

    #[test]
    fn encoder_reports_segments_but_cannot_end_jobs_or_submit() {
        let p = Role::Encoder.permissions();
        let job = JobId::new("j1").unwrap();
        assert!(p.may_publish(&event(Some(&job), EventKind::SegmentDone)));
        assert!(!p.may_publish(&event(Some(&job), EventKind::Completed)));
        assert!(!p.may_publish(&event(Some(&job), EventKind::Failed)));
        assert!(!p.may_publish(subjects::JOBS_SUBMIT));
        assert!(!p.may_publish(&format!("$KV.{}.j1", subjects::BUCKET_JOBS)));
        let cpu = Capability::cpu();
        assert!(p.may_publish(&js_api::consumer_next(
            subjects::STREAM_TASKS,
            &subjects::encode_consumer(&cpu)
        )));
        assert!(!p.may_publish(&js_api::consumer_next(
            subjects::STREAM_TASKS,
            subjects::CONSUMER_SCHEDULER
        )));
        assert!(p.may_publish(&js_api::consumer_create(
            subjects::STREAM_TASKS,
            &subjects::encode_consumer(&cpu),
            &subjects::tasks_encode(&cpu)
        )));
        assert!(!p.may_publish(&js_api::consumer_create(
            subjects::STREAM_TASKS,
            "x",
            subjects::TASKS_PLAN
        )));
    }

    #[test]
    fn submitter_has_no_kv_stream_or_consumer_api_beyond_media() {
        let p = Role::Submitter.permissions();
        assert!(p.may_publish(subjects::JOBS_SUBMIT));
        assert!(!p.may_publish(subjects::JOBS_SUBMIT_PRIVILEGED));
        for s in &p.publish {
            assert!(
                !s.starts_with("$JS.API")
                    || s.contains(&subjects::object_stream(subjects::BUCKET_MEDIA))
                    || s.contains(&subjects::media_index_stream(subjects::BUCKET_MEDIA)),
                "{s}"
            );
            assert!(!s.starts_with("$KV"), "{s}");
        }
        let job = JobId::new("j1").unwrap();
        assert!(p.may_subscribe(&event(Some(&job), EventKind::Completed)));
        assert!(!p.may_subscribe(&event(Some(&job), EventKind::SegmentDone)));
    }

    /// Exactly the roles that make and read the fleet's media reach the scratch bucket (its
    /// chunks, metadata, gets and stream info, which would list its object names); no client,
    /// no tenant, and no index beside it.
    #[test]
    fn only_the_roles_that_use_it_reach_the_scratch_bucket() {
        let scratch = subjects::scratch_bucket(subjects::BUCKET_MEDIA);
        let stream = subjects::object_stream(&scratch);
        let reach = |p: &Permissions| {
            [
                subjects::object_chunks(&scratch, "j1.nuid"),
                subjects::object_meta(&scratch, "j1.bmFtZQ"),
                js_api::stream_msg_get(&stream),
                js_api::stream_info(&stream),
            ]
            .into_iter()
            .chain(js_api::direct_get(&stream))
            .map(|s| p.may_publish(&s))
            .collect::<Vec<_>>()
        };
        for r in Role::ALL {
            let p = r.permissions();
            assert!(
                reach(&p).iter().all(|&may| may == r.uses_scratch()),
                "{r}: {:?}",
                reach(&p)
            );
            assert!(
                !p.may_publish(&js_api::stream_info(&subjects::media_index_stream(
                    &scratch
                ))),
                "{r}"
            );
            assert!(
                !p.may_publish(&js_api::stream_purge(&stream))
                    || (r.uses_scratch() && r.purges_media()),
                "{r}"
            );
        }
        assert!(!Role::Submitter.uses_scratch() && !Role::Scheduler.uses_scratch());
        let tenant = tenant_permissions(&Tenant::new("acme").unwrap());
        assert!(reach(&tenant).iter().all(|&may| !may));
        assert!(
            Role::Admin
                .permissions()
                .may_publish(&js_api::stream_create(&stream))
        );
    }

    #[test]
    fn only_admin_submits_privileged_and_provisions() {
        for r in Role::ALL {
            let p = r.permissions();
            // The splitter resubmits a plain job's retry there.
            assert_eq!(
                p.may_publish(subjects::JOBS_SUBMIT_PRIVILEGED),
                matches!(r, Role::Admin | Role::Splitter),
                "{r}"
            );
            assert_eq!(
                p.may_publish(&js_api::stream_create(subjects::STREAM_JOBS)),
                r.provisions(),
                "{r}"
            );
        }
    }

    #[test]
    fn watchers_may_replace_their_watches_but_not_delete_durables() {
        let p = Role::Scheduler.permissions();
        let workers = subjects::kv_stream(subjects::BUCKET_WORKERS);
        assert!(p.may_publish(&js_api::consumer_delete(&workers, "QalpOOCm")));
        for r in Role::ALL {
            let p = r.permissions();
            for stream in [subjects::STREAM_TASKS, subjects::STREAM_JOBS] {
                assert!(
                    !p.may_publish(&js_api::consumer_delete(
                        stream,
                        subjects::CONSUMER_SCHEDULER
                    )),
                    "{r} may delete a consumer of {stream}"
                );
            }
        }
    }

    #[test]
    fn clients_ask_for_job_status_and_only_the_scheduler_answers() {
        for r in Role::ALL {
            let p = r.permissions();
            assert_eq!(
                p.may_publish(subjects::API_STATUS),
                matches!(r, Role::Submitter | Role::Admin),
                "{r}"
            );
            let serves = r == Role::Scheduler;
            assert_eq!(p.may_subscribe(subjects::API_STATUS), serves, "{r}");
            // The encoder answers the operator's requests to its node (`ffleet drain`), the
            // merger cancel requests, the splitter retry requests.
            let answers = serves || matches!(r, Role::Encoder | Role::Merger | Role::Splitter);
            assert_eq!(p.responses, answers, "{r}");
            // The schedulers', mergers' and splitters' instances of the service are
            // discoverable.
            let instance = serves || matches!(r, Role::Merger | Role::Splitter);
            for d in subjects::service_api::discovery() {
                assert_eq!(
                    p.may_subscribe(&d.replace('*', "Xk3id")),
                    instance,
                    "{r} {d}"
                );
            }
        }
        // Discovery of ffleet's own service only: not another service's requests.
        for r in [Role::Scheduler, Role::Merger] {
            let p = r.permissions();
            assert!(!p.may_subscribe("$SRV.PING.other"), "{r}");
            assert!(!p.may_subscribe("$SRV.>"), "{r}");
        }
        let info = subjects::service_api::verb("INFO");
        assert!(Role::Admin.permissions().may_publish(&info));
        assert!(!Role::Submitter.permissions().may_publish(&info));
    }

    #[test]
    fn each_role_reads_only_its_own_replies() {
        for r in Role::ALL {
            let p = r.permissions();
            assert!(!p.may_subscribe("_INBOX.x"), "{r}");
            assert!(p.may_subscribe(&format!("{}.x", subjects::inbox_prefix(r.name()))));
            for other in Role::ALL.into_iter().filter(|o| *o != r) {
                let theirs = format!("{}.x", subjects::inbox_prefix(other.name()));
                assert!(!p.may_subscribe(&theirs), "{r} reads {other}'s replies");
                assert!(!p.may_publish(&theirs), "{r} writes into {other}'s inbox");
            }
        }
    }

    #[test]
    fn nobody_points_a_consumer_of_the_media_stream_anywhere_and_few_purge_it() {
        let scratch = subjects::object_stream(&subjects::scratch_bucket(subjects::BUCKET_MEDIA));
        for r in Role::ALL {
            let p = r.permissions();
            for c in js_api::consumer_create_any(&scratch) {
                assert!(!p.may_publish(&c.replace('>', "x.y")), "{r}: {c}");
            }
            assert!(
                !p.may_publish(&format!("$JS.API.CONSUMER.CREATE.{scratch}")),
                "{r}"
            );
        }
        let obj = subjects::object_stream(subjects::BUCKET_MEDIA);
        for r in Role::ALL {
            let p = r.permissions();
            for c in js_api::consumer_create_any(&obj) {
                assert!(!p.may_publish(&c.replace('>', "x.y")), "{r}: {c}");
            }
            assert!(
                !p.may_publish(&format!("$JS.API.CONSUMER.CREATE.{obj}")),
                "{r}"
            );
            assert_eq!(
                p.may_publish(&js_api::stream_purge(&obj)),
                r.purges_media(),
                "{r}"
            );
        }
        assert!(!Role::Submitter.purges_media() && !Role::Encoder.purges_media());
    }

    #[test]
    fn upgrade_grants_add_only_what_earlier_releases_used() {
        for r in Role::ALL {
            let strict = r.permissions();
            let open = strict.clone().with_upgrade_grants();
            assert!(open.may_subscribe("_INBOX.x"), "{r}");
            let obj = subjects::object_stream(subjects::BUCKET_MEDIA);
            assert_eq!(
                open.may_publish(&js_api::stream_purge(&obj)),
                strict.may_publish(&subjects::object_chunks(subjects::BUCKET_MEDIA, "x")),
                "{r}"
            );
            for s in &strict.publish {
                assert!(open.publish.contains(s), "{r} lost {s}");
            }
        }
    }

    #[test]
    fn matching_follows_nats_tokens() {
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d.c"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("a", "a"));
    }
}
