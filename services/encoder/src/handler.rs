//! One encode task: claim → encode → store → record → report → ack.
//!
//! The claim and the final record update are revision-checked against the task's attempt, so a
//! task whose unit moved on (a newer attempt) is dropped, and a late result of a superseded
//! attempt is never recorded as the unit's result. A redelivered task whose unit is already done
//! only republishes its (de-duplicated) report.

use crate::demote::Verdict;
use crate::encode::{self, EncodeError};
use crate::heartbeat::State;
use crate::probe;
use async_nats::jetstream::Message;
use ffleet_shared::messages::events::{SegmentDone, SegmentOutcome};
use ffleet_shared::messages::heartbeat::{GpuClass, Held};
use ffleet_shared::messages::records::AttemptFailure;
use ffleet_shared::messages::{
    self, CURRENT, DeadLetter, JobEvent, LiveProgress, SegmentRecord, SegmentState, Task, TaskInput,
};
use ffleet_shared::nats::ack::{self, Disposition, KeepAlive};
use ffleet_shared::nats::kv::Change;
use ffleet_shared::nats::publish;
use ffleet_shared::profiles::Variant;
use ffleet_shared::reason::{Failure, Reason};
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{Capability, NodeId, subjects, telemetry};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RETRY: Disposition = Disposition::Retry(Duration::from_secs(2));

enum Claim {
    Mine,
    /// This node failed the unit before: leave it to another node for a moment.
    Avoid,
    /// Gone, superseded or failed: nothing to do.
    Stale,
    /// Done or failed by this attempt already: republish the report.
    Reported(Box<SegmentRecord>),
}

/// `slots`: how many of this node's slots the caller holds for the task.
pub async fn handle(
    ctx: &Ctx,
    node: &NodeId,
    state: &State,
    msg: &Message,
    slots: u32,
) -> Disposition {
    let task: Task = match messages::decode("task", &msg.payload) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "undecodable task dropped");
            return Disposition::Term;
        }
    };
    telemetry::spans::encode_task(&task, msg);
    if let Some(cap) = task
        .capability
        .as_ref()
        .filter(|c| state.demotions.is_demoted(c))
    {
        return bounce(ctx, &task, cap).await;
    }
    let key = subjects::segment_key(&task.job_id, task.unit);
    let delivered = ack::delivered(msg);
    let my_class = state.gpu_class().cloned();
    let on_gpu = task.capability.as_ref().is_some_and(Capability::is_gpu);
    let claim = ctx
        .segments
        .modify(&key, |rec| match rec {
            None => Change::Keep(Claim::Stale),
            Some(r) if r.attempt != task.attempt => Change::Keep(Claim::Stale),
            Some(r) if matches!(r.state, SegmentState::Done | SegmentState::Failed) => {
                Change::Keep(Claim::Reported(Box::new(r.clone())))
            }
            Some(r) if delivered <= 2 && r.failures.iter().any(|f| &f.node == node) => {
                Change::Keep(Claim::Avoid)
            }
            Some(_) if steps_aside(&task, my_class.as_ref(), delivered) => {
                Change::Keep(Claim::Avoid)
            }
            Some(r) => {
                let mut r = r.clone();
                r.state = SegmentState::Running;
                r.owner = Some(node.clone());
                if on_gpu && my_class.is_some() {
                    r.gpu_class = my_class.clone();
                }
                r.updated_at = ffleet_shared::time::now_rfc3339();
                Change::Write(r, Claim::Mine)
            }
        })
        .await;
    match claim {
        Err(e) => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "claim failed");
            return RETRY;
        }
        Ok(Claim::Stale) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "stale task dropped");
            return Disposition::Ack;
        }
        Ok(Claim::Reported(rec)) => return republish(ctx, node, &task, &rec).await,
        Ok(Claim::Avoid) => return Disposition::Retry(Duration::from_secs(1)),
        Ok(Claim::Mine) => {}
    }

    if delivered > i64::from(ctx.config.encoder.max_attempts) {
        let f = Failure::new(
            Reason::EncodeFailed,
            format!(
                "{} of job {} was handed out {delivered} times without finishing",
                task.unit, task.job_id
            ),
        );
        return give_up(ctx, node, &task, &key, f).await;
    }

    let held = Held {
        slots,
        capability: task.capability.clone(),
        ..Held::new(task.job_id.clone(), task.unit, task.attempt)
    };
    let cancel = state.hold(&key, held);
    let d = encode_claimed(ctx, node, state, &task, &key, msg, &cancel).await;
    state.release(&key);
    d
}

async fn encode_claimed(
    ctx: &Ctx,
    node: &NodeId,
    state: &State,
    task: &Task,
    key: &str,
    msg: &Message,
    cancel: &CancellationToken,
) -> Disposition {
    let cap = task.capability.clone().unwrap_or_else(Capability::cpu);
    let Some(profile) = ctx.config.profile(&task.profile) else {
        let f = Failure::new(
            Reason::UnknownProfile,
            format!("encoder {node} has no profile {:?}", task.profile),
        );
        return fail(ctx, node, task, key, f).await;
    };
    let Some(variant) = profile.variants.get(cap.as_str()) else {
        let f = Failure::new(
            Reason::UnknownProfile,
            format!(
                "profile {:?} has no {cap} variant on encoder {node}",
                task.profile
            ),
        );
        return fail(ctx, node, task, key, f).await;
    };
    let input: PathBuf = match &task.input {
        TaskInput::Scratch { key: k } => match ctx.storage.read_path(k).await {
            Ok(p) => p,
            Err(e) => {
                let f = Failure::new(Reason::Internal, format!("segment source unavailable: {e}"));
                return fail(ctx, node, task, key, f).await;
            }
        },
        TaskInput::Source { path } => PathBuf::from(path),
    };
    let result_key = task.result_key();
    let staged = match ctx.storage.staging_path(&result_key).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no staging path");
            return RETRY;
        }
    };

    let _keep = KeepAlive::start(msg, ctx.config.streams.ack_wait() / 3);
    let mut live = live_publisher(ctx, node, task);
    let on_progress = |b: &ffleet_shared::media::progress::ProgressBlock| {
        state.progress(
            key,
            b.frame.unwrap_or(0),
            b.fps.unwrap_or(0.0),
            b.speed.unwrap_or(0.0),
        );
        live(b);
    };
    tracing::debug!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "encoding");
    let unit = encode::Unit {
        task,
        profile,
        variant,
    };
    let result = encode::run(&ctx.config, unit, &input, &staged, cancel, on_progress).await;
    let encoded = match result {
        Ok(e) => e,
        Err(err) => {
            let _ = tokio::fs::remove_file(&staged).await;
            return match err {
                EncodeError::Cancelled => give_back(ctx, node, task, key, Duration::ZERO).await,
                EncodeError::Transient(why) => {
                    tracing::warn!(job = %task.job_id, unit = %task.unit, error = %why, "encode interrupted");
                    give_back(ctx, node, task, key, Duration::from_secs(1)).await
                }
                EncodeError::Permanent(f) => {
                    judge_failure(ctx, state, &cap, variant).await;
                    fail(ctx, node, task, key, f).await
                }
            };
        }
    };
    state.demotions.succeeded(&cap);
    if let Err(e) = ctx.storage.commit(&staged, &result_key).await {
        tracing::warn!(error = %e, "storing result failed");
        return RETRY;
    }

    let attempt = task.attempt;
    let frames = encoded.frames;
    let decode_errors = encoded.decode_errors;
    let rk = result_key.clone();
    let recorded = ctx
        .segments
        .modify(key, |rec| match rec {
            Some(r)
                if r.attempt == attempt
                    && r.state == SegmentState::Running
                    && r.owner.as_ref() == Some(node) =>
            {
                let mut r = r.clone();
                r.state = SegmentState::Done;
                r.result_key = Some(rk.clone());
                r.frames = Some(frames);
                r.decode_errors = decode_errors;
                r.updated_at = ffleet_shared::time::now_rfc3339();
                Change::Write(r, true)
            }
            _ => Change::Keep(false),
        })
        .await;
    match recorded {
        Err(e) => {
            tracing::warn!(error = %e, "recording result failed");
            return RETRY;
        }
        Ok(false) => {
            tracing::info!(job = %task.job_id, unit = %task.unit, attempt, "result of a superseded attempt discarded");
            return Disposition::Ack;
        }
        Ok(true) => {}
    }
    tracing::debug!(job = %task.job_id, unit = %task.unit, frames, secs = encoded.secs, "unit encoded");
    let outcome = SegmentOutcome::Encoded {
        result_key,
        frames,
        encode_secs: encoded.secs,
    };
    report(ctx, node, task, outcome, Disposition::Ack).await
}

/// A re-issued accelerator attempt that prefers another GPU class (model and driver) than
/// this node's: step aside for its first two deliveries, so a node of that class, whose NVENC
/// gives the same bytes, takes it if one is free; after that anyone may.
fn steps_aside(task: &Task, mine: Option<&GpuClass>, delivered: i64) -> bool {
    delivered <= 2
        && task
            .prefer_class
            .as_ref()
            .is_some_and(|want| Some(want) != mine)
}

/// After an accelerator encode failed: test the variant again on a generated picture and let
/// the demotion rules decide whether this node keeps the capability.
async fn judge_failure(ctx: &Ctx, state: &State, cap: &Capability, variant: &Variant) {
    if !cap.is_gpu() || state.demotions.is_demoted(cap) {
        return;
    }
    let timeout = Duration::from_secs_f64(ctx.config.encoder.proof_timeout_secs);
    let proof = probe::variant(&ctx.config.ffmpeg.ffmpeg, variant, timeout).await;
    if state.demotions.failed(cap, proof.ok) == Verdict::Demoted {
        let why = if proof.ok {
            format!(
                "{} accelerator encodes failed in a row",
                ctx.config.encoder.demote_after_failures
            )
        } else {
            format!("the variant fails a test encode too: {}", proof.detail)
        };
        state.demoted(cap, &why);
    }
}

/// A task routed to a capability this node gave up: back to the scheduler unencoded, as the
/// next attempt with no failure recorded (a new attempt, so its messages get fresh dedup ids),
/// to be routed to a node that still offers the capability, or spilled.
async fn bounce(ctx: &Ctx, task: &Task, cap: &Capability) -> Disposition {
    let key = subjects::segment_key(&task.job_id, task.unit);
    let attempt = task.attempt;
    let moved = ctx
        .segments
        .modify(&key, |rec| match rec {
            Some(r)
                if r.attempt == attempt
                    && matches!(r.state, SegmentState::Planned | SegmentState::Queued) =>
            {
                Change::Write(r.next_attempt(), true)
            }
            _ => Change::Keep(false),
        })
        .await;
    match moved {
        Err(e) => {
            tracing::warn!(error = %e, "handing back a task failed, will retry");
            RETRY
        }
        Ok(false) => Disposition::Ack,
        Ok(true) => {
            let t = Task {
                attempt: attempt + 1,
                capability: None,
                slots: 1,
                prefer_class: None,
                ..task.clone()
            };
            // Lost here, the planned attempt is re-issued by the scheduler's reconciler.
            if let Err(e) = publish::task(&ctx.js, subjects::TASKS_PLAN.into(), &t, "plan").await {
                tracing::warn!(error = %e, "handing back a task failed");
            }
            tracing::info!(job = %task.job_id, unit = %task.unit, capability = %cap, "task for a demoted capability handed back to the scheduler");
            Disposition::Ack
        }
    }
}

/// An encode that was cancelled or interrupted (stall, signal): if this node still owns the
/// unit, it is handed back for the next free node after `delay`; if not, it was handed to
/// another node while this one looked dead (frozen, cut off), and the work is dropped.
async fn give_back(
    ctx: &Ctx,
    node: &NodeId,
    task: &Task,
    key: &str,
    delay: Duration,
) -> Disposition {
    match ctx.segments.get(key).await {
        Ok(Some((r, _))) if r.attempt == task.attempt && r.owner.as_ref() == Some(node) => {
            tracing::info!(job = %task.job_id, unit = %task.unit, "unit handed back");
            Disposition::Retry(delay)
        }
        Ok(_) => {
            tracing::info!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "superseded unit dropped");
            Disposition::Ack
        }
        Err(_) => Disposition::Retry(delay),
    }
}

enum Budget {
    /// Re-issued as this attempt, for another node.
    Retry(u32),
    /// Budget spent: the unit failed for good with this record.
    Exhausted(Box<SegmentRecord>),
    /// The record moved on meanwhile: nothing to do.
    Gone,
}

/// Records this node's failure of the unit and re-issues it for another node, or, when the
/// retry budget is spent, fails it for good.
async fn fail(ctx: &Ctx, node: &NodeId, task: &Task, key: &str, f: Failure) -> Disposition {
    tracing::warn!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, reason = %f.reason, message = %f.message, "unit failed on this node");
    telemetry::spans::fail(&tracing::Span::current(), &f);
    let cfg = &ctx.config.encoder;
    let attempt = task.attempt;
    let decided = ctx
        .segments
        .modify(key, |rec| match rec {
            Some(r)
                if r.attempt == attempt
                    && !matches!(r.state, SegmentState::Done | SegmentState::Failed) =>
            {
                let mut r = r.clone();
                r.failures.push(AttemptFailure {
                    attempt,
                    node: node.clone(),
                    message: f.message.clone(),
                });
                let nodes = r.failed_nodes().len() as u32;
                // Only ffmpeg's verdict on the media says something about the input, and only on
                // CPU: two GPU nodes of one class can fail alike for their driver's sake.
                let on_cpu = task.capability.as_ref().is_none_or(|c| !c.is_gpu());
                let repeated = f.reason == Reason::EncodeFailed
                    && on_cpu
                    && r.failures
                        .iter()
                        .any(|p| &p.node != node && same_failure(&p.message, &f.message));
                if repeated {
                    r.state = SegmentState::Failed;
                    r.failure = Some(input_damaged(task, &r, &f));
                    r.updated_at = ffleet_shared::time::now_rfc3339();
                    Change::Write(r.clone(), Budget::Exhausted(Box::new(r)))
                } else if nodes >= cfg.retry_nodes || r.failures.len() as u32 >= cfg.max_attempts {
                    r.state = SegmentState::Failed;
                    r.failure = Some(exhausted(task, &r, &f));
                    r.updated_at = ffleet_shared::time::now_rfc3339();
                    Change::Write(r.clone(), Budget::Exhausted(Box::new(r)))
                } else {
                    let n = r.next_attempt();
                    Change::Write(n, Budget::Retry(attempt + 1))
                }
            }
            _ => Change::Keep(Budget::Gone),
        })
        .await;
    match decided {
        Err(e) => {
            tracing::warn!(error = %e, "recording failure failed");
            RETRY
        }
        Ok(Budget::Gone) => Disposition::Ack,
        Ok(Budget::Retry(next)) => {
            let t = Task {
                attempt: next,
                capability: None,
                ..task.clone()
            };
            // Lost here, the planned attempt is re-issued by the scheduler's reconciler.
            if let Err(e) = publish::task(&ctx.js, subjects::TASKS_PLAN.into(), &t, "plan").await {
                tracing::warn!(error = %e, "re-issuing a failed unit failed");
            }
            Disposition::Ack
        }
        Ok(Budget::Exhausted(rec)) => dead_letter(ctx, node, task, &rec).await,
    }
}

/// Fails the unit for good without another attempt (it went round too often).
async fn give_up(ctx: &Ctx, node: &NodeId, task: &Task, key: &str, f: Failure) -> Disposition {
    let attempt = task.attempt;
    let recorded = ctx
        .segments
        .modify(key, |rec| match rec {
            Some(r) if r.attempt == attempt && r.state != SegmentState::Done => {
                let mut r = r.clone();
                r.state = SegmentState::Failed;
                r.failure = Some(f.clone());
                r.updated_at = ffleet_shared::time::now_rfc3339();
                Change::Write(r.clone(), Some(r))
            }
            _ => Change::Keep(None),
        })
        .await;
    match recorded {
        Err(e) => {
            tracing::warn!(error = %e, "recording failure failed");
            RETRY
        }
        Ok(None) => Disposition::Ack,
        Ok(Some(rec)) => dead_letter(ctx, node, task, &rec).await,
    }
}

/// The job-level failure of a unit whose budget is spent: which unit, on which nodes, and the
/// last ffmpeg error lines.
fn exhausted(task: &Task, rec: &SegmentRecord, last: &Failure) -> Failure {
    let nodes: Vec<String> = rec.failed_nodes().iter().map(|n| n.to_string()).collect();
    Failure::new(
        last.reason,
        format!(
            "{} of job {} failed {} times on {} node(s) ({}); last error: {}",
            task.unit,
            task.job_id,
            rec.failures.len(),
            nodes.len(),
            nodes.join(", "),
            last.message
        ),
    )
}

/// Whether two failure reports say the same thing: the same verdict (the text before ffmpeg's
/// stderr, e.g. `ffmpeg failed (exit code 69)`) and at least one error line in common. Two
/// runs of one failing ffmpeg differ in the addresses of `[h264 @ 0x55d0...]` prefixes, in how
/// many repeats it folds into "Last message repeated", and so in which lines the kept tail of
/// stderr holds.
fn same_failure(a: &str, b: &str) -> bool {
    fn split(s: &str) -> (&str, std::collections::BTreeSet<&str>) {
        let (header, rest) = match s.find("): ") {
            Some(i) => (&s[..i + 2], &s[i + 3..]),
            None => (s, ""),
        };
        let lines = rest
            .lines()
            .map(|l| {
                let l = l.trim();
                match (l.starts_with('['), l.find("] ")) {
                    (true, Some(i)) => l[i + 2..].trim(),
                    _ => l,
                }
            })
            .filter(|l| !l.is_empty() && !l.starts_with("Last message repeated"))
            .collect();
        (header, lines)
    }
    let ((ha, la), (hb, lb)) = (split(a), split(b));
    ha == hb && ((la.is_empty() && lb.is_empty()) || !la.is_disjoint(&lb))
}

/// The job-level failure of a unit that failed the same way on two nodes: a property of the
/// input, not of a node, so no budget is spent on more nodes.
fn input_damaged(task: &Task, rec: &SegmentRecord, last: &Failure) -> Failure {
    let nodes: Vec<String> = rec.failed_nodes().iter().map(|n| n.to_string()).collect();
    Failure::new(
        Reason::InputDamaged,
        format!(
            "{} of job {} (input {:.3}-{:.3} s) failed the same way on {} nodes ({}): {}",
            task.unit,
            task.job_id,
            task.start_secs,
            task.start_secs + task.duration_secs,
            nodes.len(),
            nodes.join(", "),
            last.message
        ),
    )
}

/// Keeps the task on the dead-letter subject, then reports the failure (which fails the job)
/// and terminates the message.
async fn dead_letter(ctx: &Ctx, node: &NodeId, task: &Task, rec: &SegmentRecord) -> Disposition {
    let failure = rec
        .failure
        .clone()
        .unwrap_or_else(|| Failure::new(Reason::EncodeFailed, "unit failed"));
    let letter = DeadLetter {
        version: CURRENT,
        task: task.clone(),
        failure: failure.clone(),
        failures: rec.failures.clone(),
        at: ffleet_shared::time::now_rfc3339(),
    };
    if let Err(e) = publish::raw(
        &ctx.js,
        subjects::dead_letter(&task.job_id, task.unit),
        messages::encode(&letter),
        &subjects::msg_id::dead_letter(&task.job_id, task.unit),
    )
    .await
    {
        tracing::warn!(error = %e, "dead letter not stored, will retry");
        return RETRY;
    }
    tracing::error!(job = %task.job_id, unit = %task.unit, message = %failure.message, "unit failed for good");
    report(
        ctx,
        node,
        task,
        SegmentOutcome::Failed { failure },
        Disposition::Term,
    )
    .await
}

async fn republish(ctx: &Ctx, node: &NodeId, task: &Task, rec: &SegmentRecord) -> Disposition {
    let outcome = match (&rec.state, &rec.result_key, &rec.failure) {
        (SegmentState::Done, Some(rk), _) => SegmentOutcome::Encoded {
            result_key: rk.clone(),
            frames: rec.frames.unwrap_or(0),
            encode_secs: 0.0,
        },
        (SegmentState::Failed, _, Some(f)) => SegmentOutcome::Failed { failure: f.clone() },
        _ => return Disposition::Ack,
    };
    let node = rec.owner.clone().unwrap_or_else(|| node.clone());
    report(ctx, &node, task, outcome, Disposition::Ack).await
}

async fn report(
    ctx: &Ctx,
    node: &NodeId,
    task: &Task,
    outcome: SegmentOutcome,
    then: Disposition,
) -> Disposition {
    let ev = JobEvent::SegmentDone(SegmentDone {
        version: CURRENT,
        job_id: task.job_id.clone(),
        unit: task.unit,
        attempt: task.attempt,
        node: node.clone(),
        outcome,
    });
    match publish::event(&ctx.js, ctx.service, &ev).await {
        Ok(_) => then,
        Err(e) => {
            tracing::warn!(error = %e, "segment report not published, will retry");
            RETRY
        }
    }
}

/// Forwards ffmpeg progress to `ffleet.live.<job>` at most once a second.
fn live_publisher(
    ctx: &Ctx,
    node: &NodeId,
    task: &Task,
) -> impl FnMut(&ffleet_shared::media::progress::ProgressBlock) + use<> {
    let client = ctx.client.clone();
    let subject = subjects::live_progress(&task.job_id);
    let base = LiveProgress {
        version: CURRENT,
        job_id: task.job_id.clone(),
        unit: task.unit,
        attempt: task.attempt,
        node: node.clone(),
        frame: 0,
        fps: 0.0,
        speed: 0.0,
        out_secs: 0.0,
    };
    let mut last: Option<Instant> = None;
    move |b| {
        if !b.end && last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        last = Some(Instant::now());
        let p = LiveProgress {
            frame: b.frame.unwrap_or(0),
            fps: b.fps.unwrap_or(0.0),
            speed: b.speed.unwrap_or(0.0),
            out_secs: b.out_time_us.unwrap_or(0).max(0) as f64 / 1e6,
            ..base.clone()
        };
        let client = client.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            let _ = client.publish(subject, messages::encode(&p)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_of_another_gpu_class_step_aside_for_a_reissued_attempt_twice() {
        let class = |m: &str| GpuClass {
            model: m.into(),
            driver: "550.54.15".into(),
        };
        let mut task: Task = serde_json::from_value(serde_json::json!({"version": 1,
            "job_id": "j", "unit": "v00001", "attempt": 2, "profile": "h264",
            "input": {"kind": "scratch", "key": "k"}, "duration_secs": 1.0,
            "result_ext": "nut", "priority": 0}))
        .unwrap();
        // No preference: nobody steps aside.
        assert!(!steps_aside(&task, None, 1));
        task.prefer_class = Some(class("NVIDIA L4"));
        assert!(!steps_aside(&task, Some(&class("NVIDIA L4")), 1));
        assert!(steps_aside(&task, Some(&class("NVIDIA T4")), 1));
        assert!(steps_aside(&task, None, 2));
        // From the third delivery on, any node takes it.
        assert!(!steps_aside(&task, Some(&class("NVIDIA T4")), 3));
    }

    #[test]
    fn failures_compare_without_process_addresses() {
        let a = "v00002 of job j failed: ffmpeg failed (exit code 1): [h264 @ 0x55d0c3a1b2c0] Invalid NAL unit size";
        let b = "v00002 of job j failed: ffmpeg failed (exit code 1): [h264 @ 0x5611aa00ff10] Invalid NAL unit size";
        assert!(same_failure(a, b));
        assert!(!same_failure(
            a,
            "v00002 of job j failed: ffmpeg failed (exit code 1): other"
        ));
        // One run folds a repeat that the other prints twice.
        let c = "failed (exit code 69): [h264 @ 0x1a] Error splitting\nError while decoding\n    Last message repeated 1 times\n[h264 @ 0x2b] Error splitting";
        let d = "failed (exit code 69): [h264 @ 0x3c] Error splitting\nError while decoding\nError while decoding\n[h264 @ 0x4d] Error splitting\n[h264 @ 0x5e] Error splitting";
        assert!(same_failure(c, d));
        // The kept tail may hold different lines of the same failure.
        let e =
            "failed (exit code 69): [h264 @ 0x1a] Error splitting\n[h264 @ 0x2a] Error splitting";
        assert!(same_failure(c, e));
        assert!(!same_failure(
            e,
            "failed (exit code 1): [h264 @ 0x1a] Error splitting"
        ));
        let f = "v00001 of job j: encoded 0 frames, the segment should hold 25";
        assert!(same_failure(f, f));
        assert!(!same_failure(
            f,
            "v00001 of job j: encoded 3 frames, the segment should hold 25"
        ));
    }
}
