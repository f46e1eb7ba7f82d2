//! Fault injection: the services run as separate processes and the faults are real signals.
//! For each fault the job completes, exactly one terminal event is stored, and the output is
//! byte-identical to a fault-free run of the same job in the same fleet. Each test prints the
//! recovery time it measured (run with `--no-capture` to see them).

mod common;

use anyhow::{Context, Result, bail, ensure};
use common::procs::ProcFleet;
use common::{JobClient, media};
use ffleet_runtime::messages::{self, DeadLetter, JobState, SegmentState, Task};
use ffleet_runtime::nats::kv::Change;
use ffleet_runtime::subjects::EventKind;
use ffleet_runtime::{NodeId, Unit, subjects};
use futures::StreamExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// 8 s of 640x360 with B-frames and audio, keyframes every 1.6 s: five video segments that
/// take a second or so each to encode, so a fault lands mid-segment.
fn source(fleet: &ProcFleet) -> Result<PathBuf> {
    media::ntsc_source(&fleet.media(), "src.mp4", 8, "640x360")
}

async fn submit(fleet: &ProcFleet, id: &str, src: &std::path::Path) -> Result<()> {
    let mut req = fleet.request(id, src, &format!("{id}.mp4"));
    req.segment_seconds = Some(1.6);
    fleet.submit(&req).await
}

/// The fault-free output of the job, run first in the same fleet.
async fn reference(fleet: &ProcFleet, src: &std::path::Path) -> Result<Vec<u8>> {
    submit(fleet, "reference", src).await?;
    fleet.wait_completed("reference", JOB_TIMEOUT).await?;
    Ok(std::fs::read(fleet.out_path("reference.mp4"))?)
}

/// A standard fleet of `encoders`, the source, and its fault-free output.
async fn prepared(encoders: usize) -> Result<(ProcFleet, PathBuf, Vec<u8>)> {
    let fleet = ProcFleet::standard(encoders, &[]).await?;
    let src = source(&fleet)?;
    let reference = reference(&fleet, &src).await?;
    Ok((fleet, src, reference))
}

/// The job completed exactly once and its output equals the reference, byte for byte.
async fn check(fleet: &ProcFleet, job: &str, reference: &[u8]) -> Result<()> {
    fleet.completed_once(job, reference, JOB_TIMEOUT).await
}

/// A video unit running on some node: (unit key, owner, attempt).
async fn running(fleet: &ProcFleet, job: &str) -> Result<(String, String, u32)> {
    fleet
        .wait_unit(job, Duration::from_secs(60), |k, r| {
            (r.state == SegmentState::Running && !k.ends_with(".audio"))
                .then(|| Some((k.to_owned(), r.owner.clone()?.to_string(), r.attempt)))
                .flatten()
        })
        .await
}

/// Waits until `key` runs again under a newer attempt on another node; returns how long after
/// `since` that was seen.
async fn moved(
    fleet: &ProcFleet,
    job: &str,
    key: &str,
    attempt: u32,
    from: &[&str],
    since: Instant,
) -> Result<Duration> {
    fleet
        .wait_unit(job, Duration::from_secs(60), |k, r| {
            let elsewhere = r
                .owner
                .as_ref()
                .is_some_and(|o| !from.contains(&o.as_str()));
            (k == key
                && r.attempt > attempt
                && elsewhere
                && matches!(r.state, SegmentState::Running | SegmentState::Done))
            .then_some(())
        })
        .await?;
    Ok(since.elapsed())
}

#[tokio::test]
async fn encoder_killed_mid_segment() -> Result<()> {
    let (mut fleet, src, reference) = prepared(3).await?;

    submit(&fleet, "job", &src).await?;
    let (key, owner, attempt) = running(&fleet, "job").await?;
    let victim = fleet.encoder(&owner)?;
    fleet.kill(victim);
    let killed = Instant::now();
    let took = moved(&fleet, "job", &key, attempt, &[&owner], killed).await?;
    println!(
        "recovery: encoder {owner} killed (SIGKILL) -> {key} running elsewhere in {:.2} s",
        took.as_secs_f64()
    );
    check(&fleet, "job", &reference).await?;
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn two_of_three_encoders_killed_at_once() -> Result<()> {
    let (mut fleet, src, reference) = prepared(3).await?;

    submit(&fleet, "job", &src).await?;
    let (key, owner, attempt) = running(&fleet, "job").await?;
    let other = ["enc-1", "enc-2", "enc-3"]
        .into_iter()
        .find(|n| *n != owner)
        .context("another encoder")?;
    let (a, b) = (fleet.encoder(&owner)?, fleet.encoder(other)?);
    fleet.kill(a);
    fleet.kill(b);
    let killed = Instant::now();
    let took = moved(&fleet, "job", &key, attempt, &[&owner, other], killed).await?;
    println!(
        "recovery: encoders {owner} and {other} killed -> {key} running on the survivor in {:.2} s",
        took.as_secs_f64()
    );
    check(&fleet, "job", &reference).await?;
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn encoder_frozen_then_resumed_late_drops_its_work() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;

    submit(&fleet, "job", &src).await?;
    let (key, owner, attempt) = running(&fleet, "job").await?;
    let victim = fleet.encoder(&owner)?;
    fleet.signal(victim, "STOP")?;
    let frozen = Instant::now();
    let took = moved(&fleet, "job", &key, attempt, &[&owner], frozen).await?;
    println!(
        "recovery: encoder {owner} frozen (SIGSTOP) -> {key} running elsewhere in {:.2} s",
        took.as_secs_f64()
    );
    check(&fleet, "job", &reference).await?;

    // Woken long after it lost the unit: it must notice, drop the work, and carry on.
    fleet.signal(victim, "CONT")?;
    let woke = Instant::now();
    loop {
        let log = fleet.log_text(victim);
        if log.contains("superseded unit dropped")
            || log.contains("result of a superseded attempt discarded")
        {
            break;
        }
        if woke.elapsed() > Duration::from_secs(20) {
            bail!("the woken encoder never noticed it lost {key}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(fleet.running(victim), "the woken encoder exited");
    // Its late result was not merged and did not produce a second completion.
    ensure!(fleet.terminal_count("job").await? == 1);
    ensure!(std::fs::read(fleet.out_path("job.mp4"))? == reference);
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn frozen_ffmpeg_child_is_killed_and_its_segment_given_back() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;

    submit(&fleet, "job", &src).await?;
    let (key, owner, _) = running(&fleet, "job").await?;
    let enc = fleet.encoder(&owner)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // The encode itself (an ffprobe of the cut runs first, briefly).
    let is_ffmpeg = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ffmpeg")
    };
    let child = loop {
        if let Some(c) = fleet.children(enc).into_iter().find(is_ffmpeg) {
            break c;
        }
        ensure!(Instant::now() < deadline, "no ffmpeg child appeared");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    common::procs::signal_pid(child, "STOP")?;
    let frozen = Instant::now();
    // The encoder kills it after the stall timeout and hands the unit back; whoever takes it
    // next (possibly the same node) finishes it. (A frozen ffprobe of the cut goes the same
    // way: `a_frozen_probe_of_the_cut_gives_its_segment_back`.)
    fleet
        .wait_unit("job", Duration::from_secs(60), |k, r| {
            (k == key && r.state == SegmentState::Done).then_some(())
        })
        .await?;
    println!(
        "recovery: ffmpeg child frozen (SIGSTOP) -> {key} encoded again and done in {:.2} s (stall timeout 3 s)",
        frozen.elapsed().as_secs_f64()
    );
    ensure!(
        fleet.log_text(enc).contains("made no progress"),
        "the stall was not reported"
    );
    check(&fleet, "job", &reference).await?;
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn a_frozen_probe_of_the_cut_gives_its_segment_back() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;
    submit(&fleet, "job", &src).await?;
    let encoders = [fleet.encoder("enc-1")?, fleet.encoder("enc-2")?];
    let is_ffprobe = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ffprobe")
    };
    // Whichever node probes a cut first: its probe is frozen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (enc, child) = 'found: loop {
        for e in encoders {
            if let Some(c) = fleet.children(e).into_iter().find(is_ffprobe) {
                break 'found (e, c);
            }
        }
        ensure!(Instant::now() < deadline, "no ffprobe child appeared");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    common::procs::signal_pid(child, "STOP")?;
    // Its unit goes back after the stall timeout and the job completes as the reference did.
    check(&fleet, "job", &reference).await?;
    ensure!(
        fleet
            .log_text(enc)
            .contains("ffprobe of the cut made no progress"),
        "the frozen probe was not reported"
    );
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn scheduler_leader_killed_a_replica_takes_over() -> Result<()> {
    let mut fleet = ProcFleet::start(&[]).await?;
    for svc in ["splitter", "merger", "scheduler", "scheduler"] {
        fleet.spawn(svc, &[])?;
    }
    for n in ["enc-1", "enc-2"] {
        fleet.spawn_encoder(n)?;
    }
    fleet.wait_encoders(2, Duration::from_secs(30)).await?;
    let src = source(&fleet)?;
    let reference = reference(&fleet, &src).await?;

    let leases = fleet.ctx().leases.clone();
    let holder = || async {
        leases
            .get(subjects::LEASE_SCHEDULER)
            .await
            .ok()
            .flatten()
            .map(|v| ffleet_runtime::messages::SchedulerLease::read(&v).holder)
    };
    let leader = holder().await.context("no scheduler holds the lease")?;
    let pid: u32 = leader.split(':').nth(1).context("holder pid")?.parse()?;
    let idx = (0..fleet.services.len())
        .find(|i| fleet.pid_of(*i) == pid)
        .context("leader process")?;

    fleet.kill(idx);
    let killed = Instant::now();
    let takeover = loop {
        if let Some(h) = holder().await
            && h != leader
        {
            break killed.elapsed();
        }
        ensure!(killed.elapsed() < Duration::from_secs(20), "no takeover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "recovery: scheduler leader killed -> replica took the lease in {:.2} s (lease TTL 3 s)",
        takeover.as_secs_f64()
    );
    // The new leader routes the next job, and does the leader's failover work.
    submit(&fleet, "job", &src).await?;
    let (key, owner, attempt) = running(&fleet, "job").await?;
    let victim = fleet.encoder(&owner)?;
    fleet.kill(victim);
    let took = moved(&fleet, "job", &key, attempt, &[&owner], Instant::now()).await?;
    println!(
        "recovery: then encoder {owner} killed -> {key} moved by the new leader in {:.2} s",
        took.as_secs_f64()
    );
    check(&fleet, "job", &reference).await?;
    fleet.passed();
    Ok(())
}

/// Starts watching a job record (before the job is submitted, so no state is missed).
async fn watch_job(fleet: &ProcFleet, job: &str) -> Result<async_nats::jetstream::kv::Watch> {
    Ok(fleet.ctx().jobs.store().watch(job).await?)
}

/// Waits until the watched job record reaches `state`.
async fn reached(mut watch: async_nats::jetstream::kv::Watch, state: JobState) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Some(e) = tokio::time::timeout_at(deadline, watch.next())
        .await
        .context("state not reached")?
    {
        let e = e?;
        if let Ok(rec) =
            ffleet_runtime::messages::decode::<ffleet_runtime::messages::JobRecord>("job", &e.value)
            && rec.state == state
        {
            return Ok(());
        }
    }
    bail!("watch ended")
}

#[tokio::test]
async fn splitter_killed_mid_split() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;

    let watch = watch_job(&fleet, "job").await?;
    submit(&fleet, "job", &src).await?;
    reached(watch, JobState::Splitting).await?;
    fleet.kill(0);
    let killed = Instant::now();
    fleet.spawn("splitter", &[])?;
    fleet
        .wait_unit("job", Duration::from_secs(60), |_, _| Some(()))
        .await?;
    println!(
        "recovery: splitter killed while splitting -> restarted one planned the job {:.2} s later (AckWait 6 s)",
        killed.elapsed().as_secs_f64()
    );
    check(&fleet, "job", &reference).await?;
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn merger_killed_mid_merge() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;

    let watch = watch_job(&fleet, "job").await?;
    submit(&fleet, "job", &src).await?;
    reached(watch, JobState::Merging).await?;
    fleet.kill(2);
    let killed = Instant::now();
    fleet.spawn("merger", &[])?;
    check(&fleet, "job", &reference).await?;
    println!(
        "recovery: merger killed while merging -> restarted one completed the job {:.2} s later (AckWait 6 s)",
        killed.elapsed().as_secs_f64()
    );
    fleet.passed();
    Ok(())
}

/// A unit whose record says it runs on a live node that does not hold it (its task was let go
/// on a read older than the claim) is re-issued by the reconciler: that node's heartbeats no
/// longer name it. Staged by hand: the running owner frozen, the record pointed at the other
/// (live, idle) node, the task message removed, the frozen node killed.
#[tokio::test]
async fn a_unit_its_live_owner_does_not_hold_is_reissued() -> Result<()> {
    let env = [
        ("FFLEET_SCHEDULER__LOST_TASK_SECS", "2"),
        ("FFLEET_SCHEDULER__RECONCILE_INTERVAL_SECS", "1"),
    ];
    let mut fleet = ProcFleet::standard(2, &env).await?;
    let src = source(&fleet)?;
    let reference = reference(&fleet, &src).await?;
    submit(&fleet, "job", &src).await?;
    let (key, owner, attempt) = running(&fleet, "job").await?;
    let victim = fleet.encoder(&owner)?;
    fleet.signal(victim, "STOP")?;
    let other = NodeId::new(if owner == "enc-1" { "enc-2" } else { "enc-1" })?;
    let moved_to = other.clone();
    let pointed = fleet
        .ctx()
        .segments
        .modify(&key, |r| match r {
            Some(r) if r.state == SegmentState::Running && r.attempt == attempt => {
                let mut n = r.clone();
                n.owner = Some(moved_to.clone());
                Change::Write(n, true)
            }
            _ => Change::Keep(false),
        })
        .await?;
    ensure!(pointed, "{key} finished before it could be staged");
    ensure!(
        remove_task(&fleet, &key, attempt).await? == 1,
        "the task of {key} was not found in its queue"
    );
    fleet.kill(victim);
    let staged = Instant::now();
    let took = moved(&fleet, "job", &key, attempt, &[&owner], staged).await?;
    check(&fleet, "job", &reference).await?;
    println!(
        "recovery: {key} left running on live {other} without its task -> re-issued in {:.2} s (lost_task_secs 2 s)",
        took.as_secs_f64()
    );
    ensure!(
        fleet.log_text(1).contains("owner no longer holds it"),
        "the scheduler did not say why it re-issued {key}"
    );
    fleet.passed();
    Ok(())
}

/// Deletes the encode task of `attempt` of unit `key` from the tasks stream; how many it found.
async fn remove_task(fleet: &ProcFleet, key: &str, attempt: u32) -> Result<usize> {
    let mut stream = fleet.ctx().js.get_stream(subjects::STREAM_TASKS).await?;
    let (first, last) = {
        let s = &stream.info().await?.state;
        (s.first_sequence, s.last_sequence)
    };
    let mut removed = 0;
    for seq in first..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Ok(task) = messages::decode::<Task>("task", &msg.payload) else {
            continue;
        };
        if subjects::segment_key(&task.job_id, task.unit) == key && task.attempt == attempt {
            stream.delete_message(seq).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Reports that never reach the merger (removed from the stream while it was down) are sent
/// again by the scheduler's reconciler once their units have been done for `lost_task_secs`.
#[tokio::test]
async fn lost_segment_reports_are_sent_again() -> Result<()> {
    let mut fleet = ProcFleet::standard(2, &[("FFLEET_SCHEDULER__LOST_TASK_SECS", "1")]).await?;
    let src = source(&fleet)?;
    let reference = reference(&fleet, &src).await?;
    fleet.kill(2);
    submit(&fleet, "job", &src).await?;
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let units = fleet.units("job").await;
        let planned = fleet
            .job("job")
            .await
            .and_then(|r| r.plan.map(|p| p.unit_count()));
        if planned == Some(units.len()) && units.iter().all(|(_, r)| r.state == SegmentState::Done)
        {
            break;
        }
        ensure!(Instant::now() < deadline, "the units never got done");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An encoder writes `done` before it reports: let the last report land, then lose them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = fleet.ctx().js.get_stream(subjects::STREAM_EVENTS).await?;
    let job = ffleet_runtime::JobId::new("job")?;
    let purged = events
        .purge()
        .filter(subjects::event(Some(&job), EventKind::SegmentDone))
        .await?;
    ensure!(purged.purged > 0, "no report to lose");
    let lost = Instant::now();
    fleet.spawn("merger", &[])?;
    check(&fleet, "job", &reference).await?;
    println!(
        "recovery: {} segment reports lost -> job completed {:.2} s later (lost_task_secs 1 s)",
        purged.purged,
        lost.elapsed().as_secs_f64()
    );
    ensure!(
        fleet.log_text(1).contains("report sent again"),
        "the scheduler never sent a report again"
    );
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn nats_server_killed_and_restarted_mid_job() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;

    submit(&fleet, "job", &src).await?;
    running(&fleet, "job").await?;
    let disconnects = |fleet: &ProcFleet| -> Vec<usize> {
        (0..fleet.services.len())
            .map(|i| fleet.log_text(i).matches("nats disconnected").count())
            .collect()
    };
    let before = disconnects(&fleet);
    fleet.server().kill();
    let killed = Instant::now();
    // Down until every service has seen it go (not a guessed time): each then reconnects.
    while disconnects(&fleet).iter().zip(&before).any(|(n, b)| n <= b) {
        ensure!(
            killed.elapsed() < Duration::from_secs(30),
            "services did not notice the server going: {:?} disconnects, {before:?} before",
            disconnects(&fleet)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.server().restart()?;
    check(&fleet, "job", &reference).await?;
    println!(
        "recovery: nats-server killed and restarted on its store -> job completed {:.2} s later",
        killed.elapsed().as_secs_f64()
    );
    for i in 0..fleet.services.len() {
        ensure!(
            fleet.running(i),
            "{} exited after the restart",
            fleet.services[i].name
        );
    }
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn poison_segment_failing_the_same_way_twice_fails_its_job_while_others_complete()
-> Result<()> {
    let mut fleet = ProcFleet::standard(3, &[]).await?;
    let poison = media::poison_source(&fleet.media(), "poison.mp4")?;
    let good = media::tiny_source(&fleet.media(), "good.mp4")?;
    let mut req = fleet.request("poisoned", &poison, "poisoned.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    let mut req = fleet.request("healthy", &good, "healthy.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;

    let started = Instant::now();
    let failed = fleet.wait_failed("poisoned", JOB_TIMEOUT).await?;
    println!(
        "poison: failed in {:.2} s: {}: {}",
        started.elapsed().as_secs_f64(),
        failed.reason,
        failed.message
    );
    // The same failure on two nodes is a property of the input: the job fails at once.
    ensure!(failed.reason.code() == "input_damaged", "{failed:?}");
    // The reason names the unit first, its time range, the nodes and the last error lines.
    let unit: Unit = failed
        .message
        .split_whitespace()
        .next()
        .context("unit in the reason")?
        .parse()?;
    ensure!(
        failed.message.contains("Error while decoding stream")
            || failed.message.contains("exit code 69"),
        "no error lines: {failed:?}"
    );
    ensure!(
        failed.message.contains("(input "),
        "no time range: {failed:?}"
    );
    ensure!(failed.message.contains("same way on 2 nodes"), "{failed:?}");
    fleet.wait_completed("healthy", JOB_TIMEOUT).await?;

    // The poisoned task waits on the dead-letter subject, once.
    let job = ffleet_runtime::JobId::new("poisoned")?;
    let stream = fleet.ctx().js.get_stream(subjects::STREAM_DEAD).await?;
    let msg = stream
        .get_last_raw_message_by_subject(&subjects::dead_letter(&job, unit))
        .await?;
    let letter: DeadLetter = serde_json::from_slice(&msg.payload)?;
    // Two distinct nodes end it; a node may take it twice meanwhile, within max_attempts.
    let mut nodes: Vec<_> = letter.failures.iter().map(|f| f.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    ensure!(nodes.len() == 2, "{letter:?}");
    ensure!((2..=4).contains(&letter.failures.len()), "{letter:?}");
    ensure!(stream.get_info().await?.state.messages == 1);
    // No task of it is left looping in the queues: once every queue's consumer has handled
    // all it was given, the queues are empty.
    fleet
        .wait_idle(subjects::STREAM_TASKS, None, Duration::from_secs(60))
        .await?;
    let tasks = fleet.ctx().js.get_stream(subjects::STREAM_TASKS).await?;
    ensure!(
        tasks.get_info().await?.state.messages == 0,
        "tasks left in the queues"
    );
    ensure!(fleet.terminal_count("poisoned").await? == 1);
    for i in 0..fleet.services.len() {
        ensure!(fleet.running(i), "{} exited", fleet.services[i].name);
    }
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_with_that_reason() -> Result<()> {
    let mut fleet = ProcFleet::standard(1, &[("FFLEET_SCHEDULER__JOB_DEADLINE_SECS", "1")]).await?;
    let src = source(&fleet)?;
    submit(&fleet, "late", &src).await?;
    let failed = fleet.wait_failed("late", JOB_TIMEOUT).await?;
    ensure!(failed.reason.code() == "deadline_exceeded", "{failed:?}");
    ensure!(!fleet.out_path("late.mp4").exists());
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn sigterm_drains_an_encoder_and_hands_its_unit_back() -> Result<()> {
    let (mut fleet, src, reference) = prepared(2).await?;

    submit(&fleet, "job", &src).await?;
    let (key, owner, _) = running(&fleet, "job").await?;
    let enc = fleet.encoder(&owner)?;
    let stopping = Instant::now();
    let code = fleet.terminate(enc, Duration::from_secs(20));
    ensure!(code == Some(0), "encoder exit code {code:?}");
    println!(
        "graceful stop: encoder {owner} exited {:.2} s after SIGTERM (grace 0 s)",
        stopping.elapsed().as_secs_f64()
    );
    ensure!(
        fleet.ctx().workers.get(&owner).await?.is_none(),
        "heartbeat left behind"
    );
    fleet
        .wait_unit("job", Duration::from_secs(60), |k, r| {
            (k == key && r.owner.as_ref().is_some_and(|o| o.as_str() != owner)).then_some(())
        })
        .await?;
    check(&fleet, "job", &reference).await?;
    fleet.passed();
    Ok(())
}

#[tokio::test]
async fn soak_100_jobs_with_an_encoder_killed_every_few_seconds() -> Result<()> {
    let mut fleet = ProcFleet::standard(3, &[]).await?;
    let src = media::tiny_source(&fleet.media(), "tiny.mp4")?;
    let ids: Vec<String> = (0..100).map(|i| format!("soak-{i:03}")).collect();
    for id in &ids {
        let mut req = fleet.request(id, &src, &format!("{id}.mp4"));
        req.segment_seconds = Some(1.0);
        fleet.submit(&req).await?;
    }
    let started = Instant::now();
    let mut kills = 0;
    let mut next = 0usize;
    let mut pending: Vec<&String> = ids.iter().collect();
    while !pending.is_empty() {
        ensure!(
            started.elapsed() < Duration::from_secs(600),
            "{} jobs unfinished",
            pending.len()
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Kill one encoder and start it again under the same name.
        let node = format!("enc-{}", next % 3 + 1);
        next += 1;
        let idx = fleet.encoder(&node)?;
        fleet.kill(idx);
        fleet.spawn_encoder(&node)?;
        kills += 1;
        let mut still = Vec::new();
        for id in pending {
            let evs = fleet.events(Some(id)).await.unwrap_or_default();
            if !evs.iter().any(|e| e.is_terminal()) {
                still.push(id);
            }
        }
        pending = still;
    }
    fleet.settled().await?;
    for id in &ids {
        let evs = fleet.events(Some(id)).await?;
        let terminal: Vec<_> = evs.iter().filter(|e| e.is_terminal()).collect();
        ensure!(
            terminal.len() == 1,
            "{id}: {} terminal events",
            terminal.len()
        );
        ensure!(
            matches!(
                terminal[0],
                ffleet_runtime::messages::JobEvent::Completed(_)
            ),
            "{id}: {:?}",
            terminal[0]
        );
        ensure!(fleet.out_path(&format!("{id}.mp4")).is_file());
    }
    println!(
        "soak: 100 jobs completed, none lost or duplicated, in {:.1} s with {kills} encoder kills",
        started.elapsed().as_secs_f64()
    );
    fleet.passed();
    Ok(())
}

/// libfaketime (Debian's `libfaketime`, installed by setup.sh), the thread-safe build.
fn faketime() -> Result<String> {
    let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
    ensure!(
        std::path::Path::new(lib).exists(),
        "{lib} is missing: scripts/setup.sh installs libfaketime"
    );
    Ok(lib.to_owned())
}

/// Encoders and the scheduler on wall clocks a minute off (libfaketime: the encoders one
/// ahead and one behind, the scheduler ahead) change nothing: the job completes byte-identical
/// to a run on true clocks, no unit is handed on early (every unit finishes at its first
/// attempt), and heartbeat ages are read from the server's clock.
#[tokio::test]
async fn clocks_a_minute_off_change_nothing() -> Result<()> {
    let lib = faketime()?;
    let mut fleet = ProcFleet::start(&[]).await?;
    for svc in ["splitter", "merger"] {
        fleet.spawn(svc, &[])?;
    }
    let scheduler = fleet.spawn("scheduler", &[])?;
    let honest = fleet.spawn_encoder("enc-honest")?;
    fleet.wait_encoders(1, Duration::from_secs(30)).await?;
    let src = source(&fleet)?;
    let reference = reference(&fleet, &src).await?;

    // From here on every encoder and the scheduler run on a skewed clock.
    fleet.terminate(honest, Duration::from_secs(10));
    fleet.terminate(scheduler, Duration::from_secs(10));
    let skew = |offset: &str| [("LD_PRELOAD", lib.clone()), ("FAKETIME", offset.to_owned())];
    let ahead = skew("+60");
    let behind = skew("-60");
    let env = |node: &'static str, s: &[(&'static str, String); 2]| {
        vec![
            ("FFLEET_ENCODER__NODE_ID", node.to_owned()),
            s[0].clone(),
            s[1].clone(),
        ]
    };
    for (node, s) in [("enc-ahead", &ahead), ("enc-behind", &behind)] {
        let e = env(node, s);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fleet.spawn("encoder", &e)?;
    }
    let e: Vec<(&str, &str)> = ahead.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fleet.spawn("scheduler", &e)?;
    fleet.wait_encoders(2, Duration::from_secs(30)).await?;

    // The skew is real: each heartbeat's own timestamp is about a minute from the server's.
    let workers = fleet.ctx().workers.clone();
    for node in ["enc-ahead", "enc-behind"] {
        let (hb, _, written) = workers
            .get_stamped(node)
            .await?
            .with_context(|| format!("heartbeat of {node}"))?;
        let at =
            time::OffsetDateTime::parse(&hb.at, &time::format_description::well_known::Rfc3339)?;
        let off = (at - written).as_seconds_f64();
        ensure!(
            off.abs() > 50.0,
            "{node}'s clock is not skewed (heartbeat at {}, stored {written})",
            hb.at
        );
    }
    // `ffleet workers` ages them by the server's clock: both fresh.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ffleet"))
        .args(["-s", &fleet.url_of(), "workers"])
        .env_remove("NATS_URL")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    for node in ["enc-ahead", "enc-behind"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(node))
            .with_context(|| format!("{node} missing from `ffleet workers`:\n{text}"))?;
        let age: f64 = line
            .split_whitespace()
            .find_map(|w| w.strip_suffix('s')?.parse().ok())
            .with_context(|| format!("no age in {line:?}"))?;
        ensure!(age < 5.0, "{node} shown {age} s old: {line}");
    }

    let started = Instant::now();
    submit(&fleet, "skewed", &src).await?;
    check(&fleet, "skewed", &reference).await?;
    let units = fleet.units("skewed").await;
    ensure!(!units.is_empty(), "no unit records");
    for (key, rec) in &units {
        ensure!(
            rec.attempt == 1,
            "{key} was handed on (attempt {}) though no node failed",
            rec.attempt
        );
    }
    println!(
        "clocks a minute off: job completed in {:.1} s, {} units each at its first attempt",
        started.elapsed().as_secs_f64(),
        units.len()
    );
    fleet.passed();
    Ok(())
}
