//! Tenants (issue 23): client systems with submitter credentials of their own
//! (`ffleet secrets init --tenant`). A tenant's jobs run under its own subjects with ids of its
//! own: two tenants and the plain submitter may all name a job `same`, each sees its own events
//! and status only, and a tenant's media is files under its directory of the roots
//! (`<tenant root>/<tenant>`), never another's, and no plain job names a tenant's. Every service runs on its own role's
//! credentials, and the whole exchange leaves no permission violation in the server's log: the
//! tenants' grants are sufficient as well as tight (the matrix in tests/privilege.rs proves
//! the tight side).
//!
//! Run against both servers: Debian's 2.9.10 on PATH, and a current one through
//! `FFLEET_NATS_SERVER`.

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::cli::{ffleet_as_tenant, output};
use common::{FleetOptions, JobClient, TestFleet, media};
use ffleet_runtime::messages::{JobEvent, JobRequest, StatusState};
use ffleet_runtime::nats::publish;
use ffleet_runtime::nats::retry::Policy;
use ffleet_runtime::reason::Reason;
use ffleet_runtime::security::Role;
use ffleet_runtime::subjects::{self, EventKind};
use ffleet_runtime::{JobId, Tenant};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// The media bucket's size in these tests (the default reserves more disk than CI has).
const MEDIA_BYTES: u64 = 256 << 20;

fn tenant(name: &str) -> Tenant {
    Tenant::new(name).expect("a tenant name")
}

/// Tenant `name`'s directory of tenant root `root`, made.
fn tenant_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let d = root.join(name);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A fleet on its roles' credentials whose tenants' files lie in `tenants` (a tenant root
/// apart from the input and output roots), with `splitter` as its splitters' section.
async fn tenant_fleet(
    tenants: &Path,
    splitter: ffleet_splitter::SplitterConfig,
) -> Result<TestFleet> {
    let root = tenants.to_path_buf();
    TestFleet::spawn_with(FleetOptions {
        secure: true,
        tweak: Box::new(move |c| {
            c.storage.max_bytes = MEDIA_BYTES;
            c.storage.tenant_roots = vec![root.clone()];
            c.set_section(&splitter).expect("splitter section");
        }),
        ..Default::default()
    })
    .await
}

/// Waits until the server has logged a refusal naming `subject`.
async fn refusal_logged(secure: &common::secure::SecureServer, subject: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !secure.violations().iter().any(|l| l.contains(subject)) {
        if tokio::time::Instant::now() > deadline {
            bail!("no refusal of {subject} in the server's log");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Publishes `req` as tenant `name` on its own subject, as its system would (a message id of
/// its own, unguessable), and returns the stored request's sequence.
async fn submit_as(
    fleet: &TestFleet,
    client: &async_nats::Client,
    name: &str,
    req: &JobRequest,
) -> Result<u64> {
    let cfg = fleet.secure.as_ref().context("secure")?.tenant_config(name);
    let js = ffleet_runtime::nats::connect::jetstream(client.clone(), &cfg);
    let stored = publish::raw(
        &js,
        Policy::from_config(&cfg),
        subjects::jobs_submit_tenant(&tenant(name)),
        serde_json::to_vec(req)?.into(),
        &uuid::Uuid::new_v4().to_string(),
    )
    .await?;
    Ok(stored.sequence)
}

/// A request for `input` to `output` (absolute paths).
fn request(fleet: &TestFleet, id: &str, input: &Path, output: &Path) -> JobRequest {
    let mut r = fleet.request(id, input, "unused.mp4");
    r.output = format!("file://{}", output.display());
    r
}

#[test]
fn tenants_share_job_ids_but_see_and_touch_only_their_own_jobs() -> Result<()> {
    // On a thread of its own: the whole exchange's future, polled unoptimised, needs more stack
    // than a test thread has.
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()?
                .block_on(share_ids_see_own())
        })?
        .join()
        .map_err(|_| anyhow::anyhow!("the test thread panicked"))?
}

async fn share_ids_see_own() -> Result<()> {
    let troot = tempfile::tempdir()?;
    let limits = |max_priority, max_active_jobs| ffleet_splitter::TenantLimits {
        max_priority,
        max_active_jobs,
    };
    let fleet = tenant_fleet(
        troot.path(),
        ffleet_splitter::SplitterConfig {
            tenants: BTreeMap::from([
                ("acme".to_owned(), limits(Some(5), None)),
                ("rival".to_owned(), limits(None, Some(1))),
            ]),
            ..Default::default()
        },
    )
    .await?;
    let secure = fleet.secure.as_ref().expect("secure fleet");
    let acme_dir = tenant_dir(troot.path(), "acme")?;
    let (acme_in, acme_out) = (acme_dir.clone(), acme_dir);
    let rival_out = tenant_dir(troot.path(), "rival")?;
    let acme_src = media::tiny_source(&acme_in, "a.mp4")?;
    let plain_src = media::tiny_source(fleet.media.path(), "p.mp4")?;

    let acme = secure.connect_tenant("acme").await?;
    let rival = secure.connect_tenant("rival").await?;
    let plain = secure.connect(Role::Submitter).await?;
    let mut acme_done = acme
        .subscribe(subjects::tenant_event(
            &tenant("acme"),
            Some("*"),
            EventKind::Completed,
        ))
        .await?;
    let mut plain_done = plain
        .subscribe(subjects::event_any_job(EventKind::Completed))
        .await?;
    for c in [&acme, &plain] {
        c.flush().await?;
    }

    // The same id from a tenant and from the plain submitter: two jobs. The tenant asks for a
    // priority its own cap allows (the plain submitters' is 0).
    let mut req = request(&fleet, "same", &acme_src, &acme_out.join("same.mp4"));
    req.priority = 5;
    submit_as(&fleet, &acme, "acme", &req).await?;
    fleet
        .submit(&fleet.request("same", &plain_src, "same.mp4"))
        .await?;
    let acme_job = JobId::scoped(&tenant("acme"), &JobId::new("same")?);
    let done = fleet.wait_completed(acme_job.as_str(), JOB_TIMEOUT).await?;
    fleet.wait_completed("same", JOB_TIMEOUT).await?;
    assert!(acme_out.join("same.mp4").is_file());
    assert!(fleet.out_path("same.mp4").is_file());
    assert_eq!(done.job_id, acme_job);

    // Its event names the job as the tenant did, on the tenant's subject.
    let ev = tokio::time::timeout(Duration::from_secs(10), acme_done.next())
        .await?
        .context("the tenant saw no completed event")?;
    assert_eq!(ev.subject.as_str(), "ffleet.events.t.acme.same.completed");
    let ce: serde_json::Value = serde_json::from_slice(&ev.payload)?;
    assert_eq!(ce["data"]["job_id"], "same", "{ce}");
    assert_eq!(ce["data"]["tenant"], "acme", "{ce}");
    // The plain submitter hears of its own job's end (the server refuses it the tenants', below).
    let ev = tokio::time::timeout(Duration::from_secs(10), plain_done.next())
        .await?
        .context("the plain submitter saw no completed event")?;
    assert_eq!(ev.subject.as_str(), "ffleet.events.same.completed");
    // Status: the tenant asks by its own id; the rival asking by the same id learns of no job;
    // the plain submitter may not name a tenant's job at all.
    let asked = ffleet::cli::ask_status(&acme, &acme_job).await?;
    assert_eq!(asked.state, StatusState::Completed);
    assert_eq!(asked.completed.as_ref().map(|c| c.bytes), Some(done.bytes));
    let rival_same = JobId::scoped(&tenant("rival"), &JobId::new("same")?);
    let asked = ffleet::cli::ask_status(&rival, &rival_same).await?;
    assert_eq!(asked.state, StatusState::Unknown);
    let reply = plain
        .request(
            subjects::API_STATUS,
            serde_json::to_vec(&serde_json::json!({"version": 1, "job_id": "acme=same"}))?.into(),
        )
        .await?;
    let refused = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR_CODE))
        .map(|v| v.as_str().to_owned());
    assert_eq!(refused.as_deref(), Some("400"), "{:?}", reply.payload);

    // Neither the rival nor the plain submitter may listen in on the tenant.
    for (client, subject) in [
        (
            &rival,
            subjects::tenant_event(&tenant("acme"), Some("*"), EventKind::Completed),
        ),
        (&plain, subjects::event_any_tenant_job(EventKind::Completed)),
        (&plain, subjects::tenant_live_wildcard(&tenant("acme"))),
    ] {
        let _sub = client.subscribe(subject.clone()).await?;
        client.flush().await?;
        refusal_logged(secure, &subject).await?;
    }
    let expected_refusals = secure.violations().len();
    // A plain job may not name a tenant's files, to read or to write.
    for (id, req, reason) in [
        (
            "plain-reads-acme",
            fleet.request("plain-reads-acme", &acme_src, "r.mp4"),
            Reason::InputNotAllowed,
        ),
        (
            "plain-writes-acme",
            request(
                &fleet,
                "plain-writes-acme",
                &plain_src,
                &acme_out.join("same.mp4"),
            ),
            Reason::OutputNotAllowed,
        ),
    ] {
        fleet.submit(&req).await?;
        let failed = fleet.wait_failed(id, JOB_TIMEOUT).await?;
        assert_eq!(failed.reason, reason, "{id}: {}", failed.message);
    }
    // The tenant's request reusing its own finished job's id is answered among its events.
    submit_as(&fleet, &acme, "acme", &req).await?;
    let unnamed = JobId::unnamed_of(&tenant("acme"));
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let refusals = fleet.events(Some(unnamed.as_str())).await?;
        if let Some(JobEvent::Failed(f)) = refusals.first() {
            assert_eq!(f.reason, Reason::DuplicateJob, "{}", f.message);
            ensure!(!f.message.contains("acme="), "{}", f.message);
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no refusal of the tenant's duplicate among its events");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What a tenant may not name, each refused with a reason, in its own events.
    let rival_src = &acme_src; // acme's file, named by the rival
    let cases: Vec<(&str, &str, JobRequest, Reason)> = vec![
        (
            "acme",
            "out-escape",
            request(&fleet, "out-escape", &acme_src, &fleet.out_path("x.mp4")),
            Reason::OutputNotAllowed,
        ),
        (
            "acme",
            "in-escape",
            request(&fleet, "in-escape", &plain_src, &acme_out.join("y.mp4")),
            Reason::InputNotAllowed,
        ),
        (
            "acme",
            "object-in",
            JobRequest {
                input: "object:uploads/anything.mp4".into(),
                ..request(&fleet, "object-in", &acme_src, &acme_out.join("z.mp4"))
            },
            Reason::InputNotAllowed,
        ),
        (
            "acme",
            "too-high",
            JobRequest {
                priority: 6,
                ..request(&fleet, "too-high", &acme_src, &acme_out.join("w.mp4"))
            },
            Reason::PriorityNotAllowed,
        ),
        (
            "rival",
            "steal",
            request(&fleet, "steal", rival_src, &rival_out.join("s.mp4")),
            Reason::InputNotAllowed,
        ),
    ];
    for (who, id, req, reason) in &cases {
        let client = if *who == "acme" { &acme } else { &rival };
        submit_as(&fleet, client, who, req).await?;
        let job = JobId::scoped(&tenant(who), &JobId::new(*id)?);
        let failed = fleet.wait_failed(job.as_str(), JOB_TIMEOUT).await?;
        assert_eq!(failed.reason, *reason, "{who}/{id}: {}", failed.message);
    }
    // A request naming a scoped id is refused, and the refusal stays among the tenant's events.
    let mut forged = request(&fleet, "x", &acme_src, &acme_out.join("f.mp4"));
    forged.job_id = JobId::new("rival=x")?;
    submit_as(&fleet, &acme, "acme", &forged).await?;
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let evs = fleet.events(Some(unnamed.as_str())).await?;
        if evs
            .iter()
            .any(|e| matches!(e, JobEvent::Failed(f) if f.reason == Reason::InvalidRequest))
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no refusal of a scoped id among the tenant's events");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        fleet.events(Some("rival=x")).await?.is_empty() && fleet.events(None).await?.is_empty(),
        "a tenant's refused request spoke for another tenant's job or among everyone's"
    );
    quota(&fleet, &rival, troot.path(), &acme_src).await?;
    let violations = secure.violations();
    assert!(
        violations.len() == expected_refusals,
        "tenants' jobs needed more than the roles allow: {:#?}",
        &violations[expected_refusals.min(violations.len())..]
    );
    fleet.stop().await;
    Ok(())
}

/// `ffleet submit --wait` on a tenant's credentials, as its operator runs it: the job is
/// submitted on the tenant's subject, followed through its events and status, and the output
/// lands in the tenant's directory; `ffleet status` answers by the tenant's own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_submits_and_follows_as_a_tenant() -> Result<()> {
    let troot = tempfile::tempdir()?;
    let fleet = tenant_fleet(troot.path(), Default::default()).await?;
    let secure = fleet.secure.as_ref().expect("secure fleet");
    let src = media::tiny_source(&tenant_dir(troot.path(), "acme")?, "cli.mp4")?;
    let out = tenant_dir(troot.path(), "acme")?.join("cli-out.mp4");
    let acme = || -> Result<std::process::Command> {
        let mut c = ffleet_as_tenant(&secure.secrets, &tenant("acme"))?;
        c.args(["-s", &secure.url()]);
        Ok(c)
    };
    let run = |c: &mut std::process::Command| tokio::task::block_in_place(|| output(c));
    let done = run(acme()?
        .args(["submit", "--wait", "--job-id", "cli"])
        .arg(&src)
        .arg("-o")
        .arg(&out))?;
    ensure!(done.status.success(), "submit --wait as a tenant failed");
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).lines().next(),
        Some("cli")
    );
    assert!(out.is_file());
    fleet.wait_completed("acme=cli", JOB_TIMEOUT).await?;
    let status = run(acme()?.args(["status", "cli"]))?;
    ensure!(status.status.success(), "status as a tenant failed");
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("completed"),
        "status did not say completed"
    );
    // A tenant cancels its own jobs by its own ids: a finished one is answered with its final
    // state, unchanged; one it just submitted ends cancelled (or, if it was quicker, as it
    // ended); an id it never used is unknown, whatever other tenants or the plain submitter
    // run under it.
    let again = run(acme()?.args(["cancel", "cli"]))?;
    ensure!(again.status.success(), "cancel of a finished job failed");
    ensure!(String::from_utf8_lossy(&again.stdout).contains("completed"));
    assert!(out.is_file(), "a cancel removed a completed output");
    let sent = run(acme()?
        .args(["submit", "--job-id", "stopped"])
        .arg(&src)
        .arg("-o")
        .arg(out.with_file_name("stopped.mp4")))?;
    ensure!(sent.status.success(), "submit as a tenant failed");
    let cancelled = run(acme()?.args(["cancel", "stopped"]))?;
    ensure!(cancelled.status.success(), "cancel as a tenant failed");
    let ended = fleet.wait_terminal("acme=stopped", JOB_TIMEOUT).await?;
    if let JobEvent::Cancelled(_) = ended {
        assert!(
            !out.with_file_name("stopped.mp4").exists(),
            "a cancelled job left its output"
        );
    }
    let unknown = run(acme()?.args(["cancel", "nobody-ran-this"]))?;
    ensure!(
        !unknown.status.success(),
        "cancelling an unknown job succeeded"
    );
    // Media through the bucket is not a tenant's: refused before anything is sent.
    let upload = run(acme()?
        .args(["submit", "--upload", "--wait"])
        .arg(&src)
        .arg("-o")
        .arg(out.with_file_name("up.mp4")))?;
    ensure!(!upload.status.success(), "a tenant uploaded to the bucket");
    assert!(
        String::from_utf8_lossy(&upload.stderr).contains("tenant"),
        "the refusal does not say why"
    );
    let violations = secure.violations();
    assert!(
        violations.is_empty(),
        "the tenant's CLI needed more than its grant: {violations:#?}"
    );
    fleet.stop().await;
    Ok(())
}

/// Tenant `rival` may have one job in flight. While one is (admitted a moment ago, its record
/// still to come), a request is refused `quota_exceeded` with nothing recorded for it; a job
/// listed in flight long ago with no record behind it (a splitter died between admitting and
/// recording it) is pruned instead of holding the quota forever; and a job that ends leaves
/// room for the next (the service that ended it let it go).
async fn quota(
    fleet: &TestFleet,
    rival: &async_nats::Client,
    troot: &Path,
    acme_src: &Path,
) -> Result<()> {
    let rival_out = tenant_dir(troot, "rival")?;
    let src = rival_out.join("r.mp4");
    std::fs::copy(acme_src, &src)?;
    let req = |id: &str| request(fleet, id, &src, &rival_out.join(format!("{id}.mp4")));
    let scoped = |id: &str| JobId::scoped(&tenant("rival"), &JobId::new(id).expect("id"));
    // The usage record as the splitter writes it (the admin may not).
    let splitter_cfg = ffleet_runtime::config::Config {
        nats: fleet
            .secure
            .as_ref()
            .context("secure")?
            .config(Role::Splitter),
        ..(*fleet.ctx().config).clone()
    };
    let as_splitter =
        ffleet_runtime::runtime::Ctx::connect(std::sync::Arc::new(splitter_cfg), "splitter", false)
            .await?;
    let in_flight = |admitted: u64| {
        let mut u = ffleet_runtime::messages::TenantUsage::new();
        u.active.insert("other".into(), admitted);
        u
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    as_splitter.tenants.put("rival", &in_flight(now)).await?;
    submit_as(fleet, rival, "rival", &req("q1")).await?;
    let failed = fleet
        .wait_failed(scoped("q1").as_str(), JOB_TIMEOUT)
        .await?;
    assert_eq!(failed.reason, Reason::QuotaExceeded, "{}", failed.message);
    ensure!(
        fleet.ctx().jobs.get(scoped("q1").as_str()).await?.is_none(),
        "a refused request left a job record"
    );
    // Listed long ago with no record: pruned, and the next request runs.
    as_splitter.tenants.put("rival", &in_flight(1)).await?;
    submit_as(fleet, rival, "rival", &req("q2")).await?;
    fleet
        .wait_completed(scoped("q2").as_str(), JOB_TIMEOUT)
        .await?;
    // It ended: the next is admitted too, and nothing is left in flight after it.
    submit_as(fleet, rival, "rival", &req("q3")).await?;
    fleet
        .wait_completed(scoped("q3").as_str(), JOB_TIMEOUT)
        .await?;
    // A request reusing an ended job's id is refused as a duplicate, and holds no slot.
    submit_as(fleet, rival, "rival", &req("q3")).await?;
    let unnamed = JobId::unnamed_of(&tenant("rival"));
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    while !fleet
        .events(Some(unnamed.as_str()))
        .await?
        .iter()
        .any(|e| matches!(e, JobEvent::Failed(f) if f.reason == Reason::DuplicateJob))
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no duplicate refusal"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (usage, _) = as_splitter
        .tenants
        .get("rival")
        .await?
        .context("no usage record")?;
    assert!(usage.active.is_empty(), "{usage:?}");
    Ok(())
}
