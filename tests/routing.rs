//! Capability routing, capacity and priorities, with the services as separate processes.
//!
//! No GPU is needed: a "GPU node" is an encoder labelled `nvenc` by configuration, and the test
//! profile's `nvenc` variant runs libx264. The routing decision (which queue, which node) is
//! real; only the codec is not. The `gpufail` profile's `nvenc` variant names a preset x264
//! refuses, so every encode with it fails, as NVENC does on a board without it, while its
//! start-up test encode (libx264 alone) passes. Every test also records, from the heartbeats, the most slots
//! each node ever held and checks it never exceeded what the node advertises.

mod common;

use anyhow::{Result, ensure};
use common::procs::ProcFleet;
use common::{JobClient, media};
use ffleet_runtime::messages::{
    self, Heartbeat, JobState, Preference, SegmentRecord, SegmentState,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The `route` profile: the same x264 settings under `cpu` and `nvenc`.
const PROFILE: &str = r#"
[profiles.route]
quality = { min = 10, max = 40 }
[profiles.route.cpu]
args = ["-c:v", "libx264", "-preset", "veryfast", "-qp", "23", "-pix_fmt", "yuv420p"]
quality_flag = "-qp"
[profiles.route.nvenc]
args = ["-c:v", "libx264", "-preset", "veryfast", "-qp", "23", "-pix_fmt", "yuv420p"]
quality_flag = "-qp"
[profiles.gpufail.cpu]
args = ["-c:v", "libx264", "-preset", "veryfast", "-qp", "23", "-pix_fmt", "yuv420p"]
[profiles.gpufail.nvenc]
args = ["-c:v", "libx264", "-preset", "no-such-preset", "-qp", "23", "-pix_fmt", "yuv420p"]
"#;

/// A fleet (splitter, scheduler, merger; no encoders yet) reading the `route` profile.
async fn fleet(extra: &[(&str, &str)]) -> Result<ProcFleet> {
    let cfg = tempfile::Builder::new()
        .prefix("ffleet-route-")
        .suffix(".toml")
        .tempfile()?
        .into_temp_path()
        .keep()?;
    std::fs::write(&cfg, PROFILE)?;
    let cfg = cfg.display().to_string();
    let mut env = vec![("FFLEET_CONFIG", cfg.as_str())];
    env.extend_from_slice(extra);
    let mut f = ProcFleet::start(&env).await?;
    for svc in ["splitter", "scheduler", "merger"] {
        f.spawn(svc, &[])?;
    }
    Ok(f)
}

/// Starts encoder `node` offering `caps` (e.g. `[nvenc]`) with `slots` slots of that kind.
fn encoder(f: &mut ProcFleet, node: &str, caps: &str, slots: &str) -> Result<usize> {
    f.spawn(
        "encoder",
        &[
            ("FFLEET_ENCODER__NODE_ID", node),
            ("FFLEET_ENCODER__CAPABILITIES", caps),
            ("FFLEET_ENCODER__SLOTS", slots),
            ("FFLEET_ENCODER__GPU_SLOTS", slots),
        ],
    )
}

/// 8 s of 320x180 with audio, keyframes every 1.6 s: five video segments and an audio unit.
fn source(f: &ProcFleet, name: &str, secs: u32) -> Result<PathBuf> {
    media::ntsc_source(&f.media(), name, secs, "320x180")
}

async fn submit(
    f: &ProcFleet,
    id: &str,
    src: &Path,
    prefer: Preference,
    require: bool,
    priority: i32,
) -> Result<()> {
    let mut req = f.request(id, src, &format!("{id}.mp4"));
    req.profile = Some("route".into());
    req.segment_seconds = Some(1.6);
    req.prefer = prefer;
    req.require = require;
    req.priority = priority;
    // Priorities above the submitter cap (0) are a privilege.
    if priority > 0 {
        f.submit_privileged(&req).await
    } else {
        f.submit(&req).await
    }
}

/// Per node: peak busy cores, cores advertised, peak busy GPU sessions, sessions advertised.
type Peak = (u32, u32, u32, u32);

/// The most slots (cores, GPU sessions) each node ever reported busy, with what it advertised.
#[derive(Default, Clone)]
struct Peaks(Arc<Mutex<HashMap<String, Peak>>>);

impl Peaks {
    async fn watch(f: &ProcFleet) -> Result<Peaks> {
        let peaks = Peaks::default();
        let mut w = f.ctx().workers.store().watch_all().await?;
        let p = peaks.clone();
        tokio::spawn(async move {
            while let Some(Ok(e)) = w.next().await {
                let Ok(hb) = messages::decode::<Heartbeat>("heartbeat", &e.value) else {
                    continue;
                };
                let mut m = p.0.lock().unwrap();
                let v = m.entry(hb.node_id.to_string()).or_default();
                v.0 = v.0.max(hb.slots_busy);
                v.1 = hb.slots_total;
                v.2 = v.2.max(hb.gpu_slots_busy);
                v.3 = hb.gpu_slots_total;
            }
        });
        Ok(peaks)
    }

    /// No node held more than it advertised; prints what was seen.
    fn check(&self) -> Result<()> {
        let mut m: Vec<_> = self.0.lock().unwrap().clone().into_iter().collect();
        m.sort();
        for (node, (busy, total, gbusy, gtotal)) in m {
            println!("peak slots: {node}: cpu {busy}/{total}, gpu {gbusy}/{gtotal}");
            ensure!(
                busy <= total && gbusy <= gtotal,
                "{node} over-committed: {busy}/{total} cores, {gbusy}/{gtotal} sessions"
            );
        }
        Ok(())
    }
}

/// Video units of a job: (unit key, capability, owner).
async fn placed(f: &ProcFleet, job: &str) -> Vec<(String, String, String)> {
    f.units(job)
        .await
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".audio"))
        .map(|(k, r)| {
            let cap = r.capability.map(|c| c.to_string()).unwrap_or_default();
            let owner = r.owner.map(|o| o.to_string()).unwrap_or_default();
            (k, cap, owner)
        })
        .collect()
}

#[tokio::test]
async fn gpu_preferred_work_spills_past_the_depth_and_cpu_required_work_never_touches_the_gpu()
-> Result<()> {
    let mut f = fleet(&[("FFLEET_SCHEDULER__SPILL_QUEUE_DEPTH", "2")]).await?;
    let peaks = Peaks::watch(&f).await?;
    encoder(&mut f, "enc-gpu", "[nvenc]", "1")?;
    encoder(&mut f, "enc-cpu", "[cpu]", "1")?;
    f.wait_encoders(2, Duration::from_secs(30)).await?;
    let src = source(&f, "src.mp4", 8)?;
    // One after the other: queued together, the earlier job's CPU work would (rightly) take the
    // CPU slot first and leave nothing to spill into.
    submit(&f, "gpu-pref", &src, Preference::Gpu, false, 0).await?;
    f.wait_completed("gpu-pref", JOB_TIMEOUT).await?;
    submit(&f, "cpu-only", &src, Preference::Cpu, true, 0).await?;
    f.wait_completed("cpu-only", JOB_TIMEOUT).await?;

    let gpu = placed(&f, "gpu-pref").await;
    println!("gpu-pref placement: {gpu:?}");
    let on_gpu = gpu
        .iter()
        .filter(|(_, c, o)| c == "nvenc" && o == "enc-gpu");
    let spilled = gpu.iter().filter(|(_, c, o)| c == "cpu" && o == "enc-cpu");
    ensure!(
        on_gpu.count() >= 2,
        "GPU node got less than its slot + buffer"
    );
    ensure!(
        spilled.count() >= 1,
        "nothing spilled to CPU past the depth"
    );
    ensure!(
        gpu.iter()
            .all(|(_, c, o)| (c == "nvenc") == (o == "enc-gpu")),
        "a unit ran on a node of another capability: {gpu:?}"
    );
    for (k, r) in f.units("cpu-only").await {
        ensure!(
            r.capability.as_ref().map(|c| c.as_str()) == Some("cpu")
                && r.owner.as_ref().map(|o| o.as_str()) == Some("enc-cpu"),
            "cpu-required unit {k} ran as {:?} on {:?}",
            r.capability,
            r.owner
        );
    }
    peaks.check()?;
    f.passed();
    Ok(())
}

#[tokio::test]
async fn gpu_preferred_work_stays_on_the_gpu_node_below_the_depth() -> Result<()> {
    let mut f = fleet(&[("FFLEET_SCHEDULER__SPILL_QUEUE_DEPTH", "100")]).await?;
    let peaks = Peaks::watch(&f).await?;
    encoder(&mut f, "enc-gpu", "[nvenc]", "2")?;
    encoder(&mut f, "enc-cpu", "[cpu]", "1")?;
    f.wait_encoders(2, Duration::from_secs(30)).await?;
    let src = source(&f, "src.mp4", 8)?;
    submit(&f, "gpu-pref", &src, Preference::Gpu, false, 0).await?;
    f.wait_completed("gpu-pref", JOB_TIMEOUT).await?;
    let gpu = placed(&f, "gpu-pref").await;
    ensure!(gpu.len() >= 4, "{gpu:?}");
    ensure!(
        gpu.iter().all(|(_, c, o)| c == "nvenc" && o == "enc-gpu"),
        "GPU-preferred video left the free GPU node: {gpu:?}"
    );
    // Audio is CPU work whatever the job prefers (NVENC encodes no audio).
    let audio = f.units("gpu-pref").await;
    let audio = audio.iter().find(|(k, _)| k.ends_with(".audio"));
    ensure!(audio.is_some_and(|(_, r)| r.owner.as_ref().is_some_and(|o| o.as_str() == "enc-cpu")));
    peaks.check()?;
    f.passed();
    Ok(())
}

#[tokio::test]
async fn a_gpu_required_job_without_a_gpu_node_fails_with_a_clear_reason() -> Result<()> {
    let mut f = fleet(&[("FFLEET_SCHEDULER__CAPABILITY_WAIT_SECS", "3")]).await?;
    encoder(&mut f, "enc-cpu", "[cpu]", "1")?;
    f.wait_encoders(1, Duration::from_secs(30)).await?;
    let src = source(&f, "src.mp4", 4)?;
    let t = Instant::now();
    submit(&f, "needs-gpu", &src, Preference::Gpu, true, 0).await?;
    submit(&f, "any", &src, Preference::Any, false, 0).await?;
    let failed = f.wait_failed("needs-gpu", JOB_TIMEOUT).await?;
    println!(
        "gpu-required job failed after {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        failed.message
    );
    ensure!(failed.reason.code() == "no_capable_node", "{failed:?}");
    ensure!(
        failed.message.contains("gpu") && failed.message.contains("nvenc"),
        "{}",
        failed.message
    );
    ensure!(
        t.elapsed() >= Duration::from_secs(3),
        "failed before its deadline"
    );
    for (k, r) in f.units("needs-gpu").await {
        ensure!(
            k.ends_with(".audio") || r.owner.is_none(),
            "{k} of the GPU-only job ran on a CPU node"
        );
    }
    f.wait_completed("any", JOB_TIMEOUT).await?;
    ensure!(f.terminal_count("needs-gpu").await? == 1);
    f.passed();
    Ok(())
}

#[tokio::test]
async fn an_encoder_started_mid_job_takes_segments_of_that_job() -> Result<()> {
    let mut f = fleet(&[]).await?;
    let peaks = Peaks::watch(&f).await?;
    encoder(&mut f, "enc-1", "[cpu]", "1")?;
    f.wait_encoders(1, Duration::from_secs(30)).await?;
    // The shipped h264 profile (x264 medium) at 640x360: about a second per segment here.
    let src = media::ntsc_source(&f.media(), "src.mp4", 12, "640x360")?;
    let mut req = f.request("grow", &src, "grow.mp4");
    req.segment_seconds = Some(1.6);
    f.submit(&req).await?;
    f.wait_unit("grow", Duration::from_secs(60), |_, r| {
        (r.state == SegmentState::Running).then_some(())
    })
    .await?;
    let started = Instant::now();
    encoder(&mut f, "enc-2", "[cpu]", "1")?;
    let first = f
        .wait_unit("grow", Duration::from_secs(60), |k, r| {
            (r.owner.as_ref().is_some_and(|o| o.as_str() == "enc-2")).then(|| k.to_owned())
        })
        .await?;
    println!(
        "scale-out: enc-2 started mid-job, claimed {first} {:.2} s after its process started",
        started.elapsed().as_secs_f64()
    );
    f.wait_completed("grow", JOB_TIMEOUT).await?;
    let owners: Vec<String> = f
        .units("grow")
        .await
        .into_iter()
        .filter_map(|(_, r)| r.owner.map(|o| o.to_string()))
        .collect();
    ensure!(owners.iter().any(|o| o == "enc-1") && owners.iter().any(|o| o == "enc-2"));
    peaks.check()?;
    f.passed();
    Ok(())
}

/// Every change of every unit record's state from now on, in the bucket's order.
async fn unit_states(f: &ProcFleet) -> Result<Arc<Mutex<Vec<(String, SegmentState)>>>> {
    let mut w = f.ctx().segments.store().watch_all().await?;
    let seen: Arc<Mutex<Vec<(String, SegmentState)>>> = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = w.next().await {
            if let Ok(r) = messages::decode::<SegmentRecord>("segment", &e.value) {
                s.lock().unwrap().push((e.key.to_string(), r.state));
            }
        }
    });
    Ok(seen)
}

#[tokio::test]
async fn a_high_priority_job_behind_20_bulk_jobs_starts_its_segments_first() -> Result<()> {
    let mut f = fleet(&[]).await?;
    let src = source(&f, "src.mp4", 4)?;
    let seen = unit_states(&f).await?;
    for i in 0..20 {
        submit(&f, &format!("bulk-{i:02}"), &src, Preference::Any, false, 0).await?;
    }
    // All bulk jobs split and queued in the scheduler's backlog (no encoder yet), then an
    // encoder starts on them, and the urgent job arrives while most bulk work still waits.
    let deadline = Instant::now() + JOB_TIMEOUT;
    for i in 0..20 {
        loop {
            let rec = f.job(&format!("bulk-{i:02}")).await;
            if rec.is_some_and(|r| r.state != JobState::Splitting) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "bulk jobs were not split in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    encoder(&mut f, "enc-1", "[cpu]", "1")?;
    loop {
        let started = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == SegmentState::Running)
            .count();
        if started >= 3 {
            break;
        }
        ensure!(Instant::now() < deadline, "the encoder took no bulk work");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    submit(&f, "urgent", &src, Preference::Any, false, 50).await?;
    f.wait_completed("urgent", JOB_TIMEOUT).await?;
    for i in 0..20 {
        f.wait_completed(&format!("bulk-{i:02}"), JOB_TIMEOUT)
            .await?;
    }

    let seen = seen.lock().unwrap().clone();
    let urgent = |k: &str| k.starts_with("urgent.");
    // From the urgent job's first release into the encode queue.
    let first = seen
        .iter()
        .position(|(k, s)| urgent(k) && *s == SegmentState::Queued)
        .unwrap();
    let last_start = seen
        .iter()
        .rposition(|(k, s)| urgent(k) && *s == SegmentState::Running)
        .unwrap();
    let bulk_between = seen[first..last_start]
        .iter()
        .filter(|(k, s)| !urgent(k) && *s == SegmentState::Running)
        .count();
    let bulk_after = seen[last_start..]
        .iter()
        .filter(|(k, s)| !urgent(k) && *s == SegmentState::Running)
        .count();
    println!(
        "priority: {bulk_between} bulk unit(s) started between the urgent job's first release and \
         its last unit's start; {bulk_after} bulk unit(s) started after it"
    );
    // Already released to the encoder's queue (slot + buffer) may run first; nothing else.
    ensure!(
        bulk_between <= 2,
        "{bulk_between} bulk units overtook the urgent job"
    );
    ensure!(
        bulk_after >= 5,
        "the bulk backlog was gone before the urgent job came"
    );
    for i in 0..20 {
        f.wait_completed(&format!("bulk-{i:02}"), JOB_TIMEOUT)
            .await?;
    }
    f.passed();
    Ok(())
}

/// The live heartbeat of `node`.
async fn heartbeat(f: &ProcFleet, node: &str) -> Result<Heartbeat> {
    let hb = f.ctx().workers.get(node).await?;
    hb.map(|(h, _)| h)
        .ok_or_else(|| anyhow::anyhow!("no heartbeat from {node}"))
}

#[tokio::test]
async fn a_gpu_node_whose_encodes_fail_is_demoted_and_gpu_preferring_work_spills_to_cpu()
-> Result<()> {
    let mut f = fleet(&[]).await?;
    let gpu = encoder(&mut f, "enc-gpu", "[nvenc]", "1")?;
    encoder(&mut f, "enc-cpu", "[cpu]", "1")?;
    f.wait_encoders(2, Duration::from_secs(30)).await?;
    let hb = heartbeat(&f, "enc-gpu").await?;
    ensure!(
        hb.capabilities.iter().any(|c| c.as_str() == "nvenc"),
        "the labelled node should pass its start-up test: {hb:?}"
    );
    ensure!(
        hb.proofs.iter().any(|p| p.name == "libx264" && p.ok),
        "{:?}",
        hb.proofs
    );
    let src = source(&f, "src.mp4", 4)?;
    for id in ["fail-1", "fail-2"] {
        let t = Instant::now();
        let mut req = f.request(id, &src, &format!("{id}.mp4"));
        req.profile = Some("gpufail".into());
        req.segment_seconds = Some(1.6);
        req.prefer = Preference::Gpu;
        f.submit(&req).await?;
        f.wait_completed(id, JOB_TIMEOUT).await?;
        let units = f.units(id).await;
        let failures: usize = units.iter().map(|(_, r)| r.failures.len()).sum();
        println!(
            "{id}: completed in {:.1} s; {failures} failed attempt(s) on the GPU node",
            t.elapsed().as_secs_f64()
        );
        for (k, r) in &units {
            ensure!(
                r.state == SegmentState::Done
                    && r.owner.as_ref().is_some_and(|o| o.as_str() == "enc-cpu"),
                "{id} {k}: {:?} on {:?}",
                r.state,
                r.owner
            );
            ensure!(
                r.failures.iter().all(|x| x.node.as_str() == "enc-gpu"),
                "{k}: {:?}",
                r.failures
            );
        }
        // Demoted after its first failure(s); nothing is routed to it afterwards.
        let most = if id == "fail-1" { 2 } else { 0 };
        ensure!(
            failures <= most,
            "{id}: {failures} failed GPU attempts (at most {most} expected)"
        );
        if id == "fail-1" {
            ensure!(failures >= 1, "the GPU node never tried");
        }
    }
    let hb = heartbeat(&f, "enc-gpu").await?;
    ensure!(
        !hb.capabilities.iter().any(|c| c.as_str() == "nvenc")
            && hb.demoted.iter().any(|c| c.as_str() == "nvenc"),
        "enc-gpu still offers nvenc: {:?} (demoted {:?})",
        hb.capabilities,
        hb.demoted
    );
    ensure!(f.running(gpu), "the demoted encoder keeps running");
    ensure!(
        f.log_text(gpu).contains("capability given up"),
        "one clear log line"
    );
    f.passed();
    Ok(())
}

/// The scheduler's leader publishes the pool's slots with its lease, which splitters size jobs
/// by (one read, whatever the pool's size, instead of every node's heartbeat): every live node's
/// CPU and GPU slots, and a node that stops leaves the count within a lease renewal.
#[tokio::test]
async fn the_leaders_lease_carries_the_pool_slots_and_follows_a_node_leaving() -> Result<()> {
    let mut f = fleet(&[]).await?;
    let cpu = encoder(&mut f, "enc-1", "[cpu]", "2")?;
    encoder(&mut f, "enc-2", "[nvenc]", "3")?;
    f.wait_encoders(2, Duration::from_secs(30)).await?;
    let leases = f.ctx().leases.clone();
    let published = || async {
        let v = leases
            .get(ffleet_runtime::subjects::LEASE_SCHEDULER)
            .await
            .ok()
            .flatten()?;
        messages::SchedulerLease::read(&v).pool_slots
    };
    let wait_for = |want: u32| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = published().await;
            if got == Some(want) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the lease says {got:?} pool slots, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Two cores on enc-1, three GPU sessions on enc-2 (which offers no cores).
    wait_for(5).await?;
    f.terminate(cpu, Duration::from_secs(30));
    wait_for(3).await?;
    f.passed();
    Ok(())
}

/// `ffleet priority JOB N` on a job waiting in the backlog: the last of three equal jobs,
/// raised while no encoder is up, has every unit started before any of the others'; a job that
/// has ended is answered with its final state, an unknown one and a priority out of range with
/// an error.
#[tokio::test]
async fn a_priority_raised_after_submission_puts_the_jobs_waiting_units_first() -> Result<()> {
    let mut f = fleet(&[]).await?;
    let src = source(&f, "src.mp4", 4)?;
    let seen = unit_states(&f).await?;
    for id in ["first", "second", "last"] {
        submit(&f, id, &src, Preference::Any, false, 0).await?;
    }
    let deadline = Instant::now() + JOB_TIMEOUT;
    for id in ["first", "second", "last"] {
        while f
            .job(id)
            .await
            .is_none_or(|r| r.state == JobState::Splitting)
        {
            ensure!(Instant::now() < deadline, "{id} was not split in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let url = f.url_of();
    let cli = |args: &[&str]| {
        let mut c = common::cli::ffleet();
        c.args(["-s", &url]).args(args);
        common::cli::output(&mut c)
    };
    let raised = cli(&["priority", "last", "60"])?;
    ensure!(raised.status.success(), "priority failed");
    ensure!(String::from_utf8_lossy(&raised.stdout).contains("priority: 60"));
    ensure!(f.job("last").await.is_some_and(|r| r.priority() == 60));

    encoder(&mut f, "enc-1", "[cpu]", "1")?;
    for id in ["first", "second", "last"] {
        f.wait_completed(id, JOB_TIMEOUT).await?;
    }
    let seen = seen.lock().unwrap().clone();
    let starts: Vec<&str> = seen
        .iter()
        .filter(|(_, s)| *s == SegmentState::Running)
        .map(|(k, _)| k.split('.').next().unwrap_or(""))
        .collect();
    let last_units = starts.iter().filter(|j| **j == "last").count();
    ensure!(last_units > 0, "no unit of the raised job ran");
    ensure!(
        starts[..last_units].iter().all(|j| *j == "last"),
        "units started in this order: {starts:?}"
    );

    // Ended, unknown, out of range.
    let ended = cli(&["priority", "first", "10"])?;
    ensure!(ended.status.success(), "priority of an ended job failed");
    ensure!(String::from_utf8_lossy(&ended.stderr).contains("has ended"));
    ensure!(f.job("first").await.is_some_and(|r| r.priority() == 0));
    let unknown = cli(&["priority", "nobody", "10"])?;
    ensure!(
        !unknown.status.success(),
        "priority of an unknown job succeeded"
    );
    ensure!(String::from_utf8_lossy(&unknown.stderr).contains("no job"));
    let wild = cli(&["priority", "last", "500"])?;
    ensure!(!wild.status.success(), "priority 500 was accepted");
    ensure!(String::from_utf8_lossy(&wild.stderr).contains("outside"));
    f.passed();
    Ok(())
}
