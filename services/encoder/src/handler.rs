//! One encode task: claim → encode → store → record → report → ack.
//!
//! The claim and the final record update are revision-checked against the task's attempt, so a
//! task whose unit moved on (a newer attempt) is dropped, and a late result of a superseded
//! attempt is never recorded as the unit's result. A redelivered task whose unit is already done
//! only republishes its (de-duplicated) report.

use crate::ACK_WAIT;
use crate::encode::{self, EncodeError};
use crate::heartbeat::State;
use async_nats::jetstream::Message;
use ffleet_shared::messages::events::{SegmentDone, SegmentOutcome};
use ffleet_shared::messages::{
    self, CURRENT, JobEvent, LiveProgress, SegmentRecord, SegmentState, Task, TaskInput,
};
use ffleet_shared::nats::ack::{self, Disposition, KeepAlive};
use ffleet_shared::nats::kv::Change;
use ffleet_shared::nats::publish;
use ffleet_shared::reason::{Failure, Reason};
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{Capability, NodeId, subjects, telemetry};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RETRY: Disposition = Disposition::Retry(Duration::from_secs(2));

enum Claim {
    Mine,
    /// Gone, superseded or failed: nothing to do.
    Stale,
    /// Done or failed by this attempt already: republish the report.
    Reported(SegmentRecord),
}

pub async fn handle(
    ctx: &Ctx,
    node: &NodeId,
    state: &State,
    msg: &Message,
    shutdown: &CancellationToken,
) -> Disposition {
    let task: Task = match messages::decode("task", &msg.payload) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "undecodable task dropped");
            return Disposition::Term;
        }
    };
    telemetry::spans::encode_task(&task, msg);
    let key = subjects::segment_key(&task.job_id, task.unit);
    let claim = ctx
        .segments
        .modify(&key, |rec| match rec {
            None => Change::Keep(Claim::Stale),
            Some(r) if r.attempt != task.attempt => Change::Keep(Claim::Stale),
            Some(r) if matches!(r.state, SegmentState::Done | SegmentState::Failed) => {
                Change::Keep(Claim::Reported(r.clone()))
            }
            Some(r) => {
                let mut r = r.clone();
                r.state = SegmentState::Running;
                r.owner = Some(node.clone());
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
        Ok(Claim::Mine) => {}
    }

    let delivered = ack::delivered(msg);
    if delivered > i64::from(ctx.config.encoder.max_attempts) {
        let f = Failure::new(
            Reason::EncodeFailed,
            format!(
                "{} of job {} was handed out {delivered} times without finishing",
                task.unit, task.job_id
            ),
        );
        return fail(ctx, node, &task, &key, f).await;
    }

    let tag = format!("{key}#{}", task.attempt);
    state.hold(tag.clone());
    let d = encode_claimed(ctx, node, &task, &key, msg, shutdown).await;
    state.release(&tag);
    d
}

async fn encode_claimed(
    ctx: &Ctx,
    node: &NodeId,
    task: &Task,
    key: &str,
    msg: &Message,
    shutdown: &CancellationToken,
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

    let _keep = KeepAlive::start(msg, ACK_WAIT / 3);
    let live = live_publisher(ctx, node, task);
    tracing::debug!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "encoding");
    let unit = encode::Unit {
        task,
        profile,
        variant,
    };
    let result = encode::run(&ctx.config, unit, &input, &staged, shutdown, live).await;
    let encoded = match result {
        Ok(e) => e,
        Err(err) => {
            let _ = tokio::fs::remove_file(&staged).await;
            return match err {
                EncodeError::Cancelled => Disposition::Retry(Duration::ZERO),
                EncodeError::Transient(why) => {
                    tracing::warn!(job = %task.job_id, unit = %task.unit, error = %why, "encode interrupted, will retry");
                    Disposition::Retry(Duration::from_secs(5))
                }
                EncodeError::Permanent(f) => fail(ctx, node, task, key, f).await,
            };
        }
    };
    if let Err(e) = ctx.storage.commit(&staged, &result_key).await {
        tracing::warn!(error = %e, "storing result failed");
        return RETRY;
    }

    let attempt = task.attempt;
    let frames = encoded.frames;
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

/// Records a permanent failure for this attempt and reports it; the message is terminated.
async fn fail(ctx: &Ctx, node: &NodeId, task: &Task, key: &str, f: Failure) -> Disposition {
    tracing::warn!(job = %task.job_id, unit = %task.unit, reason = %f.reason, message = %f.message, "unit failed");
    telemetry::spans::fail(&tracing::Span::current(), &f);
    let attempt = task.attempt;
    let recorded = ctx
        .segments
        .modify(key, |rec| match rec {
            Some(r) if r.attempt == attempt && r.state != SegmentState::Done => {
                let mut r = r.clone();
                r.state = SegmentState::Failed;
                r.failure = Some(f.clone());
                r.updated_at = ffleet_shared::time::now_rfc3339();
                Change::Write(r, true)
            }
            _ => Change::Keep(false),
        })
        .await;
    match recorded {
        Err(e) => {
            tracing::warn!(error = %e, "recording failure failed");
            RETRY
        }
        Ok(false) => Disposition::Ack,
        Ok(true) => {
            report(
                ctx,
                node,
                task,
                SegmentOutcome::Failed { failure: f },
                Disposition::Term,
            )
            .await
        }
    }
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
