//! Security: a secured server (TLS with verified client certificates, one nkey user per role
//! with the permissions of `ffleet_runtime::security::roles`) refuses plaintext and foreign
//! certificates, refuses each role what is not its business (and the refusal is logged by the
//! server and by the client), and runs a whole job with every service on its own role without
//! a single permission violation: the matrix is sufficient as well as tight.
//!
//! Run against both servers: Debian's 2.9.10 on PATH, and a current one through
//! `FFLEET_NATS_SERVER`.

mod common;

use anyhow::{Context, Result, bail};
use common::cli::{ffleet, ffleet_as, output};
use common::procs::ProcFleet;
use common::secure::SecureServer;
use common::{FleetOptions, JobClient, TestFleet, media};
use ffleet_runtime::config::Config;
use ffleet_runtime::messages::SegmentState;
use ffleet_runtime::nats::retry::Policy;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::security::Role;
use ffleet_runtime::subjects::{self, EventKind, js_api};
use ffleet_runtime::{Capability, JobId};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// The media bucket's size in these tests (the default reserves more disk than CI has).
const MEDIA_BYTES: u64 = 256 << 20;

/// An admin context on `s` (provisions every stream and bucket).
async fn admin(s: &SecureServer) -> Result<Ctx> {
    let mut cfg = Config {
        nats: s.config(Role::Admin),
        ..Config::default()
    };
    // A media bucket the test machine's disk can reserve.
    cfg.storage.max_bytes = MEDIA_BYTES;
    Ok(Ctx::connect(Arc::new(cfg), "admin", false).await?)
}

/// Waits until the server log reports a violation naming `subject` (the server logs it as it
/// refuses, the client hears of it at the same moment).
async fn logged(s: &SecureServer, subject: &str) -> Result<()> {
    for _ in 0..100 {
        if s.violations().iter().any(|l| l.contains(subject)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "no violation logged for {subject}; log has: {:?}",
        s.violations()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_where_tls_is_required() -> Result<()> {
    let (s, server) = SecureServer::start()?;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port())).await?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let info = lines.next_line().await?.context("no INFO")?;
    assert!(info.contains("\"tls_required\":true"), "{info}");
    w.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await?;
    let mut answers = Vec::new();
    while let Ok(Ok(Some(l))) =
        tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await
    {
        answers.push(l);
    }
    assert!(
        !answers.iter().any(|l| l.starts_with("PONG")),
        "plaintext client got answers: {answers:?}"
    );
    // A client that does not speak TLS is refused by the client library too.
    let mut cfg = s.config(Role::Admin);
    cfg.url = server.url.clone();
    cfg.tls_required = false;
    cfg.tls_ca_file = None;
    assert!(
        ffleet_runtime::nats::connect(&cfg, "plain", false)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_ca_or_certificate_is_refused() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let other_dir = tempfile::tempdir()?;
    let other = ffleet::secrets::init(&other_dir.path().join("s"), &[])?;
    // The server's certificate is not signed by the CA the client trusts.
    let mut cfg = s.config(Role::Admin);
    cfg.tls_ca_file = Some(other.ca());
    let err = ffleet_runtime::nats::connect(&cfg, "wrong-ca", false).await;
    assert!(err.is_err(), "connected trusting a foreign CA");
    // The client's certificate is signed by a CA the server does not know.
    let mut cfg = s.config(Role::Admin);
    cfg.tls_cert_file = Some(other.client_cert());
    cfg.tls_key_file = Some(other.client_key());
    assert!(
        ffleet_runtime::nats::connect(&cfg, "foreign-cert", false)
            .await
            .is_err(),
        "connected with a client certificate of a foreign CA"
    );
    // No client certificate at all.
    let mut cfg = s.config(Role::Admin);
    cfg.tls_cert_file = None;
    cfg.tls_key_file = None;
    assert!(
        ffleet_runtime::nats::connect(&cfg, "no-cert", false)
            .await
            .is_err()
    );
    // An nkey the server does not know (a foreign deployment's encoder).
    let mut cfg = s.config(Role::Encoder);
    cfg.nkey_seed_file = Some(other.seed(Role::Encoder));
    assert!(
        ffleet_runtime::nats::connect(&cfg, "foreign-nkey", false)
            .await
            .is_err()
    );
    // The right CA, certificate and seed: accepted.
    ffleet_runtime::nats::connect(&s.config(Role::Encoder), "encoder", false).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_refused_outside_its_permissions_and_the_refusal_is_logged() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let admin = admin(&s).await?;
    let job = JobId::new("victim")?;
    let before = ffleet_runtime::nats::connect::permission_violations();

    // An encoder forging a terminal event, writing the jobs bucket, submitting a job.
    let enc = s.connect(Role::Encoder).await?;
    let forged = subjects::event(Some(&job), EventKind::Completed);
    let job_key = subjects::kv_key(subjects::BUCKET_JOBS, job.as_str());
    for subject in [
        forged.as_str(),
        job_key.as_str(),
        subjects::JOBS_SUBMIT,
        subjects::API_STATUS,
    ] {
        enc.publish(subject.to_owned(), "{}".into()).await?;
        enc.flush().await?;
        logged(&s, subject).await?;
    }
    let events = admin.js.get_stream(subjects::STREAM_EVENTS).await?;
    assert!(
        events
            .get_last_raw_message_by_subject(&forged)
            .await
            .is_err(),
        "a forged completed event was stored"
    );
    assert!(admin.jobs.get(job.as_str()).await?.is_none());
    let mut jobs = admin.js.get_stream(subjects::STREAM_JOBS).await?;
    assert_eq!(
        jobs.info().await?.state.messages,
        0,
        "a forged job was stored"
    );

    // The encoder may report a unit done: the matrix is not simply closed.
    let done = subjects::event(Some(&job), EventKind::SegmentDone);
    enc.publish(done.clone(), "{}".into()).await?;
    enc.flush().await?;

    // A submitter reading KV or fetching tasks.
    let sub = s.connect(Role::Submitter).await?;
    let sub_cfg = s.config(Role::Submitter);
    let sub_js = ffleet_runtime::nats::connect::jetstream(sub.clone(), &sub_cfg);
    assert!(sub_js.get_key_value(subjects::BUCKET_JOBS).await.is_err());
    logged(
        &s,
        &js_api::stream_info(&subjects::kv_stream(subjects::BUCKET_JOBS)),
    )
    .await?;
    let next = js_api::consumer_next(
        subjects::STREAM_TASKS,
        &subjects::encode_consumer(&Capability::cpu()),
    );
    let fetched = tokio::time::timeout(
        Duration::from_secs(5),
        sub.request(next.clone(), "{\"batch\":1}".into()),
    )
    .await;
    assert!(!matches!(fetched, Ok(Ok(_))), "a submitter fetched a task");
    logged(&s, &next).await?;
    // ... and listening in on the fleet's internal segment reports.
    let mut snoop = sub.subscribe(subjects::segment_done_wildcard()).await?;
    sub.flush().await?;
    logged(&s, &subjects::segment_done_wildcard()).await?;
    enc.publish(done, "{}".into()).await?;
    enc.flush().await?;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), snoop.next())
            .await
            .map_or(true, |m| m.is_none()),
        "a submitter read a segment report"
    );
    // A submitter may submit.
    ffleet_runtime::nats::publish::raw(
        &sub_js,
        Policy::from_config(&sub_cfg),
        subjects::JOBS_SUBMIT.into(),
        "{}".into(),
        "allowed",
    )
    .await?;
    assert_eq!(jobs.info().await?.state.messages, 1);

    // Every refusal reached the client too, where it is logged at warn and counted.
    let after = ffleet_runtime::nats::connect::permission_violations();
    assert!(
        after - before >= 5,
        "client saw {} violations",
        after - before
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_completes_and_one_fails_with_every_service_on_its_own_role() -> Result<()> {
    let fleet = TestFleet::spawn_with(FleetOptions {
        secure: true,
        tweak: Box::new(|c| c.storage.max_bytes = MEDIA_BYTES),
        ..Default::default()
    })
    .await?;
    let secure = fleet.secure.as_ref().expect("secure fleet");
    let src = media::tiny_source(fleet.media.path(), "secure.mp4")?;
    // Submitted and followed with the submitter's credentials, as another system would.
    let sub = secure.connect(Role::Submitter).await?;
    let job = JobId::new("secure")?;
    let mut events = sub
        .subscribe(subjects::event(Some(&job), EventKind::Completed))
        .await?;
    sub.flush().await?;
    let req = fleet.request("secure", &src, "secure.mp4");
    let sub_cfg = secure.config(Role::Submitter);
    let js = ffleet_runtime::nats::connect::jetstream(sub.clone(), &sub_cfg);
    ffleet_runtime::nats::publish::raw(
        &js,
        Policy::from_config(&sub_cfg),
        subjects::JOBS_SUBMIT.into(),
        serde_json::to_vec(&req)?.into(),
        job.as_str(),
    )
    .await?;
    let done = fleet.wait_completed("secure", JOB_TIMEOUT).await?;
    assert!(done.frames > 0);
    let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await?
        .context("the submitter saw no completed event")?;
    assert!(!ev.payload.is_empty());
    assert!(fleet.out_path("secure.mp4").exists());
    // The submitter may ask the fleet how the job stands, and a follower on its role that missed
    // the end (it subscribes only now) ends with the outcome all the same.
    let asked = ffleet::cli::ask_status(&sub, &job).await?;
    assert_eq!(asked.completed.as_ref(), Some(&done));
    // (A job with no record: the scheduler looks for a refusal in the events stream too.)
    let nobody = ffleet::cli::ask_status(&sub, &JobId::new("nobody")?).await?;
    assert_eq!(nobody.state, ffleet_runtime::messages::StatusState::Unknown);
    match follow_late(&sub, &job).await? {
        ffleet::cli::Outcome::Completed(c) => assert_eq!(c, done),
        other => bail!("the late follower ended with {other:?}"),
    }
    // The failure path too: the splitter refuses a missing input with a failed event.
    let missing = fleet.media.path().join("missing.mp4");
    fleet
        .submit(&fleet.request("secure-missing", &missing, "missing.mp4"))
        .await?;
    let failed = fleet.wait_failed("secure-missing", JOB_TIMEOUT).await?;
    let asked = ffleet::cli::ask_status(&sub, &JobId::new("secure-missing")?).await?;
    assert_eq!(asked.failed.as_ref(), Some(&failed));
    // An operator finds the status service as `nats micro ping ffleet` does.
    let ping = fleet
        .ctx()
        .client
        .request(subjects::service_api::verb("PING"), "".into())
        .await?;
    let pong: async_nats::service::PingResponse = serde_json::from_slice(&ping.payload)?;
    assert_eq!(pong.name, subjects::service_api::NAME);
    let violations = secure.violations();
    assert!(
        violations.is_empty(),
        "the pipeline needed more than its roles allow: {violations:#?}"
    );
    fleet.stop().await;
    Ok(())
}

/// Follows `job` on `client` (a submitter's: no record reads), subscribing only now.
async fn follow_late(client: &async_nats::Client, job: &JobId) -> Result<ffleet::cli::Outcome> {
    let link = ffleet::cli::Link {
        client: client.clone(),
        jobs: None,
    };
    let subs = ffleet::cli::subscribe(client, job).await?;
    tokio::time::timeout(
        Duration::from_secs(15),
        ffleet::cli::follow(&link, job, subs, false),
    )
    .await
    .context("the late follower never ended")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_look_streams_up_and_wait_for_an_admin_to_create_them() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let scratch = tempfile::tempdir()?;
    let mut cfg = Config {
        nats: s.config(Role::Splitter),
        ..Config::default()
    };
    cfg.storage.scratch = scratch.path().to_path_buf();
    cfg.nats.startup_wait_secs = 2.0;
    let err = match Ctx::connect(Arc::new(cfg.clone()), "splitter", false).await {
        Ok(_) => bail!("a splitter found streams nobody created"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(subjects::STREAM_JOBS) && err.contains("ffleet provision"),
        "{err}"
    );
    // It never asked to create anything it may not.
    assert!(s.violations().is_empty(), "{:?}", s.violations());
    // A service that waits carries on once an admin has provisioned.
    cfg.nats.startup_wait_secs = 120.0;
    let waiting = tokio::spawn(Ctx::connect(Arc::new(cfg), "splitter", false));
    admin(&s).await?;
    waiting.await??;
    assert!(s.violations().is_empty(), "{:?}", s.violations());
    Ok(())
}

/// The shipped secured configs parse with real secrets in place (on 2.9 without their
/// `sync_interval` line, as their comments say).
#[test]
fn shipped_secure_nats_configs_are_valid() -> Result<()> {
    let out = std::process::Command::new(ffleet::local::NatsServer::binary())
        .arg("--version")
        .output()?;
    let old = String::from_utf8_lossy(&out.stdout).contains("v2.9.");
    for name in ["nats-secure.conf", "nats-cluster-secure.conf"] {
        let dir = tempfile::tempdir()?;
        let secrets = ffleet::secrets::init(
            &dir.path().join("secrets"),
            &["nats-1".into(), "nats-2".into(), "nats-3".into()],
        )?;
        let shipped =
            std::fs::read_to_string(format!("{}/nats/{name}", env!("CARGO_MANIFEST_DIR")))?;
        let text: Vec<String> = shipped
            .lines()
            .filter(|l| !(old && l.trim_start().starts_with("sync_interval")))
            .map(|l| {
                l.replace("/etc/nats/secrets", &secrets.dir().display().to_string())
                    .replace(
                        "/data/jetstream",
                        &dir.path().join("js").display().to_string(),
                    )
            })
            .collect();
        let conf = dir.path().join(name);
        std::fs::write(&conf, text.join("\n"))?;
        let out = std::process::Command::new(ffleet::local::NatsServer::binary())
            .arg("-t")
            .arg("-c")
            .arg(&conf)
            .env("SERVER_NAME", "nats-1")
            .output()?;
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The recovery path under least privilege, with every service a separate process on its own
/// role: an encoder SIGKILLed mid-segment, its unit re-issued by the scheduler and taken from
/// the retry queue by another encoder; the job completes once, and the server refused nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_encoders_unit_moves_on_with_every_process_on_its_own_role() -> Result<()> {
    let media_bytes = MEDIA_BYTES.to_string();
    let mut fleet =
        ProcFleet::standard_secure(3, &[("FFLEET_STORAGE__MAX_BYTES", &media_bytes)]).await?;
    let src = media::ntsc_source(&fleet.media(), "src.mp4", 8, "640x360")?;
    let mut req = fleet.request("moved", &src, "moved.mp4");
    req.segment_seconds = Some(1.6);
    fleet.submit(&req).await?;
    let (key, owner, attempt) = fleet
        .wait_unit("moved", Duration::from_secs(60), |k, r| {
            (r.state == SegmentState::Running && !k.ends_with(".audio"))
                .then(|| Some((k.to_owned(), r.owner.clone()?.to_string(), r.attempt)))
                .flatten()
        })
        .await?;
    let victim = fleet.encoder(&owner)?;
    fleet.kill(victim);
    fleet
        .wait_unit("moved", Duration::from_secs(60), |k, r| {
            (k == key
                && r.attempt > attempt
                && r.owner.as_ref().is_some_and(|o| o.as_str() != owner))
            .then_some(())
        })
        .await?;
    fleet.wait_completed("moved", JOB_TIMEOUT).await?;
    assert_eq!(fleet.terminal_count("moved").await?, 1);
    let secure = fleet.secure.as_ref().expect("secure fleet");
    let violations = secure.violations();
    assert!(
        violations.is_empty(),
        "recovery needed more than the roles allow: {violations:#?}"
    );
    fleet.passed();
    Ok(())
}

/// A service that cannot start waits as long as it takes, and SIGTERM still ends it within
/// seconds, cleanly, instead of waiting for the supervisor's SIGKILL: a splitter waiting for
/// streams no admin has created yet (connecting), then the merger run with the encoder's
/// credentials, which may look streams up but not look up or create the merger's consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_start_stops_at_once_on_sigterm() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    let dir = tempfile::tempdir()?;
    let run = |svc: &str, role: Role| -> Result<(Child, std::path::PathBuf)> {
        let log = dir.path().join(format!("{svc}.log"));
        let child = ffleet_as(&s.secrets, role)?
            .args(["-s", &s.url(), "run", svc])
            .env("RUST_LOG", "info")
            .env("FFLEET_STORAGE__WORK_DIR", dir.path().join(svc))
            .env(
                "FFLEET_NATS__HEALTH_FILE",
                dir.path().join(format!("{svc}.health")),
            )
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("running ffleet run {svc}"))?;
        Ok((Child(child), log))
    };

    let (mut splitter, log) = run("splitter", Role::Splitter)?;
    let health = dir.path().join("splitter.health");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&health).is_ok_and(|h| h.contains(subjects::STREAM_JOBS)) {
        if std::time::Instant::now() > deadline {
            bail!(
                "the splitter never reported waiting for its streams; its log:\n{}",
                std::fs::read_to_string(&log)?
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stops_on_sigterm(&mut splitter, &log).await?;

    admin(&s).await?;
    let (mut merger, log) = run("merger", Role::Encoder)?;
    // Its first refused request: looking up its durable consumer.
    logged(
        &s,
        &format!("{}.{}", subjects::STREAM_EVENTS, subjects::CONSUMER_MERGER),
    )
    .await?;
    stops_on_sigterm(&mut merger, &log).await
}

/// Sends SIGTERM to a service that is still starting; it must exit 0 (a stop asked for is an
/// ordinary stop, started or not) within 15 s, saying why.
async fn stops_on_sigterm(child: &mut Child, log: &std::path::Path) -> Result<()> {
    assert!(child.0.try_wait()?.is_none(), "it gave up by itself");
    common::procs::signal_pid(child.0.id(), "TERM")?;
    let sent = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.0.kill();
            bail!(
                "still running 15 s after SIGTERM; its log:\n{}",
                std::fs::read_to_string(log)?
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = std::fs::read_to_string(log)?;
    println!(
        "exited {status:?} {:?} after SIGTERM\n{out}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("start-up interrupted by shutdown"), "{out}");
    Ok(())
}

/// A child process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        common::procs::stop(&mut self.0, Duration::from_secs(15));
    }
}

#[test]
fn up_secure_serves_a_submitter_and_refuses_what_its_role_may_not_do() -> Result<()> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let media_dir = dir.path().join("media");
    std::fs::create_dir(&media_dir)?;
    let src = media::tiny_source(&media_dir, "in.mp4")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut up = ffleet()
        .env("FFLEET_STORAGE__MAX_BYTES", MEDIA_BYTES.to_string())
        .args(["up", "--secure", "--port", &port.to_string(), "--data"])
        .arg(dir.path().join("data"))
        .arg("--root")
        .arg(&media_dir)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = up.stdout.take().context("no stdout")?;
    let _up = Child(up);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().context("up printed nothing")??;
    let url = format!("tls://127.0.0.1:{port}");
    assert_eq!(first, format!("ffleet is up: NATS at {url}"));
    let secrets = ffleet::secrets::Secrets::open(&dir.path().join("data").join("secrets"))?;
    for role in Role::ALL {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(secrets.seed(role))?.permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{role} seed mode {mode:o}");
    }

    let out = output(
        ffleet_as(&secrets, Role::Submitter)?
            .args(["-s", &url, "submit", "--wait", "--job-id", "secure-cli"])
            .arg(&src)
            .arg("-o")
            .arg(media_dir.join("out.mp4")),
    )?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 frames"));
    // A submitter may ask how one job stands (the fleet answers) ...
    let out =
        output(ffleet_as(&secrets, Role::Submitter)?.args(["-s", &url, "status", "secure-cli"]))?;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("completed") && stdout.contains("50 frames"),
        "{stdout}"
    );

    // ... but may not read the fleet's state: refused at once, with the reason.
    let out = output(ffleet_as(&secrets, Role::Submitter)?.args(["-s", &url, "status"]))?;
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin credentials"));
    let out = output(ffleet_as(&secrets, Role::Admin)?.args(["-s", &url, "status"]))?;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("secure-cli"));
    // Without credentials nothing gets through.
    let out = output(ffleet().args(["-s", &format!("nats://127.0.0.1:{port}"), "status"]))?;
    assert_ne!(out.status.code(), Some(0));
    Ok(())
}

/// The media object store's grants hold against a real server: the roles that move media
/// (splitter, encoder, merger, submitter) put, read back and delete objects without a single
/// refusal; the scheduler, which moves none, cannot store one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_media_object_store_serves_the_roles_that_move_media() -> Result<()> {
    let (s, _server) = SecureServer::start()?;
    // The admin provisions the bucket as any object-store fleet's first connection does.
    let work = tempfile::tempdir()?;
    let config = |role: Role| {
        let mut cfg = Config {
            nats: s.config(role),
            ..Config::default()
        };
        cfg.storage.backend = ffleet_runtime::config::StorageBackend::ObjectStore;
        cfg.storage.work_dir = work.path().to_path_buf();
        cfg.storage.max_bytes = MEDIA_BYTES;
        cfg
    };
    Ctx::connect(Arc::new(config(Role::Admin)), "admin", false).await?;
    // Several chunks (the default chunk is 128 KiB).
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = work.path().join("data.bin");
    std::fs::write(&file, &data)?;
    let open = |role: Role| common::objects::open_owned(config(role), Duration::from_secs(10));
    for role in [Role::Splitter, Role::Encoder, Role::Merger, Role::Submitter] {
        let store = open(role).await?;
        let key = format!("jobs/media-{role}/enc/v00000.a1.nut");
        let stored = store.upload(&file, &key).await?;
        let back = work.path().join(format!("{role}.back"));
        store
            .download(&key, stored.digest.as_deref(), &back)
            .await?;
        assert!(
            std::fs::read(&back)? == data,
            "{role} read back different bytes"
        );
        // Only the services that clean a job's media may remove objects (a purge is the whole
        // stream's): a submitter's and an encoder's objects go with their job.
        assert_eq!(store.may_delete(), role.purges_media(), "{role}");
        if store.may_delete() {
            store.delete(&key).await?;
        }
        assert!(s.violations().is_empty(), "{role}: {:#?}", s.violations());
    }
    // The scheduler may look the bucket up (every service looks every stream up) but not use it.
    let store = open(Role::Scheduler).await?;
    assert!(store.upload(&file, "sneaky").await.is_err());
    assert!(!s.violations().is_empty());
    Ok(())
}

/// A submitter on a machine the fleet cannot see: `submit --upload --wait` with nothing but the
/// URL, the CA, the client certificate and its seed streams the input into the media bucket,
/// follows the job by its events, and streams the output back; every service (as a process on
/// its own role, the encoder with no roots) moves the media through the bucket, refused nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_uploads_and_downloads_over_the_media_bucket() -> Result<()> {
    let mut fleet = ProcFleet::standard_secure(
        1,
        &[
            ("FFLEET_STORAGE__BACKEND", "object-store"),
            ("FFLEET_STORAGE__MAX_BYTES", &MEDIA_BYTES.to_string()),
        ],
    )
    .await?;
    let private = tempfile::Builder::new().prefix("ffleet-user-").tempdir()?;
    let src = media::ntsc_source(private.path(), "clip.mp4", 2, "160x120")?;
    let secrets = &fleet.secure.as_ref().expect("secure fleet").secrets;
    let out = output(
        ffleet_as(secrets, Role::Submitter)?
            .current_dir(private.path())
            .env("FFLEET_STORAGE__WORK_DIR", private.path().join("work"))
            .args(["-s", &fleet.url_of(), "submit", "--upload", "--wait"])
            .args(["--job-id", "uploaded", "clip.mp4", "-o", "result.mp4"]),
    )?;
    assert_eq!(out.status.code(), Some(0));
    let frames = |p: &std::path::Path| -> Result<u64> {
        Ok(media::span(p, "v:0")?.context("no video")?.count)
    };
    assert_eq!(frames(&private.path().join("result.mp4"))?, frames(&src)?);
    let violations = fleet.secure.as_ref().expect("secure fleet").violations();
    assert!(violations.is_empty(), "{violations:#?}");
    fleet.passed();
    Ok(())
}
