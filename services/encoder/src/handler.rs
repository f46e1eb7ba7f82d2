//! One encode task: claim → encode → store → record → report → ack.
//!
//! The claim and the final record update are revision-checked against the task's attempt, so a
//! task whose unit moved on (a newer attempt) is dropped, and a late result of a superseded
//! attempt is never recorded as the unit's result. A redelivered task whose unit is already done
//! only republishes its (de-duplicated) report.

use crate::Executor;
use crate::demote::Verdict;
use crate::encode::{self, EncodeError};
use crate::heartbeat::State;
use crate::probe;
use crate::record::{self, Applying};
use async_nats::jetstream::Message;
use ffleet_runtime::messages::events::{SegmentDone, SegmentOutcome};
use ffleet_runtime::messages::heartbeat::{GpuClass, Held};
use ffleet_runtime::messages::{
    self, CURRENT, DeadLetter, JobEvent, LiveProgress, SegmentRecord, SegmentState, Task, TaskInput,
};
use ffleet_runtime::nats::ack::{self, KeepAlive, Outcome};
use ffleet_runtime::nats::kv::{Change, KvError};
use ffleet_runtime::nats::publish;
use ffleet_runtime::profiles::{Profile, Variant};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::{Local, Roots, open_input_link};
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::unit_protocol::{self, Applied, Failing, Final, Refused, Step, UnitResult};
use ffleet_runtime::{Capability, JobId, NodeId, subjects, telemetry};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Deliveries of a task whose unit record reads older than its attempt before the task is
/// believed stale.
const LAGGING_CLAIMS: i64 = 10;
/// Deliveries of one attempt's task after which its unit fails for good: a backstop for a task
/// that keeps coming back with no outcome recorded. The fleet's own faults stay far below it:
/// a hand-back for the fleet's sake releases the attempt to a new one (a new message, counted
/// from one), and only a broker error that outlasts `nats.op_retry_secs` or a read still older
/// than the task sends the same message back.
const MAX_DELIVERIES: i64 = 20;
/// Between claims of a task held while the store has no room.
const FULL_PAUSE: Duration = Duration::from_secs(2);
/// How long a task this node should leave to others, or whose record reads behind it, waits.
const STEP_ASIDE: Duration = Duration::from_secs(1);
/// Why a task is handed back when the unit record read is older than the task's attempt.
const LAGGING: &str = "unit record read older than the task";

enum Claim {
    Mine,
    /// This node failed the unit before: leave it to another node for a moment.
    Avoid,
    /// Gone, superseded or failed: nothing to do.
    Stale,
    /// The record read is older than the task's attempt: look again in a moment.
    Lagging,
    /// Done or failed by this attempt already: republish the report.
    Reported(Box<SegmentRecord>),
}

/// `task`: `msg` decoded by the caller (which sized the slots from it); `slots`: how many of
/// this node's slots the caller holds for the task.
pub async fn handle(
    ctx: &Ctx,
    node: &NodeId,
    state: &State,
    msg: &Message,
    task: Result<Task, messages::DecodeError>,
    slots: u32,
    exec: &dyn Executor,
) -> Outcome {
    let task = match task {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "undecodable task dropped");
            return Outcome::permanent(Reason::Internal, format!("undecodable task: {e}"));
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
    if state.is_dropped(&task.job_id) {
        tracing::debug!(job = %task.job_id, unit = %task.unit, "task of an ended job let go");
        return Outcome::Done;
    }
    let key = subjects::segment_key(&task.job_id, task.unit);
    let delivered = ack::delivered(msg);
    let mut kept = None;
    let (claim, known) = loop {
        match claim(ctx, node, state, &task, &key, delivered).await {
            Ok((c, known)) => break (Ok(c), known),
            // A server without room: the task stays here, kept alive, and the claim is tried
            // again until writes land. Handed back, each round would spend a delivery of the
            // unit's budget (`MAX_DELIVERIES`), and a store full for twenty minutes would fail
            // every unit in flight.
            Err(e) if ffleet_runtime::nats::is_store_full(&e) && !state.is_draining() => {
                kept.get_or_insert_with(|| {
                    tracing::warn!(job = %task.job_id, unit = %task.unit, "jetstream store is full: task held until its claim can be written");
                    KeepAlive::start(msg, ctx.config.streams.ack_wait() / 3)
                });
                tokio::time::sleep(FULL_PAUSE).await;
            }
            Err(e) => break (Err(e), None),
        }
    };
    drop(kept);
    match claim {
        Err(e) => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "claim failed");
            return Outcome::transient(e);
        }
        Ok(Claim::Stale) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "stale task dropped");
            return Outcome::Done;
        }
        Ok(Claim::Reported(rec)) => return republish(ctx, node, &task, &rec).await,
        Ok(Claim::Avoid) => {
            return Outcome::retry_after("left to another node for a moment", STEP_ASIDE);
        }
        Ok(Claim::Lagging) => {
            tracing::debug!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "unit record read older than the task, handed back");
            return Outcome::retry_after(LAGGING, STEP_ASIDE);
        }
        Ok(Claim::Mine) => {}
    }

    let claimed = Claimed {
        ctx,
        node,
        state,
        task: &task,
        key: &key,
        known,
    };
    if delivered > MAX_DELIVERIES {
        let f = Failure::new(
            Reason::EncodeFailed,
            format!(
                "{} of job {} was handed out {delivered} times without an outcome",
                task.unit, task.job_id
            ),
        );
        return claimed.give_up(f).await;
    }

    let held = Held {
        slots,
        capability: task.capability.clone(),
        ..Held::new(task.job_id.clone(), task.unit, task.attempt)
    };
    let claimed_at = claimed.known.as_ref().map_or(0, |(_, rev)| *rev);
    let cancel = state.hold(&key, held, claimed_at);
    // Told of the job's end between the check above and the hold: nothing cancelled it.
    if state.is_dropped(&task.job_id) {
        cancel.cancel();
    }
    let d = encode_claimed(&claimed, msg, &cancel, exec).await;
    state.release(&key);
    d
}

/// A unit this node claimed, and what every step of its encode needs.
struct Claimed<'a> {
    ctx: &'a Ctx,
    node: &'a NodeId,
    state: &'a State,
    task: &'a Task,
    key: &'a str,
    /// The record as this node's claim wrote it, and its revision: the result's write starts
    /// from it instead of a read.
    known: Option<(SegmentRecord, u64)>,
}

impl Claimed<'_> {
    /// Applies `step`, a step of the attempt this node claimed, starting from its claim's copy.
    async fn apply(&self, step: &Step<'_>) -> Result<Applying, KvError> {
        record::apply(self.ctx, self.key, step, self.known.clone()).await
    }

    /// An encode cut short for the fleet's sake (cancelled by a drain or a lost claim, a node,
    /// broker or storage fault), after `pause`: if this node still owns the attempt, it is
    /// released to a new one (no failure recorded, so the unit's budget is untouched) and
    /// routed again at once; if not, the unit was handed on while this node looked dead
    /// (frozen, cut off), and the work is dropped. Decided from the claim's copy, and never on
    /// a read older than it (`record::apply`).
    async fn release(&self, pause: Duration) -> Outcome {
        let task = self.task;
        if let Some(done) = self.ended() {
            return done;
        }
        tokio::time::sleep(pause).await;
        let step = Step::Release {
            attempt: task.attempt,
            node: self.node,
        };
        match self.apply(&step).await {
            // The record could not be read or written: the message comes back, and whoever
            // takes it takes the running attempt over.
            Err(e) => {
                tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "releasing a unit failed, handed back");
                Outcome::transient(e)
            }
            Ok(Applying::Lagging) => Outcome::transient(LAGGING),
            Ok(Applying::Refused(why)) => {
                tracing::info!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, refused = ?why, "superseded unit dropped");
                Outcome::Done
            }
            Ok(Applying::Written(_, applied)) => {
                if let Applied::Reissued(next) = applied {
                    replan(self.ctx, task, next).await;
                }
                tracing::info!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "unit released for another node");
                Outcome::Done
            }
        }
    }

    /// Records this node's failure of the unit and re-issues it for another node, or, when the
    /// retry budget is spent, fails it for good. `conclusive`: ffmpeg's own verdict (see
    /// `Failing::conclusive`).
    async fn fail(&self, f: Failure, conclusive: bool) -> Outcome {
        let (ctx, node, task) = (self.ctx, self.node, self.task);
        if let Some(done) = self.ended() {
            return done;
        }
        tracing::warn!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, reason = %f.reason, message = %f.message, "unit failed on this node");
        telemetry::spans::fail(&tracing::Span::current(), &f);
        let describe = |v: Final, r: &SegmentRecord| match v {
            Final::InputDamaged => input_damaged(task, r, &f),
            Final::StorageFull => f.clone(),
            Final::Exhausted => exhausted(task, r, &f),
        };
        let step = Step::Failed(Failing {
            attempt: task.attempt,
            node,
            failure: &f,
            on_gpu: task.capability.as_ref().is_some_and(Capability::is_gpu),
            conclusive,
            budget: ctx.config.fleet.budget(),
            describe: &describe,
        });
        let applied = self.apply(&step).await;
        self.failure_recorded(applied).await
    }

    /// Fails the unit for good without another attempt (it went round too often).
    /// `Some(Done)` when the unit's job has ended (the scheduler said so): whatever went wrong
    /// with the unit (its cut removed by the cancel's cleanup, its encode killed) is neither
    /// handed back nor recorded.
    fn ended(&self) -> Option<Outcome> {
        let task = self.task;
        self.state.is_dropped(&task.job_id).then(|| {
            tracing::info!(job = %task.job_id, unit = %task.unit, "unit of an ended job let go");
            Outcome::Done
        })
    }

    async fn give_up(&self, f: Failure) -> Outcome {
        if let Some(done) = self.ended() {
            return done;
        }
        let step = Step::GiveUp {
            attempt: self.task.attempt,
            failure: &f,
        };
        let applied = self.apply(&step).await;
        self.failure_recorded(applied).await
    }

    /// What a failure step led to: the next attempt routed, the unit dead-lettered, or (a
    /// superseded attempt) nothing.
    async fn failure_recorded(&self, applied: Result<Applying, KvError>) -> Outcome {
        let (ctx, node, task) = (self.ctx, self.node, self.task);
        match applied {
            Err(e) => {
                tracing::warn!(error = %e, "recording failure failed");
                Outcome::transient(e)
            }
            Ok(Applying::Lagging) => Outcome::transient(LAGGING),
            Ok(Applying::Refused(why)) => {
                tracing::info!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, refused = ?why, "superseded unit dropped, its failure not recorded");
                Outcome::Done
            }
            Ok(Applying::Written(_, Applied::Reissued(next))) => {
                replan(ctx, task, next).await;
                Outcome::Done
            }
            Ok(Applying::Written(rec, _)) => dead_letter(ctx, node, task, &rec).await,
        }
    }
}

async fn encode_claimed(
    c: &Claimed<'_>,
    msg: &Message,
    cancel: &CancellationToken,
    exec: &dyn Executor,
) -> Outcome {
    let (ctx, task) = (c.ctx, c.task);
    let cap = task.capability.clone().unwrap_or_else(Capability::cpu);
    let (profile, variant) = match variant_of(c, &cap) {
        Ok(v) => v,
        Err(f) => return c.fail(f, true).await,
    };
    let _keep = KeepAlive::start(msg, ctx.config.streams.ack_wait() / 3);
    // A fetched copy lives in this node's work dir until `local` drops (any return below).
    let local = match fetch_input(c).await {
        Ok(l) => l,
        Err(outcome) => return outcome,
    };
    let result_key = task.result_key();
    let staged = match ctx.storage.staging_path(&result_key).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no staging path");
            return Outcome::transient(e);
        }
    };
    let mut live = live_publisher(ctx, c.node, task);
    let mut on_progress = |b: &ffleet_runtime::media::progress::ProgressBlock| {
        let (frame, fps, speed) = (b.frame.unwrap_or(0), b.fps.unwrap_or(0.0), b.speed);
        c.state.progress(c.key, frame, fps, speed.unwrap_or(0.0));
        live(b);
    };
    tracing::debug!(job = %task.job_id, unit = %task.unit, attempt = task.attempt, "encoding");
    let unit = encode::Unit {
        task,
        profile,
        variant,
        released: msg.info().ok().map(|i| i.published),
        // A segment inside its cut decodes its lead-in first: that media counts toward the limit.
        limits: c.state.settings.limits(
            task.duration_secs + task.within.map_or(0.0, |w| w.lead_secs()),
            ctx.config.ffmpeg.stall_timeout(),
        ),
    };
    let result = exec
        .run(
            &ctx.config,
            unit,
            local.path(),
            &staged,
            cancel,
            &mut on_progress,
        )
        .await;
    let encoded = match result {
        Ok(e) => e,
        Err(err) => {
            let _ = tokio::fs::remove_file(&staged).await;
            return encode_failed(c, err, &cap, variant).await;
        }
    };
    c.state.demotions.succeeded(&cap);
    let stored = match ctx.storage.commit(&staged, &result_key).await {
        Ok(s) => s,
        Err(e) if e.is_transient() => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "storing result failed");
            return c.release(Duration::from_secs(1)).await;
        }
        Err(e) => return c.fail(e.failure("storing the encoded unit"), true).await,
    };
    let result = UnitResult {
        key: result_key,
        frames: encoded.frames,
        decode_errors: encoded.decode_errors,
        digest: stored.digest.clone(),
        bytes_moved: local.bytes_moved + stored.bytes_moved,
    };
    drop(local);
    record_result(c, result, encoded.secs).await
}

/// What becomes of a unit whose encode did not finish: handed back when the run was cut short,
/// failed (and the variant judged) when ffmpeg refused it.
async fn encode_failed(
    c: &Claimed<'_>,
    err: EncodeError,
    cap: &Capability,
    variant: &Variant,
) -> Outcome {
    let task = c.task;
    match err {
        // A job that ended is let go in `release` (nothing handed back or recorded).
        EncodeError::Cancelled => c.release(Duration::ZERO).await,
        EncodeError::NodeFault(why) => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %why, "encode could not run here");
            c.release(Duration::from_secs(1)).await
        }
        EncodeError::CutShort(f) => c.fail(f, false).await,
        EncodeError::Permanent(f) => {
            judge_failure(c.ctx, c.state, cap, variant).await;
            c.fail(f, true).await
        }
    }
}

/// The task's profile and its variant for the capability it was routed to.
fn variant_of<'p>(
    c: &'p Claimed<'_>,
    cap: &Capability,
) -> Result<(&'p Profile, &'p Variant), Failure> {
    let task = c.task;
    let Some(profile) = c.ctx.config.profile(&task.profile) else {
        return Err(Failure::new(
            Reason::UnknownProfile,
            format!("encoder {} has no profile {:?}", c.node, task.profile),
        ));
    };
    let Some(variant) = profile.variants.get(cap.as_str()) else {
        return Err(Failure::new(
            Reason::UnknownProfile,
            format!(
                "profile {:?} has no {cap} variant on encoder {}",
                task.profile, c.node
            ),
        ));
    };
    Ok((profile, variant))
}

/// The unit's input on this node: its cut fetched from storage, or the source opened inside
/// this node's roots (the tracks unit). On failure, what to do with the message.
async fn fetch_input(c: &Claimed<'_>) -> Result<Local, Outcome> {
    let task = c.task;
    match &task.input {
        // Checked against the digest the splitter recorded, not the object's own metadata: a
        // client that may write the media bucket cannot swap a cut.
        TaskInput::Scratch { key: k, digest } => {
            match c.ctx.storage.fetch(k, digest.as_deref()).await {
                Ok(l) => Ok(l),
                Err(e) if e.is_transient() => {
                    tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "segment source fetch failed");
                    Err(c.release(Duration::from_secs(1)).await)
                }
                Err(e) => {
                    let f =
                        Failure::new(Reason::Internal, format!("segment source unavailable: {e}"));
                    Err(c.fail(f, true).await)
                }
            }
        }
        TaskInput::Source { uri } => match open_source(c.ctx, &c.task.job_id, uri) {
            Ok(l) => Ok(l),
            Err(f) => Err(c.fail(f, true).await),
        },
    }
}

/// Records the stored result through the unit protocol (refused if the attempt was superseded
/// meanwhile) and reports it.
async fn record_result(c: &Claimed<'_>, result: UnitResult, secs: f64) -> Outcome {
    let task = c.task;
    let attempt = task.attempt;
    let step = Step::Encoded {
        attempt,
        node: c.node,
        result: &result,
    };
    match c.apply(&step).await {
        Err(e) => {
            tracing::warn!(error = %e, "recording result failed");
            return Outcome::transient(e);
        }
        Ok(Applying::Lagging) => return Outcome::transient(LAGGING),
        Ok(Applying::Refused(why)) => {
            tracing::info!(job = %task.job_id, unit = %task.unit, attempt, refused = ?why, "result of a superseded attempt discarded");
            return Outcome::Done;
        }
        Ok(Applying::Written(..)) => {}
    }
    tracing::debug!(job = %task.job_id, unit = %task.unit, frames = result.frames, secs, "unit encoded");
    let outcome = SegmentOutcome::Encoded {
        result_key: result.key,
        frames: result.frames,
        encode_secs: secs,
    };
    report(c.ctx, c.node, task, outcome, Outcome::Done).await
}

/// Takes the unit for this node through the unit protocol, unless this node should leave it to
/// others for a moment (it failed the unit before, or the attempt prefers another GPU class).
/// A claim written comes back with the record and revision it wrote.
async fn claim(
    ctx: &Ctx,
    node: &NodeId,
    state: &State,
    task: &Task,
    key: &str,
    delivered: i64,
) -> Result<(Claim, Option<(SegmentRecord, u64)>), ffleet_runtime::nats::kv::KvError> {
    let my_class = state.gpu_class().cloned();
    let on_gpu = task.capability.as_ref().is_some_and(Capability::is_gpu);
    let step = Step::Claim {
        attempt: task.attempt,
        node,
        gpu_class: if on_gpu { my_class.as_ref() } else { None },
    };
    // The task carries the record as the scheduler's route wrote it: when nothing wrote since,
    // the claim costs no read.
    ctx.segments
        .modify_known(key, task.known_record(), |rec| {
            if let Some(r) = rec
                && r.attempt == task.attempt
                && !matches!(r.state, SegmentState::Done | SegmentState::Failed)
                && ((delivered <= 2 && r.failures.iter().any(|f| &f.node == node))
                    || steps_aside(task, my_class.as_ref(), delivered))
            {
                return Change::Keep(Claim::Avoid);
            }
            match unit_protocol::apply(rec, &step, &now_rfc3339()) {
                Ok((r, _)) => Change::Write(r, Claim::Mine),
                Err(Refused::Finished(_)) => match rec {
                    Some(r) => Change::Keep(Claim::Reported(Box::new(r.clone()))),
                    None => Change::Keep(Claim::Stale),
                },
                // The task comes from a re-issue the read does not show yet (a server
                // catching up): it comes back in a second, unless it keeps coming back.
                Err(why) if why.predates(task.attempt) && delivered <= LAGGING_CLAIMS => {
                    Change::Keep(Claim::Lagging)
                }
                Err(_) => Change::Keep(Claim::Stale),
            }
        })
        .await
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
    let timeout = state.settings.proof_timeout();
    let proof = probe::variant(&ctx.config.tools().ffmpeg, variant, timeout).await;
    if state.demotions.failed(cap, proof.ok) == Verdict::Demoted {
        let why = if proof.ok {
            format!(
                "{} accelerator encodes failed in a row",
                state.settings.demote_after_failures
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
async fn bounce(ctx: &Ctx, task: &Task, cap: &Capability) -> Outcome {
    let key = subjects::segment_key(&task.job_id, task.unit);
    let attempt = task.attempt;
    let step = Step::HandBack { attempt };
    let moved = ctx
        .segments
        .modify_known(&key, task.known_record(), |rec| match unit_protocol::apply(
            rec,
            &step,
            &now_rfc3339(),
        ) {
            Ok((r, _)) => Change::Write(r, true),
            Err(_) => Change::Keep(false),
        })
        .await
        .map(|(moved, _)| moved);
    match moved {
        Err(e) => {
            tracing::warn!(error = %e, "handing back a task failed, will retry");
            Outcome::transient(e)
        }
        Ok(false) => Outcome::Done,
        Ok(true) => {
            let t = Task {
                slots: 1,
                prefer_class: None,
                ..task.clone()
            };
            replan(ctx, &t, attempt + 1).await;
            tracing::info!(job = %task.job_id, unit = %task.unit, capability = %cap, "task for a demoted capability handed back to the scheduler");
            Outcome::Done
        }
    }
}

/// Sends attempt `next` of `task`'s unit to the scheduler to be routed afresh. Lost here, the
/// planned attempt is re-issued by the scheduler's reconciler.
async fn replan(ctx: &Ctx, task: &Task, next: u32) {
    let t = Task {
        attempt: next,
        capability: None,
        record: None,
        ..task.clone()
    };
    if let Err(e) = publish::plan(&ctx.js, ctx.retry, &t).await {
        tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "re-issuing a unit failed; the reconciler will");
    }
}

/// Opens the source a task names, inside this node's own input roots (a task is not trusted
/// for a path: it names the request's URI, resolved here at the moment of use).
fn open_source(ctx: &Ctx, job: &JobId, uri: &str) -> Result<Local, Failure> {
    let roots = Roots::inputs(&ctx.config.storage.for_job(job));
    let file = roots.open_input(uri).map_err(|e| {
        Failure::new(
            Reason::InputNotAllowed,
            format!("task source refused on this node: {e}"),
        )
    })?;
    let name = uri.rsplit('/').next().unwrap_or("source");
    open_input_link(file, ctx.storage.work_dir(), name)
        .map_err(|e| Failure::new(Reason::Internal, format!("task source: {e}")))
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
async fn dead_letter(ctx: &Ctx, node: &NodeId, task: &Task, rec: &SegmentRecord) -> Outcome {
    let failure = rec
        .failure
        .clone()
        .unwrap_or_else(|| Failure::new(Reason::EncodeFailed, "unit failed"));
    let letter = DeadLetter {
        version: CURRENT,
        task: task.clone(),
        failure: failure.clone(),
        failures: rec.failures.clone(),
        at: now_rfc3339(),
    };
    if let Err(e) = publish::raw(
        &ctx.js,
        ctx.retry,
        subjects::dead_letter(&task.job_id, task.unit),
        messages::encode(&letter),
        &subjects::msg_id::dead_letter(&task.job_id, task.unit),
    )
    .await
    {
        tracing::warn!(error = %e, "dead letter not stored, will retry");
        return Outcome::transient(e);
    }
    tracing::error!(job = %task.job_id, unit = %task.unit, message = %failure.message, "unit failed for good");
    let then = Outcome::permanent(failure.reason, failure.message.clone());
    report(ctx, node, task, SegmentOutcome::Failed { failure }, then).await
}

async fn republish(ctx: &Ctx, node: &NodeId, task: &Task, rec: &SegmentRecord) -> Outcome {
    let outcome = match (&rec.state, &rec.result_key, &rec.failure) {
        (SegmentState::Done, Some(rk), _) => SegmentOutcome::Encoded {
            result_key: rk.clone(),
            frames: rec.frames.unwrap_or(0),
            encode_secs: 0.0,
        },
        (SegmentState::Failed, _, Some(f)) => SegmentOutcome::Failed { failure: f.clone() },
        _ => return Outcome::Done,
    };
    let node = rec.owner.clone().unwrap_or_else(|| node.clone());
    report(ctx, &node, task, outcome, Outcome::Done).await
}

async fn report(
    ctx: &Ctx,
    node: &NodeId,
    task: &Task,
    outcome: SegmentOutcome,
    then: Outcome,
) -> Outcome {
    let ev = JobEvent::SegmentDone(SegmentDone {
        version: CURRENT,
        job_id: task.job_id.clone(),
        unit: task.unit,
        attempt: task.attempt,
        node: node.clone(),
        outcome,
    });
    match publish::event(&ctx.js, ctx.retry, ctx.service, &ev).await {
        Ok(_) => then,
        Err(e) => {
            tracing::warn!(error = %e, "segment report not published, will retry");
            Outcome::transient(e)
        }
    }
}

/// Forwards ffmpeg progress to `ffleet.live.<job>` at most once a second.
fn live_publisher(
    ctx: &Ctx,
    node: &NodeId,
    task: &Task,
) -> impl FnMut(&ffleet_runtime::media::progress::ProgressBlock) + use<> {
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
        ffleet_runtime::nats::ops::count(ffleet_runtime::nats::ops::Op::CorePublish);
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
}
