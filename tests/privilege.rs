//! Least privilege against a hostile client (issue 23): every role, on its own credentials
//! against a secured server, tries every operation of the matrix in docs/security.md (reading
//! other identities' replies, ending jobs, rolling up and purging buckets and the media stream,
//! pointing consumers at other subjects...). What the server let it do is printed as a table and
//! must match the documented one cell for cell. Beside the matrix, the attacks first reported
//! against the media and the followers each have a test of their own.
//!
//! Run against both servers: Debian's 2.9.10 on PATH, and a current one through
//! `FFLEET_NATS_SERVER`.

mod common;

use anyhow::{Context, Result, bail, ensure};
use async_nats::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use common::secure::SecureServer;
use ffleet_runtime::config::{Config, StorageBackend};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::security::Role;
use ffleet_runtime::storage::{ObjectStore, Storage, StorageError};
use ffleet_runtime::subjects::{self, EventKind, js_api};
use ffleet_runtime::{JobId, NodeId, Tenant, Unit};
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The media bucket's size in these tests (the default reserves more disk than CI has).
const MEDIA_BYTES: u64 = 64 << 20;
/// How long an operation may take to be answered or refused.
const ANSWER: Duration = Duration::from_secs(3);
/// After a flush, how long the client waits for a refusal it may still be told of (the server
/// sends it before the flush's answer; the client's event handler runs a moment later).
const SETTLE: Duration = Duration::from_millis(150);

fn config(s: &SecureServer, role: Role, work: &std::path::Path) -> Config {
    let mut cfg = Config {
        nats: s.config(role),
        ..Config::default()
    };
    cfg.storage.backend = StorageBackend::ObjectStore;
    cfg.storage.work_dir = work.to_path_buf();
    cfg.storage.max_bytes = MEDIA_BYTES;
    cfg
}

/// An admin context on `s` that provisions every stream and bucket, the media bucket included.
async fn admin(s: &SecureServer, work: &std::path::Path) -> Result<Ctx> {
    Ok(Ctx::connect(Arc::new(config(s, Role::Admin, work)), "admin", false).await?)
}

/// The media bucket as `role`'s services open it.
async fn media_as(s: &SecureServer, role: Role, work: &std::path::Path) -> Result<ObjectStore> {
    common::objects::open(&config(s, role, work), Duration::from_secs(10)).await
}

/// Whose credentials an operation is tried with: a role's, or tenant `acme`'s (its column is
/// `tenant`; `rival` is the other tenant it must not reach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Role(Role),
    Tenant,
}

const TENANT: &str = "acme";
const RIVAL: &str = "rival";

impl Who {
    fn all() -> Vec<Who> {
        Role::ALL
            .into_iter()
            .map(Who::Role)
            .chain([Who::Tenant])
            .collect()
    }

    /// The matrix's column name.
    fn name(self) -> &'static str {
        match self {
            Who::Role(r) => r.name(),
            Who::Tenant => "tenant",
        }
    }

    /// Its inbox identity (`subjects::inbox_prefix`).
    fn identity(self) -> String {
        match self {
            Who::Role(r) => r.name().to_owned(),
            Who::Tenant => subjects::tenant_identity(&tenant(TENANT)),
        }
    }

    async fn connect(self, s: &SecureServer) -> Result<async_nats::Client> {
        match self {
            Who::Role(r) => s.connect(r).await,
            Who::Tenant => s.connect_tenant(TENANT).await,
        }
    }
}

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a tenant name")
}

/// What the server did with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Yes,
    No,
}

impl Done {
    fn word(self) -> &'static str {
        match self {
            Done::Yes => "yes",
            Done::No => "no",
        }
    }
}

/// One operation of the matrix, as a client can send it.
enum Op {
    /// Subscribing: done unless the server refuses the subscription.
    Sub(String),
    /// A core publish with no reply: done unless refused.
    Pub(String),
    /// A request (a JetStream publish or API call): done when answered without an error; `read`
    /// also counts "not found" as done (the read was allowed, there was nothing there).
    Req {
        subject: String,
        headers: Option<HeaderMap>,
        body: String,
        read: bool,
    },
}

fn req(subject: impl Into<String>, body: impl Into<String>) -> Op {
    Op::Req {
        subject: subject.into(),
        headers: None,
        body: body.into(),
        read: false,
    }
}

fn read(subject: impl Into<String>, body: impl Into<String>) -> Op {
    Op::Req {
        subject: subject.into(),
        headers: None,
        body: body.into(),
        read: true,
    }
}

fn rollup(subject: impl Into<String>) -> Op {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_ROLLUP, "all");
    Op::Req {
        subject: subject.into(),
        headers: Some(h),
        body: "{}".into(),
        read: false,
    }
}

/// Whether the server has logged a refusal for connection `cid`, waiting up to `wait`.
async fn refused(s: &SecureServer, cid: u64, wait: Duration) -> bool {
    let tag = format!(" - cid:{cid} - ");
    let end = Instant::now() + wait;
    loop {
        if s.violations().iter().any(|l| l.contains(&tag)) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tries `op` as `role` on a connection of its own, so a refusal the server logs for it (by its
/// connection id) cannot be taken for another operation's. "No" is a refusal or an error
/// answer, never silence: an operation that gets neither an answer nor a refusal fails the
/// test.
async fn attempt(s: &SecureServer, role: Who, op: &Op) -> Result<Done> {
    let client = role.connect(s).await?;
    let cid = client.server_info().client_id;
    let done = match op {
        Op::Sub(subject) => {
            let _sub = client.subscribe(subject.clone()).await?;
            // The server logs a refusal before it answers the flush's ping.
            client.flush().await?;
            if refused(s, cid, SETTLE).await {
                Done::No
            } else {
                Done::Yes
            }
        }
        Op::Pub(subject) => {
            client.publish(subject.clone(), "{}".into()).await?;
            client.flush().await?;
            if refused(s, cid, SETTLE).await {
                Done::No
            } else {
                Done::Yes
            }
        }
        Op::Req {
            subject,
            headers,
            body,
            read,
        } => {
            let inbox = client.new_inbox();
            let mut answers = client.subscribe(inbox.clone()).await?;
            let headers = headers.clone().unwrap_or_default();
            client
                .publish_with_reply_and_headers(
                    subject.clone(),
                    inbox,
                    headers,
                    body.clone().into_bytes().into(),
                )
                .await?;
            client.flush().await?;
            tokio::select! {
                answer = tokio::time::timeout(ANSWER, answers.next()) => {
                    let Ok(Some(m)) = answer else {
                        bail!("{role}: {subject} got neither an answer nor a refusal");
                    };
                    let v: serde_json::Value =
                        serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null);
                    let code = v["error"]["code"].as_u64();
                    // A get or a pull answers "nothing there" with a 404: it was allowed.
                    let ok = code.is_none() || (*read && code == Some(404));
                    let ok = ok
                        && m.status.is_none_or(|st| st.is_success() || (*read && st.as_u16() == 404));
                    if !ok {
                        // Which guard refused it, for whoever reads a failing run.
                        println!("{role}: {subject} answered {v} {:?}", m.status);
                    }
                    if ok { Done::Yes } else { Done::No }
                }
                true = refused(s, cid, ANSWER) => Done::No,
            }
        }
    };
    Ok(done)
}

/// The matrix's operations for `role`, by the names docs/security.md gives them.
fn operations(role: Who) -> Vec<(&'static str, Op)> {
    let victim = JobId::new("victim").expect("job id");
    let media = subjects::BUCKET_MEDIA;
    let obj = subjects::object_stream(media);
    let meta = subjects::object_meta(media, &URL_SAFE.encode("jobs/victim/src/v00000.nut"));
    let scratch = subjects::scratch_bucket(media);
    let scratch_obj = subjects::object_stream(&scratch);
    let scratch_meta =
        subjects::object_meta(&scratch, &URL_SAFE.encode("jobs/victim/src/v00000.nut"));
    let segments = subjects::kv_stream(subjects::BUCKET_SEGMENTS);
    let jobs = subjects::kv_stream(subjects::BUCKET_JOBS);
    let unit_key = subjects::kv_key(
        subjects::BUCKET_SEGMENTS,
        &subjects::segment_key(&victim, Unit::Video(0)),
    );
    let job_key = subjects::kv_key(subjects::BUCKET_JOBS, victim.as_str());
    let other = if role == Who::Role(Role::Admin) {
        Role::Submitter
    } else {
        Role::Admin
    };
    let (acme, rival) = (tenant(TENANT), tenant(RIVAL));
    let push = |stream: &str, deliver: &str, filter: &str| {
        format!(
            r#"{{"stream_name":"{stream}","config":{{"deliver_subject":"{deliver}","filter_subject":"{filter}","ack_policy":"none","deliver_policy":"all"}}}}"#
        )
    };
    let forged = subjects::event(Some(&victim), EventKind::Completed);
    vec![
        ("read-every-reply", Op::Sub("_INBOX.>".into())),
        (
            "read-own-replies",
            Op::Sub(subjects::inbox_wildcard(&role.identity())),
        ),
        (
            "read-another-roles-replies",
            Op::Sub(subjects::inbox_wildcard(other.name())),
        ),
        (
            "send-into-another-inbox",
            Op::Pub(format!("{}.x", subjects::inbox_prefix(other.name()))),
        ),
        (
            "read-public-events",
            Op::Sub(subjects::event_any_job(EventKind::Completed)),
        ),
        ("read-every-event", Op::Sub(subjects::events_wildcard())),
        (
            "read-a-tenants-events",
            Op::Sub(subjects::tenant_event(
                &acme,
                Some("*"),
                EventKind::Completed,
            )),
        ),
        (
            "read-another-tenants-events",
            Op::Sub(subjects::tenant_event(
                &rival,
                Some("*"),
                EventKind::Completed,
            )),
        ),
        (
            "read-a-tenants-progress",
            Op::Sub(subjects::tenant_live_wildcard(&acme)),
        ),
        (
            "submit-as-a-tenant",
            req(subjects::jobs_submit_tenant(&acme), "{}"),
        ),
        (
            "submit-as-another-tenant",
            req(subjects::jobs_submit_tenant(&rival), "{}"),
        ),
        (
            "ask-as-a-tenant",
            Op::Pub(subjects::api_status_tenant(&acme)),
        ),
        (
            "ask-as-another-tenant",
            Op::Pub(subjects::api_status_tenant(&rival)),
        ),
        (
            "end-a-tenants-job",
            req(
                subjects::tenant_event(&acme, Some("victim"), EventKind::Completed),
                "{}",
            ),
        ),
        ("submit", req(subjects::JOBS_SUBMIT, "{}")),
        (
            "submit-privileged",
            req(subjects::JOBS_SUBMIT_PRIVILEGED, "{}"),
        ),
        (
            "drain-a-node",
            Op::Pub(subjects::node_control(
                &NodeId::new("victim-node").expect("a node id"),
            )),
        ),
        (
            "listen-as-a-node",
            Op::Sub(subjects::node_control_wildcard()),
        ),
        ("cancel-a-job", Op::Pub(subjects::API_CANCEL.into())),
        (
            "cancel-as-a-tenant",
            Op::Pub(subjects::api_cancel_tenant(&acme)),
        ),
        (
            "cancel-as-another-tenant",
            Op::Pub(subjects::api_cancel_tenant(&rival)),
        ),
        ("answer-cancels", Op::Sub(subjects::API_CANCEL.into())),
        ("retry-a-job", Op::Pub(subjects::API_RETRY.into())),
        (
            "retry-as-a-tenant",
            Op::Pub(subjects::api_retry_tenant(&acme)),
        ),
        (
            "retry-as-another-tenant",
            Op::Pub(subjects::api_retry_tenant(&rival)),
        ),
        ("answer-retries", Op::Sub(subjects::API_RETRY.into())),
        ("reprioritize-a-job", Op::Pub(subjects::API_PRIORITY.into())),
        (
            "drop-a-nodes-units",
            Op::Pub(subjects::node_drop(
                &NodeId::new("victim-node").expect("a node id"),
            )),
        ),
        ("hear-drops", Op::Sub(subjects::node_drop_wildcard())),
        ("announce-an-ended-job", Op::Pub(subjects::jobs_ended())),
        ("hear-ended-jobs", Op::Sub(subjects::jobs_ended())),
        ("end-a-job", req(forged.clone(), "{}")),
        (
            "report-a-unit-done",
            req(subjects::event(Some(&victim), EventKind::SegmentDone), "{}"),
        ),
        (
            "read-job-records",
            read(
                js_api::stream_msg_get(&jobs),
                format!(r#"{{"last_by_subj":"{job_key}"}}"#),
            ),
        ),
        ("write-job-records", req(job_key.clone(), "{}")),
        ("write-unit-records", req(unit_key.clone(), "{}")),
        ("roll-up-unit-records", rollup(unit_key.clone())),
        ("roll-up-job-records", rollup(job_key)),
        (
            "purge-unit-records",
            req(
                js_api::stream_purge(&segments),
                format!(
                    r#"{{"filter":"{}"}}"#,
                    subjects::kv_key(subjects::BUCKET_SEGMENTS, "none")
                ),
            ),
        ),
        (
            "purge-heartbeats",
            req(
                js_api::stream_purge(&subjects::kv_stream(subjects::BUCKET_WORKERS)),
                format!(
                    r#"{{"filter":"{}"}}"#,
                    subjects::kv_key(subjects::BUCKET_WORKERS, "none")
                ),
            ),
        ),
        (
            "read-media",
            read(
                js_api::stream_msg_get(&obj),
                format!(r#"{{"last_by_subj":"{meta}"}}"#),
            ),
        ),
        ("write-media", req(meta.clone(), "{}")),
        ("roll-up-media", rollup(meta)),
        (
            "purge-media",
            req(
                js_api::stream_purge(&obj),
                format!(
                    r#"{{"filter":"{}"}}"#,
                    subjects::object_chunks(media, "none")
                ),
            ),
        ),
        (
            "read-scratch",
            read(
                js_api::stream_msg_get(&scratch_obj),
                format!(r#"{{"last_by_subj":"{scratch_meta}"}}"#),
            ),
        ),
        ("write-scratch", req(scratch_meta.clone(), "{}")),
        (
            "purge-scratch",
            req(
                js_api::stream_purge(&scratch_obj),
                format!(
                    r#"{{"filter":"{}"}}"#,
                    subjects::object_chunks(&scratch, "none")
                ),
            ),
        ),
        (
            "push-consumer-on-media",
            req(
                format!("$JS.API.CONSUMER.CREATE.{obj}"),
                push(&obj, &forged, &subjects::object_wildcards(media)[0]),
            ),
        ),
        (
            "push-consumer-on-dead-letters",
            req(
                format!("$JS.API.CONSUMER.CREATE.{}", subjects::STREAM_DEAD),
                push(subjects::STREAM_DEAD, &forged, &subjects::dead_wildcard()),
            ),
        ),
        (
            "push-consumer-on-heartbeats",
            req(
                format!(
                    "$JS.API.CONSUMER.CREATE.{}",
                    subjects::kv_stream(subjects::BUCKET_WORKERS)
                ),
                push(
                    &subjects::kv_stream(subjects::BUCKET_WORKERS),
                    &forged,
                    &subjects::kv_wildcard(subjects::BUCKET_WORKERS),
                ),
            ),
        ),
        (
            "pull-the-schedulers-consumer",
            read(
                js_api::consumer_next(subjects::STREAM_TASKS, subjects::CONSUMER_SCHEDULER),
                r#"{"batch":1,"no_wait":true}"#,
            ),
        ),
        (
            "delete-the-schedulers-consumer",
            req(
                js_api::consumer_delete(subjects::STREAM_TASKS, subjects::CONSUMER_SCHEDULER),
                "",
            ),
        ),
        (
            "pull-the-mergers-consumer",
            read(
                js_api::consumer_next(subjects::STREAM_EVENTS, subjects::CONSUMER_MERGER),
                r#"{"batch":1,"no_wait":true}"#,
            ),
        ),
        (
            "rewrite-the-mergers-consumer",
            // The merger's own settings: where it is allowed, this makes (or keeps) its
            // durable as it would.
            req(
                js_api::consumer_create(
                    subjects::STREAM_EVENTS,
                    subjects::CONSUMER_MERGER,
                    &subjects::segment_done_wildcard(),
                ),
                serde_json::json!({
                    "stream_name": subjects::STREAM_EVENTS,
                    "config": {
                        "durable_name": subjects::CONSUMER_MERGER,
                        "filter_subject": subjects::segment_done_wildcard(),
                        "ack_policy": "explicit",
                        "deliver_policy": "all",
                    },
                })
                .to_string(),
            ),
        ),
        (
            "delete-the-mergers-consumer",
            req(
                js_api::consumer_delete(subjects::STREAM_EVENTS, subjects::CONSUMER_MERGER),
                "",
            ),
        ),
        (
            "delete-a-stream",
            req(
                format!("$JS.API.STREAM.DELETE.{}", subjects::STREAM_JOBS),
                "",
            ),
        ),
    ]
}

/// The matrix docs/security.md documents: operation → role → yes/no.
fn documented() -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md"))?;
    let begin = "<!-- privilege-matrix:begin -->";
    let end = "<!-- privilege-matrix:end -->";
    let table = doc
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(t, _)| t)
        .context("docs/security.md has no privilege matrix")?;
    let mut rows = table
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        });
    let header = rows.next().context("matrix without a header")?;
    let mut out = BTreeMap::new();
    for row in rows.filter(|r| !r[0].starts_with("---")) {
        // The first cell is "`name`: what it is".
        let name = row[0]
            .split('`')
            .nth(1)
            .with_context(|| format!("row without a name: {row:?}"))?;
        let cells = header[1..]
            .iter()
            .cloned()
            .zip(row[1..].iter().cloned())
            .collect();
        ensure!(
            out.insert(name.to_owned(), cells).is_none(),
            "docs/security.md names {name} twice"
        );
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_can_do_what_the_documented_matrix_says_and_nothing_else() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    admin(&s, work.path()).await?;
    // The durables the rows about other roles' consumers aim at, made by their owners (a row
    // aimed at a consumer that does not exist would read "no" for everyone).
    for (role, stream, name, filter) in [
        (
            Role::Scheduler,
            subjects::STREAM_TASKS,
            subjects::CONSUMER_SCHEDULER,
            subjects::TASKS_PLAN.to_owned(),
        ),
        (
            Role::Merger,
            subjects::STREAM_EVENTS,
            subjects::CONSUMER_MERGER,
            subjects::segment_done_wildcard(),
        ),
    ] {
        let js = ffleet_runtime::nats::connect::jetstream(s.connect(role).await?, &s.config(role));
        js.get_stream_no_info(stream)
            .await?
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(name.into()),
                filter_subject: filter,
                ..Default::default()
            })
            .await
            .with_context(|| format!("{role} creating its consumer {name}"))?;
    }
    let doc = documented()?;
    let admin_ops = || operations(Who::Role(Role::Admin));
    let names: BTreeSet<&str> = admin_ops().iter().map(|(n, _)| *n).collect();
    ensure!(names.len() == admin_ops().len(), "an operation named twice");
    // In the order of `operations`, as documented.
    let mut seen: Vec<(&str, BTreeMap<Who, Done>)> = admin_ops()
        .into_iter()
        .map(|(name, _)| (name, BTreeMap::new()))
        .collect();
    for role in Who::all() {
        for (i, (_, op)) in operations(role).into_iter().enumerate() {
            let done = attempt(&s, role, &op).await?;
            seen[i].1.insert(role, done);
        }
    }
    // The table as observed, in the documented layout.
    let mut table = String::from("| operation |");
    for r in Who::all() {
        table += &format!(" {r} |");
    }
    table += "\n";
    let mut wrong = Vec::new();
    for (name, by_role) in &seen {
        table += &format!("| `{name}` |");
        for r in Who::all() {
            let got = by_role[&r].word();
            table += &format!(" {got} |");
            let want = doc.get(*name).and_then(|row| row.get(r.name()));
            if want.map(String::as_str) != Some(got) {
                wrong.push(format!("{name} as {r}: did {got}, documented {want:?}"));
            }
        }
        table += "\n";
    }
    println!("{table}");
    for name in doc.keys() {
        if !seen.iter().any(|(n, _)| n == name) {
            wrong.push(format!("{name}: documented but not tried"));
        }
    }
    ensure!(
        wrong.is_empty(),
        "the matrix differs from docs/security.md:\n{}",
        wrong.join("\n")
    );
    Ok(())
}

/// Finding 3: a client that may write the media bucket tries to replace a job's cut with its
/// own bytes and a matching digest. The cut is in the scratch bucket, which the client cannot
/// reach: its object under the same name in the media bucket is never read while the cut is
/// there. Were the cut gone from the scratch bucket (or written by an earlier release into the
/// media bucket), the encoder would read the media bucket's object against the digest the
/// splitter recorded, and refuse it. Only a task with no digest, which this release never sends,
/// would take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_rewritten_by_a_submitter_is_refused_by_its_recorded_digest() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    admin(&s, work.path()).await?;
    let key = "jobs/victim/src/v00000.nut";
    let genuine = work.path().join("genuine");
    std::fs::write(&genuine, vec![7_u8; 300_000])?;
    let splitter = media_as(&s, Role::Splitter, work.path()).await?;
    let recorded = splitter
        .put_file(&genuine, key)
        .await?
        .digest
        .context("no digest")?;
    ensure!(splitter.bucket_of(key) != subjects::BUCKET_MEDIA);
    // The submitter writes the same name through its own media grant (its store refuses to
    // write fleet media at all; the raw upload is what a hostile client can still send).
    let forged = work.path().join("forged");
    std::fs::write(&forged, vec![9_u8; 200_000])?;
    let submitter = media_as(&s, Role::Submitter, work.path()).await?;
    match submitter.put_file(&forged, key).await {
        Err(StorageError::NoScratch(_)) => {}
        other => bail!("a client's store wrote fleet media: {other:?}"),
    }
    submitter.upload(&forged, key).await?;

    let encoder = media_as(&s, Role::Encoder, work.path()).await?;
    for expect in [Some(recorded.as_str()), None] {
        let got = encoder.fetch(key, expect).await?;
        let bytes = std::fs::read(got.path())?;
        ensure!(
            bytes == vec![7_u8; 300_000],
            "the encoder read {} bytes, not the genuine cut",
            bytes.len()
        );
    }
    // The cut gone from the scratch bucket: the media bucket's object is read against the
    // recorded digest, and refused.
    Storage::delete(&splitter, key).await?;
    submitter.upload(&forged, key).await?;
    match encoder.fetch(key, Some(&recorded)).await {
        Err(StorageError::Corrupt { .. }) => {}
        other => bail!("a forged cut was read: {:?}", other.map(|l| l.bytes_moved)),
    }
    Ok(())
}

/// Finding 2: a message on a job's `completed` subject that the job's status does not confirm
/// does not end a follower (`submit --wait`); the status does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_terminal_event_does_not_end_a_follower() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    admin(&s, work.path()).await?;
    let job = JobId::new("followed")?;
    let submitter = s.connect(Role::Submitter).await?;
    let link = ffleet::cli::Link {
        client: submitter.clone(),
        jobs: None,
    };
    let subs = ffleet::cli::subscribe(&submitter, &job).await?;
    let following =
        tokio::spawn(async move { ffleet::cli::follow(&link, &job, subs, false).await });
    // Whatever could put a message there (here a service that may publish it): well-formed, for
    // this job, and false.
    let splitter = s.connect(Role::Splitter).await?;
    let job = JobId::new("followed")?;
    let forged = ffleet_runtime::messages::JobEvent::Completed(
        ffleet_runtime::messages::events::Completed::of_output(
            &job,
            &ffleet_runtime::messages::records::OutputInfo {
                uri: "file:///made/up.mp4".into(),
                frames: 1,
                duration_secs: 1.0,
                bytes: 1,
                wall_secs: 0.1,
                decode_errors: 0,
                warnings: Vec::new(),
                media_bytes: 0,
                digest: None,
            },
            1,
        ),
    );
    let body = serde_json::to_vec(&forged.to_cloudevent("splitter"))?;
    splitter
        .publish(
            subjects::event(Some(&job), EventKind::Completed),
            body.into(),
        )
        .await?;
    splitter.flush().await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        !following.is_finished(),
        "the follower ended on an event its job's status does not confirm: {:?}",
        following.await?
    );
    following.abort();
    Ok(())
}

/// The names of every object `ctx`'s storage holds.
async fn stored_names(ctx: &Ctx) -> Result<Vec<String>> {
    let survey = ctx.storage.survey(Duration::from_secs(3600)).await?;
    Ok(survey.objects.into_iter().map(|o| o.name).collect())
}

/// The record of a job of file media in state `state`, as a sweep reads it.
fn record(
    job: &JobId,
    state: ffleet_runtime::messages::JobState,
) -> ffleet_runtime::messages::JobRecord {
    let req = ffleet_runtime::messages::JobRequest {
        version: ffleet_runtime::messages::CURRENT,
        job_id: job.clone(),
        input: "file:///in/a.mp4".into(),
        output: "file:///out/a.mp4".into(),
        profile: None,
        overrides: Default::default(),
        segment_seconds: None,
        priority: 0,
        prefer: Default::default(),
        require: false,
        input_digest: None,
        retry_of: None,
    };
    let mut rec = ffleet_runtime::messages::JobRecord::new(req, "h264".into());
    rec.state = state;
    rec
}

/// A job the scheduler fails (it cannot be placed, or passed its deadline) ends with its media
/// in the scratch bucket: the scheduler may not remove media. The next sweep removes a
/// cancelled or completed job's media however recent, a failed job's once it is older than
/// `storage.keep_failed_results_secs` (kept for `ffleet retry` until then), and keeps a running
/// job's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_removes_an_ended_jobs_recent_media_and_keeps_a_running_ones() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    admin(&s, work.path()).await?;
    let file = work.path().join("media.bin");
    std::fs::write(&file, vec![5_u8; 50_000])?;
    let cfg = config(&s, Role::Splitter, work.path());
    ensure!(cfg.storage.abandoned_after_secs >= 3600);
    let splitter = Ctx::connect(Arc::new(cfg), "splitter", false).await?;
    let mut cuts = Vec::new();
    for (id, state) in [
        ("ended", ffleet_runtime::messages::JobState::Cancelled),
        ("failed", ffleet_runtime::messages::JobState::Failed),
        ("running", ffleet_runtime::messages::JobState::Encoding),
    ] {
        let job = JobId::new(id)?;
        splitter
            .jobs
            .create(job.as_str(), &record(&job, state))
            .await?;
        let cut = ffleet_runtime::storage::keys::cut(&job, "v00000.nut");
        splitter.storage.put_file(&file, &cut).await?;
        cuts.push(cut);
    }
    let swept = ffleet_splitter::sweep::once(&splitter).await?;
    ensure!(swept.abandoned_jobs == 1, "{swept:?}");
    let mut left = stored_names(&splitter).await?;
    left.sort();
    let mut kept = cuts[1..].to_vec();
    kept.sort();
    ensure!(
        left == kept,
        "left {left:?}: the running job's media stays, and the failed one's for a retry"
    );
    // Once a failed job's media is older than its keep time, it goes too.
    let mut cfg = config(&s, Role::Splitter, work.path());
    cfg.storage.keep_failed_results_secs = 0;
    let splitter = Ctx::connect(Arc::new(cfg), "splitter", false).await?;
    let swept = ffleet_splitter::sweep::once(&splitter).await?;
    ensure!(swept.abandoned_jobs == 1, "{swept:?}");
    let left = stored_names(&splitter).await?;
    ensure!(
        left == cuts[2..],
        "left {left:?}: only the running job's cut stays"
    );
    assert!(s.violations().is_empty(), "{:#?}", s.violations());
    Ok(())
}

/// Finding 5: what a client leaves in the media bucket does not stay there for the bucket's
/// week: chunks it sent with no object, an upload no request claimed, an output nobody removed
/// are swept; a running job's media stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_removes_what_clients_left_and_keeps_live_jobs_media() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    admin(&s, work.path()).await?;
    let file = work.path().join("media.bin");
    std::fs::write(&file, vec![5_u8; 200_000])?;
    // A submitter: an upload for a job never submitted, and chunks of an upload that never
    // finished (sent straight to the stream, no metadata).
    let submitter = media_as(&s, Role::Submitter, work.path()).await?;
    submitter
        .upload(&file, "jobs/never-submitted/in/a.mp4")
        .await?;
    let client = s.connect(Role::Submitter).await?;
    let js = ffleet_runtime::nats::connect::jetstream(client, &s.config(Role::Submitter));
    let orphan = subjects::object_chunks(subjects::BUCKET_MEDIA, "abandonedupload");
    for _ in 0..3 {
        js.publish(orphan.clone(), vec![1_u8; 100_000].into())
            .await?
            .await?;
    }
    // The fleet: a running job's cut, and a completed job's kept output.
    let mut cfg = config(&s, Role::Splitter, work.path());
    cfg.storage.abandoned_after_secs = 0;
    cfg.storage.keep_outputs_secs = 0;
    let splitter = Ctx::connect(Arc::new(cfg), "splitter", false).await?;
    let running = JobId::new("running")?;
    let rec = record(&running, ffleet_runtime::messages::JobState::Encoding);
    splitter.jobs.create(running.as_str(), &rec).await?;
    let live = ffleet_runtime::storage::keys::cut(&running, "c00000.nut");
    splitter.storage.put_file(&file, &live).await?;
    let output = ffleet_runtime::storage::keys::kept_output(&JobId::new("done")?, "out.mp4");
    splitter.storage.put_file(&file, &output).await?;

    // The splitter's durables (plain, privileged, tenants'), one request waiting in them: an
    // upload with no record may be that request's, and stays while it waits.
    let jobs_stream = splitter
        .js
        .get_stream_no_info(subjects::STREAM_JOBS)
        .await?;
    for (name, filter) in [
        (
            subjects::CONSUMER_SPLITTER,
            subjects::JOBS_SUBMIT.to_owned(),
        ),
        (
            subjects::CONSUMER_SPLITTER_PRIVILEGED,
            subjects::JOBS_SUBMIT_PRIVILEGED.to_owned(),
        ),
        (
            subjects::CONSUMER_SPLITTER_TENANTS,
            subjects::jobs_submit_any_tenant(),
        ),
    ] {
        jobs_stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(name.into()),
                filter_subject: filter,
                ..Default::default()
            })
            .await?;
    }
    js.publish(subjects::JOBS_SUBMIT, "{}".into())
        .await?
        .await?;
    let swept = ffleet_splitter::sweep::once(&splitter).await?;
    assert_eq!(
        swept,
        ffleet_splitter::sweep::Swept {
            orphan_chunk_sets: 1,
            abandoned_jobs: 0,
            expired_outputs: 1,
        },
        "a request waits: no upload without a record goes"
    );
    // The request taken (as a splitter does); the upload nobody claimed goes.
    let consumer: async_nats::jetstream::consumer::PullConsumer = jobs_stream
        .get_consumer(subjects::CONSUMER_SPLITTER)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let mut batch = consumer.fetch().max_messages(1).messages().await?;
    let msg = batch
        .next()
        .await
        .context("no request")?
        .map_err(|e| anyhow::anyhow!(e))?;
    msg.double_ack().await.map_err(|e| anyhow::anyhow!(e))?;
    let swept = ffleet_splitter::sweep::once(&splitter).await?;
    assert_eq!(
        swept,
        ffleet_splitter::sweep::Swept {
            orphan_chunk_sets: 0,
            abandoned_jobs: 1,
            expired_outputs: 0,
        }
    );
    let left = stored_names(&splitter).await?;
    assert_eq!(left, vec![live], "only the running job's media stays");
    let admin_js = ffleet_runtime::nats::connect::jetstream(
        s.connect(Role::Admin).await?,
        &s.config(Role::Admin),
    );
    // The cut is the fleet's own: in the scratch bucket, which the submitter's orphans and
    // upload never reached; the media bucket is empty.
    let scratch = subjects::scratch_bucket(subjects::BUCKET_MEDIA);
    for (bucket, expected) in [(subjects::BUCKET_MEDIA, 0), (scratch.as_str(), 1)] {
        let mut stream = admin_js.get_stream(subjects::object_stream(bucket)).await?;
        let chunks = stream
            .info_with_subjects(subjects::object_chunks(bucket, ">"))
            .await?
            .count()
            .await;
        assert_eq!(
            chunks, expected,
            "chunk sets left in {bucket}: only the running job's cut"
        );
        let _ = stream.info().await?;
    }
    assert!(s.violations().is_empty(), "{:#?}", s.violations());
    Ok(())
}

/// Finding 4, for a deployment an earlier release provisioned (roll-ups allowed on every bucket
/// and on the media stream): `ffleet provision` raises the guards, after which one message can
/// no longer empty the unit records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_raises_the_guards_of_streams_an_earlier_release_made() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    let admin = admin(&s, work.path()).await?;
    let segments = subjects::kv_stream(subjects::BUCKET_SEGMENTS);
    let media = subjects::object_stream(subjects::BUCKET_MEDIA);
    // As an earlier release left them.
    for name in [&segments, &media] {
        let mut config = admin
            .js
            .get_stream(name)
            .await?
            .info()
            .await?
            .config
            .clone();
        config.allow_rollup = true;
        admin.js.update_stream(&config).await?;
    }
    let raised =
        ffleet_runtime::nats::provision::raise_guards(&admin.js, Some(subjects::BUCKET_MEDIA))
            .await?;
    assert_eq!(raised, vec![segments.clone(), media.clone()]);
    for name in [&segments, &media] {
        let config = admin
            .js
            .get_stream(name)
            .await?
            .info()
            .await?
            .config
            .clone();
        assert!(!config.allow_rollup, "{name} still allows roll-ups");
    }
    // Nothing left to raise; and an encoder's roll-up is refused by the stream itself.
    assert!(
        ffleet_runtime::nats::provision::raise_guards(&admin.js, Some(subjects::BUCKET_MEDIA))
            .await?
            .is_empty()
    );
    let key = subjects::kv_key(subjects::BUCKET_SEGMENTS, "victim.v00000");
    let done = attempt(&s, Who::Role(Role::Encoder), &rollup(key)).await?;
    assert_eq!(done, Done::No, "a roll-up of the unit records was stored");
    Ok(())
}

/// A rolling upgrade of a secured deployment: `ffleet secrets auth --upgrade` lets a process of
/// an earlier release (replies on the default `_INBOX`) work beside this release's; the strict
/// file, loaded once none runs, refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_auth_file_serves_earlier_processes_until_the_strict_one_is_loaded()
-> Result<()> {
    let (s, server) = SecureServer::start()?;
    let work = tempfile::tempdir()?;
    admin(&s, work.path()).await?;
    let media = subjects::BUCKET_MEDIA;
    // An earlier release's submitter: its credentials, no role, so the default inbox.
    let earlier = || {
        let mut cfg = s.config(Role::Submitter);
        cfg.role = None;
        cfg
    };
    // The server reads the file at start and on a reload (SIGHUP); a reload of this test
    // server would also re-read its JetStream flags, so it is restarted instead.
    let mut server = server;
    let mut reload = |strict: bool| -> Result<()> {
        ffleet::secrets::rewrite_auth(s.secrets.dir(), media, !strict)?;
        server.restart()
    };
    // Whether a request (a JetStream publish, answered to the client's inbox) gets its answer:
    // tried for a while, since JetStream comes back a moment after a reload.
    let submit = |cfg: ffleet_runtime::config::NatsConfig, tries: u32| async move {
        let client = ffleet_runtime::nats::connect(&cfg, "earlier", false).await?;
        let js = ffleet_runtime::nats::connect::jetstream(client, &cfg);
        let mut last = String::new();
        for _ in 0..tries {
            let sent = js.publish(subjects::JOBS_SUBMIT, "{}".into()).await?;
            match tokio::time::timeout(Duration::from_secs(2), sent).await {
                Ok(Ok(_)) => return anyhow::Ok(Ok(())),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer in 2 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok(Err(last))
    };
    ensure!(
        submit(earlier(), 1).await?.is_err(),
        "the strict file served an earlier client"
    );
    reload(false)?;
    if let Err(e) = submit(earlier(), 5).await? {
        bail!("the upgrade file refused an earlier client: {e}");
    }
    if let Err(e) = submit(s.config(Role::Submitter), 5).await? {
        bail!("the upgrade file refused this release's client: {e}");
    }
    reload(true)?;
    // The strict file is in force once this release's client is served again.
    if let Err(e) = submit(s.config(Role::Submitter), 5).await? {
        bail!("the strict file refused this release's client: {e}");
    }
    ensure!(
        submit(earlier(), 1).await?.is_err(),
        "the strict file served an earlier client"
    );
    Ok(())
}
