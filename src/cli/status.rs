//! `ffleet status [JOB]` and `ffleet workers`: read-only views of the jobs and workers buckets.
//! One job's status is asked of the fleet (the status request) by roles that may not read the
//! jobs bucket. `ffleet cancel JOB` asks the fleet to stop a job and shows the answer the same
//! way.

use super::Cli;
use super::display;
use anyhow::{Result, bail};
use ffleet_runtime::messages::{JobState, StatusState};
use ffleet_runtime::security::Role;

pub async fn status(cli: &Cli, job: Option<&str>) -> Result<i32> {
    let nats = cli.load_config()?.nats;
    if let Some(id) = job
        && (nats.tenant.is_some() || nats.role.is_some_and(|r| r != Role::Admin))
    {
        return asked(cli, id).await;
    }
    if nats.tenant.is_some() {
        bail!("a tenant's credentials may ask about its own jobs only: ffleet status JOB");
    }
    let ctx = super::client(cli).await?;
    match job {
        Some(id) => {
            let Some((rec, rev)) = ctx.jobs.get(id).await? else {
                bail!("no job {id:?}");
            };
            let (done, total) = rec.frame_progress();
            println!("job:      {}", rec.job_id);
            println!("state:    {:?} (revision {rev})", rec.state);
            println!("input:    {}", display::location(&rec.request.input));
            println!("output:   {}", display::location(&rec.request.output));
            println!("profile:  {}", rec.profile);
            if let Some(plan) = &rec.plan {
                println!(
                    "units:    {}/{} done, {done}/{}",
                    rec.collected.len(),
                    plan.unit_count(),
                    display::count(total, "frame")
                );
            }
            if let Some(f) = &rec.failure {
                println!("failure:  {}: {}", f.reason, f.message);
            }
            if let Some(of) = &rec.request.retry_of {
                println!("retry of: {of}");
            }
            if let Some(again) = &rec.retried_as {
                println!("retried:  as {again}");
            }
            if let Some(plan) = rec.plan.as_ref().filter(|p| !p.reuses.is_empty()) {
                let from: Vec<&str> = plan.reuses.iter().map(|j| j.as_str()).collect();
                println!("reuses:   encoded units of {}", from.join(", "));
            }
            // Completed jobs count every transfer; running ones the splitter's so far (the
            // units' own are in their records until the merge sums them).
            let moved = rec
                .output
                .as_ref()
                .map_or(rec.media_bytes, |o| o.media_bytes);
            if moved > 0 {
                println!(
                    "media:    {} through the object store",
                    display::count(moved, "byte")
                );
            }
            if let Some(o) = &rec.output {
                print_result(o.frames, o.duration_secs, o.bytes, o.wall_secs);
            }
            println!("accepted: {}", rec.accepted_at);
            println!("updated:  {}", rec.updated_at);
            Ok(if rec.state == JobState::Failed { 1 } else { 0 })
        }
        None => {
            let mut keys = ctx.jobs.keys().await?;
            keys.sort();
            println!(
                "{:<40} {:<10} {:>9} {:<10} updated",
                "job", "state", "progress", "profile"
            );
            for k in keys {
                if let Some((rec, _)) = ctx.jobs.get(&k).await? {
                    let (done, total) = rec.frame_progress();
                    let pct = if total > 0 {
                        100.0 * done as f64 / total as f64
                    } else {
                        0.0
                    };
                    println!(
                        "{:<40} {:<10} {:>8.1}% {:<10} {}",
                        rec.job_id,
                        format!("{:?}", rec.state).to_lowercase(),
                        pct,
                        rec.profile,
                        rec.updated_at
                    );
                }
            }
            Ok(0)
        }
    }
}

/// How long `ffleet cancel` asks again about a job the fleet does not know: a request just
/// published is taken in by a splitter within moments unless the splitters are backed up.
const UNKNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// `ffleet cancel JOB`: 0 once the job is cancelled, or had ended otherwise before (said on
/// stderr, with its state shown); non-zero for a job the fleet does not know.
pub async fn cancel(cli: &Cli, id: &str) -> Result<i32> {
    let link = super::connect_link(cli).await?;
    let job = super::job_of(&link.config, id)?;
    // A job submitted a moment ago may not have its record yet: asked again for a while.
    let deadline = std::time::Instant::now() + UNKNOWN_FOR;
    let st = loop {
        match super::ask::cancel(&link.client, &job).await? {
            Some(st) => break st,
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            None => bail!(
                "no job {id:?} (never submitted, not yet taken in after {} s, or expired)",
                UNKNOWN_FOR.as_secs()
            ),
        }
    };
    if st.is_terminal() && st.state != StatusState::Cancelled {
        eprintln!(
            "job {id:?} had already ended ({}): nothing changed",
            format!("{:?}", st.state).to_lowercase()
        );
    } else if !st.is_terminal() {
        // Refused only once the verified output is going into place.
        eprintln!("job {id:?} is putting its output in place and completes: nothing changed");
    }
    show(&st);
    Ok(0)
}

/// `ffleet priority JOB N` (admin): the job's status after the change; a job that has ended is
/// left as it was (said on stderr), an unknown one is an error.
pub async fn priority(cli: &Cli, id: &str, priority: i32) -> Result<i32> {
    let link = super::connect_link(cli).await?;
    let job = super::job_of(&link.config, id)?;
    let Some(st) = super::ask::priority(&link.client, &job, priority).await? else {
        bail!("no job {id:?}");
    };
    if st.is_terminal() {
        eprintln!(
            "job {id:?} has ended ({}): its priority no longer matters",
            format!("{:?}", st.state).to_lowercase()
        );
    }
    show(&st);
    Ok(0)
}

/// One job as the fleet reports it (`ffleet.api.status`): what a submitter may see.
async fn asked(cli: &Cli, id: &str) -> Result<i32> {
    let link = super::connect_link(cli).await?;
    let job = super::job_of(&link.config, id)?;
    let st = super::ask::status(&link.client, &job).await?;
    if st.state == StatusState::Unknown {
        bail!("no job {id:?}");
    }
    show(&st);
    Ok(i32::from(matches!(
        st.state,
        StatusState::Failed | StatusState::Refused
    )))
}

/// Prints a job's status as the fleet answered it.
fn show(st: &ffleet_runtime::messages::JobStatus) {
    println!("job:      {}", st.job_id.local());
    println!("state:    {}", format!("{:?}", st.state).to_lowercase());
    if let (Some(done), Some(total)) = (st.units_done, st.units_total) {
        let frames = match (st.frames_done, st.frames_total) {
            (Some(d), Some(t)) => format!(", {d}/{}", display::count(t, "frame")),
            _ => String::new(),
        };
        println!("units:    {done}/{total} done{frames}");
    }
    if let Some(f) = &st.failed {
        println!("failure:  {}: {}", f.reason, f.message);
    }
    if let Some(c) = &st.completed {
        print_result(c.frames, c.duration_secs, c.bytes, c.wall_secs);
    }
    if let Some(c) = &st.cancelled {
        println!("cancelled while {}", c.during.name());
    }
    if let Some(p) = st.priority {
        println!("priority: {p}");
    }
    if let Some(r) = &st.retried_as {
        println!("retried:  as {}", r.local());
    }
    if let Some(t) = &st.updated_at {
        println!("updated:  {t}");
    }
}

/// The live pool: one line per node (capabilities, core and GPU slots, load, GPU utilisation,
/// the units it holds), then one line per NVIDIA GPU it reported.
pub async fn workers(cli: &Cli) -> Result<i32> {
    let ctx = super::client(cli).await?;
    let mut keys = ctx.workers.keys().await?;
    keys.sort();
    println!(
        "{:<24} {:<12} {:<12} {:>5} {:>5} {:>5} {:>5} {:>6}  segments (frame, speed)",
        "node", "host", "capabilities", "slots", "gpu", "load", "gpu%", "age"
    );
    for k in keys {
        if let Some((hb, _, written)) = ctx.workers.get_stamped(&k).await? {
            // The server's timestamp: the heartbeat's own `at` is its node's clock.
            let age = (time::OffsetDateTime::now_utc() - written).as_seconds_f64();
            let caps: Vec<String> = hb.capabilities.iter().map(ToString::to_string).collect();
            let holding: Vec<String> = hb
                .holding
                .iter()
                .map(|h| format!("{} ({}, {:.2}x)", h.tag(), h.frame, h.speed))
                .collect();
            let state = if hb.draining { " draining" } else { "" };
            let gpu_util = hb
                .gpus
                .iter()
                .map(|g| g.utilization_pct)
                .max()
                .map_or("-".to_owned(), |u| u.to_string());
            println!(
                "{:<24} {:<12} {:<12} {:>2}/{:<2} {:>2}/{:<2} {:>5.2} {:>5} {:>5.1}s  {}{}",
                hb.node_id,
                hb.host,
                caps.join(","),
                hb.slots_busy,
                hb.slots_total,
                hb.gpu_slots_busy,
                hb.gpu_slots_total,
                hb.load1,
                gpu_util,
                age,
                holding.join(" "),
                state
            );
            for g in &hb.gpus {
                println!(
                    "  gpu{} {}: {}% busy, encoder {}% with {} sessions, memory {}/{} MiB",
                    g.index,
                    g.name,
                    g.utilization_pct,
                    g.encoder_utilization_pct,
                    g.encoder_sessions,
                    g.memory_used_bytes >> 20,
                    g.memory_total_bytes >> 20
                );
            }
            if let Some(c) = &hb.gpu_class {
                println!("  class {c}");
            }
            if !hb.demoted.is_empty() {
                let d: Vec<String> = hb.demoted.iter().map(ToString::to_string).collect();
                println!("  demoted (its encodes failed): {}", d.join(","));
            }
        }
    }
    Ok(0)
}

/// The `result:` line of a completed job.
fn print_result(frames: u64, duration_secs: f64, bytes: u64, wall_secs: f64) {
    println!(
        "result:   {}, {duration_secs:.2} s, {}, {wall_secs:.1} s wall",
        display::count(frames, "frame"),
        display::count(bytes, "byte"),
    );
}
