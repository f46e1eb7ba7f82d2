//! What finished jobs leave in the record buckets, against a real nats-server: the leader purges
//! a finished job's unit records and its job record's older revisions after
//! `scheduler.keep_finished_records_secs`, so buckets at their message cap
//! (`streams.max_msgs`) keep taking work; and a job whose unit records do not fit fails at once,
//! naming the cap, instead of waiting on a bucket that only finished jobs can empty.

mod common;

use anyhow::{Result, bail, ensure};
use common::fleet::FleetOptions;
use common::{JobClient, TestFleet, media};
use ffleet_runtime::subjects;
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// A fleet whose streams and buckets hold at most `max_msgs` messages each, purging finished
/// jobs' records half a second after they end.
async fn capped_fleet(max_msgs: i64) -> Result<TestFleet> {
    capped(max_msgs, false).await
}

/// `capped_fleet`; `secure`: each service on its own role's credentials.
async fn capped(max_msgs: i64, secure: bool) -> Result<TestFleet> {
    TestFleet::spawn_with(FleetOptions {
        secure,
        tweak: Box::new(move |cfg| {
            cfg.streams.max_msgs = max_msgs;
            cfg.set_section(&ffleet_scheduler::SchedulerConfig {
                keep_finished_records_secs: 0.5,
                ..Default::default()
            })
            .expect("scheduler section");
        }),
        ..Default::default()
    })
    .await
}

/// Messages the bucket's stream holds now.
async fn held(fleet: &TestFleet, bucket: &str) -> Result<u64> {
    let mut stream = fleet
        .ctx()
        .js
        .get_stream(subjects::kv_stream(bucket))
        .await?;
    Ok(stream.info().await?.state.messages)
}

/// Waits until the bucket's stream holds `want` messages.
async fn wait_held(fleet: &TestFleet, bucket: &str, want: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = held(fleet, bucket).await?;
        if n == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{bucket} still holds {n} messages, not {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn buckets_at_their_cap_keep_taking_jobs_as_finished_jobs_records_are_purged() -> Result<()> {
    // Four units of up to five revisions each fill two thirds of the cap: without the purge the
    // second job's records would not fit.
    let mut fleet = capped_fleet(30).await?;
    let src = media::long_tiny_source(fleet.media.path(), "in.mp4", 4)?;
    for i in 0..4 {
        let id = format!("capped-{i}");
        let mut req = fleet.request(&id, &src, &format!("{id}.mp4"));
        req.segment_seconds = Some(1.0);
        fleet.submit(&req).await?;
        let done = fleet.wait_completed(&id, JOB_TIMEOUT).await?;
        ensure!(done.frames == 40, "{id}: {} frames", done.frames);
        // Gone after the keep time: every unit record, and all but the last job-record revision
        // of each finished job.
        wait_held(&fleet, subjects::BUCKET_SEGMENTS, 0).await?;
        wait_held(&fleet, subjects::BUCKET_JOBS, i + 1).await?;
    }
    let rec = fleet
        .ctx()
        .jobs
        .get("capped-3")
        .await?
        .expect("a finished job's record stays");
    ensure!(
        rec.0.state.is_terminal(),
        "its last revision: {:?}",
        rec.0.state
    );
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_job_whose_unit_records_do_not_fit_fails_at_once_and_the_next_runs() -> Result<()> {
    let mut fleet = capped_fleet(16).await?;
    let big = media::long_tiny_source(fleet.media.path(), "big.mp4", 24)?;
    let mut req = fleet.request("too-many-units", &big, "big.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    let failed = fleet.wait_failed("too-many-units", JOB_TIMEOUT).await?;
    // Its own reason, not the splitter's give-up after minutes of retries (`split_failed`).
    ensure!(
        failed.reason == ffleet_runtime::reason::Reason::StorageFull,
        "reason: {:?}: {}",
        failed.reason,
        failed.message
    );
    for named in [subjects::BUCKET_SEGMENTS, "streams.max_msgs"] {
        ensure!(
            failed.message.contains(named),
            "names {named}: {}",
            failed.message
        );
    }
    // Its partial records go too, and a job that fits runs.
    wait_held(&fleet, subjects::BUCKET_SEGMENTS, 0).await?;
    let small = media::long_tiny_source(fleet.media.path(), "small.mp4", 2)?;
    let mut req = fleet.request("fits", &small, "small.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    fleet.wait_completed("fits", JOB_TIMEOUT).await?;
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test]
async fn the_scheduler_role_may_purge_finished_jobs_records() -> Result<()> {
    let mut fleet = capped(1000, true).await?;
    let src = media::long_tiny_source(fleet.media.path(), "in.mp4", 2)?;
    let mut req = fleet.request("secure-purge", &src, "out.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    fleet.wait_completed("secure-purge", JOB_TIMEOUT).await?;
    wait_held(&fleet, subjects::BUCKET_SEGMENTS, 0).await?;
    wait_held(&fleet, subjects::BUCKET_JOBS, 1).await?;
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}
