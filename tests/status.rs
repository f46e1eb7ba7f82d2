//! The job status request (`ffleet.api.status`, NATS service `ffleet`, endpoint `status`),
//! against a real nats-server and fleet: the scheduler answers from the job's record for a job
//! unknown, encoding, completed and failed, the terminal answers carrying exactly the data of the
//! terminal events; a follower that missed a job's end (it subscribed after the job ended) and
//! may not read the record still ends with the outcome; a request refused before any record was
//! made is told with the request it was; a malformed request gets a service error while the
//! service keeps serving; and the service is found the way `nats micro` finds it.

mod common;

use anyhow::{Context, Result, bail};
use common::{FleetOptions, JobClient, TestFleet, media};
use ffleet::cli::{Link, Outcome};
use ffleet::local::{Cluster, ClusterSpec};
use ffleet_runtime::JobId;
use ffleet_runtime::messages::status::MAX_STATUS_REQUEST_BYTES;
use ffleet_runtime::messages::{JobStatus, StatusState};
use ffleet_runtime::reason::Reason;
use ffleet_runtime::subjects::{self, service_api};
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// A fleet with no encoder whose status endpoint answers: the services start in the
/// background, and a request sent before the scheduler has registered it finds no responder.
async fn serving_fleet() -> Result<TestFleet> {
    let fleet = TestFleet::spawn_with(FleetOptions {
        encoders: 0,
        ..Default::default()
    })
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = ask(&fleet, "probe").await {
        if tokio::time::Instant::now() > deadline {
            return Err(e.context("the status endpoint never answered"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(fleet)
}

async fn ask(fleet: &TestFleet, job: &str) -> Result<JobStatus> {
    ffleet::cli::ask_status(&fleet.ctx().client, &JobId::new(job)?).await
}

/// Asks until the answer satisfies `done` (the job moves on between answers).
async fn ask_until(
    fleet: &TestFleet,
    job: &str,
    done: impl Fn(&JobStatus) -> bool,
) -> Result<JobStatus> {
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let st = ask(fleet, job).await?;
        if done(&st) {
            return Ok(st);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("job {job} stayed {:?}", st.state);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows `job` (the request stored at `request_seq`, if given) as a client that may not read
/// the jobs bucket (a submitter), subscribing only now: whatever the job published before is
/// missed.
async fn follow_late(fleet: &TestFleet, job: &str, request_seq: Option<u64>) -> Result<Outcome> {
    let job = JobId::new(job)?;
    let link = Link {
        client: fleet.ctx().client.clone(),
        jobs: None,
    };
    let mut subs = ffleet::cli::subscribe(&link.client, &job).await?;
    if let Some(seq) = request_seq {
        subs = subs.request(seq);
    }
    tokio::time::timeout(
        Duration::from_secs(15),
        ffleet::cli::follow(&link, &job, subs, false),
    )
    .await
    .context("the late follower never ended")?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_a_job_from_unknown_to_encoding_to_its_outcome() -> Result<()> {
    // No encoder at first: the job waits in `encoding` with its plan known.
    let mut fleet = serving_fleet().await?;
    let src = media::tiny_source(fleet.media.path(), "st.mp4")?;
    let unknown = ask(&fleet, "st").await?;
    assert_eq!(
        serde_json::to_value(&unknown)?,
        serde_json::json!({"version": 1, "job_id": "st", "state": "unknown"})
    );
    fleet.submit(&fleet.request("st", &src, "st.mp4")).await?;
    let running = ask_until(&fleet, "st", |s| s.state == StatusState::Encoding).await?;
    let units = running
        .units_total
        .context("no unit count while encoding")?;
    assert!(units >= 2, "a video unit and the tracks unit: {running:?}");
    assert_eq!(running.units_done, Some(0));
    assert_eq!(running.frames_total, Some(50));
    assert!(!running.is_terminal() && running.completed.is_none() && running.failed.is_none());

    // An encoder joins and the job completes: the answer is the completed event's data.
    let encoders = Cluster::start(
        fleet.config.clone(),
        ClusterSpec {
            encoders: 1,
            slots: Some(1),
            control_plane: false,
        },
    )
    .await?;
    let done = fleet.wait_completed("st", JOB_TIMEOUT).await?;
    let st = ask(&fleet, "st").await?;
    assert_eq!(st.state, StatusState::Completed);
    assert_eq!(st.completed.as_ref(), Some(&done));
    assert_eq!(st.units_done, Some(units));

    // A job that fails: the answer is the failed event's data.
    let missing = fleet.media.path().join("missing.mp4");
    fleet
        .submit(&fleet.request("st-missing", &missing, "missing.mp4"))
        .await?;
    let failed = fleet.wait_failed("st-missing", JOB_TIMEOUT).await?;
    let st = ask(&fleet, "st-missing").await?;
    assert_eq!(st.state, StatusState::Failed);
    assert_eq!(st.failed.as_ref(), Some(&failed));
    assert_eq!(failed.reason, Reason::InputMissing);

    // Followers that subscribe after the end, and may not read the record, end all the same.
    match follow_late(&fleet, "st", None).await? {
        Outcome::Completed(c) => assert_eq!(c, done),
        other => bail!("expected completed, got {other:?}"),
    }
    match follow_late(&fleet, "st-missing", None).await? {
        Outcome::Failed(f) => assert_eq!(f, failed),
        other => bail!("expected failed, got {other:?}"),
    }
    fleet.assert_running()?;
    encoders.stop().await;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_refused_ones_are_told_and_the_service_keeps_serving() -> Result<()>
{
    let mut fleet = serving_fleet().await?;
    let client = fleet.ctx().client.clone();
    let oversize = format!(
        r#"{{"version":1,"job_id":"j","pad":"{}"}}"#,
        "x".repeat(MAX_STATUS_REQUEST_BYTES)
    );
    let cases = [
        ("not json".to_owned(), "JSON"),
        (r#"{"version":2,"job_id":"j"}"#.to_owned(), "version 2"),
        (r#"{"version":1,"job_id":"a.b"}"#.to_owned(), "job_id"),
        (r#"{"version":1}"#.to_owned(), "job_id"),
        // A field name with a line break, quoted back in the error (a header): sent as one line.
        (
            r#"{"version":1,"job_id":"j","a\r\nNats-Evil: 1":1}"#.to_owned(),
            "unknown field",
        ),
        (oversize, "limit"),
    ];
    for (payload, says) in &cases {
        let reply = client
            .request(subjects::API_STATUS, payload.clone().into())
            .await?;
        let (code, message) =
            ffleet::cli::service_error(&reply).context("no service error on a bad request")?;
        assert_eq!(code, "400", "{payload}: {message}");
        assert!(message.contains(says), "{payload}: {message}");
        assert!(reply.payload.is_empty());
    }
    // Still serving.
    assert_eq!(ask(&fleet, "nobody").await?.state, StatusState::Unknown);

    // A request refused before any record was made (a priority the submit subject does not
    // allow) is told as such, naming the request; its follower ends with the refusal.
    let mut req = fleet.request("st-refused", &fleet.media.path().join("x.mp4"), "x.mp4");
    req.priority = 5;
    let seq = fleet
        .submit_raw_seq(&serde_json::to_vec(&req)?, Some("st-refused"))
        .await?;
    let refusal = fleet.wait_failed("st-refused", JOB_TIMEOUT).await?;
    assert_eq!(refusal.reason, Reason::PriorityNotAllowed);
    let st = ask(&fleet, "st-refused").await?;
    assert_eq!(st.state, StatusState::Refused);
    assert_eq!(st.request_seq, Some(seq));
    assert_eq!(st.failed.as_ref(), Some(&refusal));
    match follow_late(&fleet, "st-refused", Some(seq)).await? {
        Outcome::Failed(f) => assert_eq!(f, refusal),
        other => bail!("expected the refusal, got {other:?}"),
    }

    // Found as `nats micro info ffleet` and `nats micro stats ffleet` find it: among the
    // service's instances (the schedulers' with the status endpoints, the mergers' with the
    // cancel endpoints), the scheduler's.
    let infos: Vec<async_nats::service::Info> = every_answer(&client, "INFO").await?;
    let (info, endpoint) = infos
        .iter()
        .find_map(|i| {
            let e = i
                .endpoints
                .iter()
                .find(|e| e.subject == subjects::API_STATUS)?;
            Some((i, e))
        })
        .context("no status endpoint in the service info")?;
    assert_eq!(info.name, service_api::NAME);
    assert_eq!(endpoint.name, service_api::STATUS_ENDPOINT);
    assert!(
        infos.iter().any(|i| i
            .endpoints
            .iter()
            .any(|e| e.subject == subjects::API_CANCEL)),
        "no cancel endpoint among the instances"
    );
    let stats: Vec<async_nats::service::Stats> = every_answer(&client, "STATS").await?;
    let counted = stats
        .iter()
        .flat_map(|s| &s.endpoints)
        .find(|e| e.name == service_api::STATUS_ENDPOINT)
        .context("no status endpoint in the service stats")?;
    assert_eq!(counted.errors, cases.len(), "{counted:?}");
    assert!(counted.requests > cases.len() + 1, "{counted:?}");
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}

/// Every instance's answer to discovery verb `verb` of ffleet's service, as `nats micro`
/// gathers them: one request, the answers that arrive within a second.
async fn every_answer<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    verb: &str,
) -> Result<Vec<T>> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(service_api::verb(verb), inbox, "".into())
        .await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Ok(Some(m)) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut sub)).await
    {
        out.push(serde_json::from_slice(&m.payload)?);
    }
    Ok(out)
}
