//! The unit protocol in one place. Every change to a unit's ownership record (`SegmentRecord`)
//! is a `Step` applied by `apply`: a pure function of the record read and the step, which the
//! services call inside their revision-checked KV update (`Typed::modify`), so the decision and
//! the write it leads to see the same revision.
//!
//! Fencing lives here. A step names the attempt its caller holds, and a step for any other
//! attempt is refused: a superseded attempt can never record a result, fail the unit or move it
//! on, and a new attempt (`next`) clears the old one's owner and result. The retry budget (how
//! many failures, on how many nodes) is decided here too.
//!
//! ```text
//!   (split) ──Replan──► planned ──Route──► queued ──Claim──► running ──Encoded──► done
//!      ▲                 │ Claim           │ Failed (budget left), Reissue (node gone),
//!      │                 ▼                 │ Release (fleet fault) │ Refuse (stored result bad)
//!      └────── next attempt ◄──────────────┴───────────┘
//!   running ──Failed (budget spent, input damaged, storage full) / GiveUp──► failed
//! ```
//!
//! Reads in a cluster can come back older than what the reader itself wrote (a leader catching
//! up after an election). Revision-checked writes are safe against that: a write decided on an
//! old read loses its revision check. Decisions that write nothing (cancel an encode, drop a
//! report) are not, so they go through `holding` and `judge_report`, which tell such a read
//! apart and decide nothing on it.

use crate::Capability;
use crate::ids::NodeId;
use crate::messages::heartbeat::GpuClass;
use crate::messages::records::AttemptFailure;
use crate::messages::{SegmentRecord, SegmentState};
use crate::reason::{Failure, Reason};

#[cfg(test)]
mod props;
#[cfg(test)]
mod stale_reads;

/// How much failing a unit may do before its job fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Distinct nodes a unit may fail on (`fleet.retry_nodes`).
    pub retry_nodes: u32,
    /// Failures in all (`fleet.max_attempts`).
    pub max_attempts: u32,
}

/// Why a failed unit will not be tried again: the caller words the job's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// It failed the same way on two nodes (CPU, ffmpeg's verdict): the input's fault.
    InputDamaged,
    /// The storage is full; another node would find it just as full.
    StorageFull,
    /// The budget is spent.
    Exhausted,
}

/// What the caller holds and wants done.
pub enum Step<'a> {
    /// The scheduler routes the attempt to a capability queue.
    Route {
        attempt: u32,
        capability: &'a Capability,
    },
    /// An encoder takes the attempt. A running attempt may be taken over: its message came back
    /// (AckWait) while its first owner was silent, and that owner's result is then refused.
    Claim {
        attempt: u32,
        node: &'a NodeId,
        /// The node's GPU class, kept when it claims for an accelerator.
        gpu_class: Option<&'a GpuClass>,
    },
    /// The owner stored its result.
    Encoded {
        attempt: u32,
        node: &'a NodeId,
        result: &'a UnitResult,
    },
    /// The attempt failed on a node: recorded, then re-issued for another node, or failed for
    /// good.
    Failed(Failing<'a>),
    /// Failed for good without another attempt (it was handed out too often).
    GiveUp { attempt: u32, failure: &'a Failure },
    /// A new attempt for a unit that is still exactly as the caller saw it (its node is gone,
    /// its task was lost).
    Reissue { attempt: u32, seen: Seen<'a> },
    /// A new attempt for an unclaimed unit whose task came back unencoded (its capability was
    /// given up by the node that took it).
    HandBack { attempt: u32 },
    /// The owner lets its running attempt go for the fleet's sake, not the unit's (it drains,
    /// a broker or storage error cut the encode short): a new attempt with no failure recorded,
    /// so the fleet's own faults never spend the unit's budget.
    Release { attempt: u32, node: &'a NodeId },
    /// The done unit's stored result was refused by the merger (missing, or not the recorded
    /// bytes). No attempt: the job record marks a unit collected only from its done attempt,
    /// and a done record changes through this step alone.
    Refuse,
    /// The splitter (re)plans the unit: `fresh` (a planned first attempt, with this split's cut)
    /// replaces a record an earlier try of the split left, and nothing else: a unit that was
    /// routed, claimed or has failed belongs to a job past splitting.
    Replan { fresh: &'a SegmentRecord },
}

/// A failure of an attempt on `node`; `describe` words the job's failure from the verdict and
/// the updated record when the unit fails for good.
pub struct Failing<'a> {
    pub attempt: u32,
    pub node: &'a NodeId,
    pub failure: &'a Failure,
    /// Whether it ran on an accelerator: two GPU nodes of one class can fail alike for their
    /// driver's sake, so only CPU failures say something about the input.
    pub on_gpu: bool,
    /// Whether ffmpeg itself gave a verdict (it exited with an error). A run cut short (a
    /// stall, a signal) spends the budget like any failure but says nothing about the input.
    pub conclusive: bool,
    pub budget: Budget,
    pub describe: &'a (dyn Fn(Final, &SegmentRecord) -> Failure + Sync),
}

/// A result as the encoder stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitResult {
    pub key: String,
    pub frames: u64,
    pub decode_errors: u64,
    pub digest: Option<String>,
    pub bytes_moved: u64,
}

/// The record state and owner a `Reissue` expects.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub state: SegmentState,
    pub owner: Option<&'a NodeId>,
}

/// What an accepted step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Planned again, at its first attempt.
    Planned,
    Routed,
    Claimed,
    Recorded,
    /// Moved on to this attempt, which waits to be routed.
    Reissued(u32),
    /// The unit failed for good.
    Failed,
}

/// Why a step was refused (the record is left as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No record: the job is gone.
    Missing,
    /// The unit is at another attempt than the step's.
    OtherAttempt { current: u32 },
    /// The attempt is finished (done or failed): a claim republishes its report.
    Finished(SegmentState),
    /// The step does not apply in this state (a route of a claimed unit, a result of a unit
    /// not running, a refusal of a unit not done).
    State(SegmentState),
    /// Another node owns the attempt now.
    NotOwner,
    /// The record is no longer as the caller saw it.
    Changed,
}

impl Refused {
    /// Whether this refusal of a step for `attempt`, an attempt the caller itself claimed (or
    /// was handed), can only come from a read older than that claim or re-issue: the record
    /// still at an earlier attempt, or not yet claimed. A read taken while a JetStream server
    /// catches up after a restart can be that old; believing it would drop a unit the record
    /// still shows running on the caller.
    pub fn predates(&self, attempt: u32) -> bool {
        match *self {
            Refused::OtherAttempt { current } => current < attempt,
            Refused::State(s) => matches!(s, SegmentState::Planned | SegmentState::Queued),
            _ => false,
        }
    }
}

/// Applies `step` to `rec`, stamped `now`: the new record and what happened, or why not.
pub fn apply(
    rec: Option<&SegmentRecord>,
    step: &Step,
    now: &str,
) -> Result<(SegmentRecord, Applied), Refused> {
    use SegmentState::{Done, Failed, Queued, Running};
    let r = rec.ok_or(Refused::Missing)?;
    if let Some(attempt) = step.attempt()
        && attempt != r.attempt
    {
        return Err(Refused::OtherAttempt { current: r.attempt });
    }
    let mut n = r.clone();
    n.updated_at = now.to_owned();
    let applied = match *step {
        Step::Route { capability, .. } => {
            unclaimed(r)?;
            n.state = Queued;
            n.capability = Some(capability.clone());
            Applied::Routed
        }
        Step::Claim {
            node, gpu_class, ..
        } => {
            unfinished(r)?;
            n.state = Running;
            n.owner = Some(node.clone());
            if let Some(class) = gpu_class {
                n.gpu_class = Some(class.clone());
            }
            Applied::Claimed
        }
        Step::Encoded { node, result, .. } => {
            if r.state != Running {
                return Err(finished_or(r, Refused::State(r.state)));
            }
            if r.owner.as_ref() != Some(node) {
                return Err(Refused::NotOwner);
            }
            n.state = Done;
            n.result_key = Some(result.key.clone());
            n.frames = Some(result.frames);
            n.decode_errors = result.decode_errors;
            n.digest = result.digest.clone();
            n.bytes_moved += result.bytes_moved;
            Applied::Recorded
        }
        Step::Failed(ref f) => {
            unfinished(r)?;
            return Ok(failed(n, f, now));
        }
        Step::GiveUp { failure, .. } => {
            unfinished(r)?;
            n.state = Failed;
            n.failure = Some(failure.clone());
            Applied::Failed
        }
        Step::Reissue { seen, .. } => {
            if r.state != seen.state || r.owner.as_ref() != seen.owner {
                return Err(Refused::Changed);
            }
            if matches!(r.state, Done | Failed) {
                return Err(Refused::Finished(r.state));
            }
            return Ok(next(r, now));
        }
        Step::HandBack { .. } => {
            unclaimed(r)?;
            return Ok(next(r, now));
        }
        Step::Release { node, .. } => {
            if r.state != Running {
                return Err(finished_or(r, Refused::State(r.state)));
            }
            if r.owner.as_ref() != Some(node) {
                return Err(Refused::NotOwner);
            }
            return Ok(next(r, now));
        }
        Step::Refuse => {
            if r.state != Done {
                return Err(Refused::State(r.state));
            }
            return Ok(next(r, now));
        }
        Step::Replan { fresh } => {
            if !left_by_a_split(r) {
                return Err(Refused::State(r.state));
            }
            let mut n = fresh.clone();
            n.updated_at = now.to_owned();
            return Ok((n, Applied::Planned));
        }
    };
    Ok((n, applied))
}

impl Step<'_> {
    /// The attempt the step is for (`Refuse` is for whichever attempt is done).
    pub fn attempt(&self) -> Option<u32> {
        match *self {
            Step::Route { attempt, .. }
            | Step::Claim { attempt, .. }
            | Step::Encoded { attempt, .. }
            | Step::Failed(Failing { attempt, .. })
            | Step::GiveUp { attempt, .. }
            | Step::Reissue { attempt, .. }
            | Step::HandBack { attempt }
            | Step::Release { attempt, .. } => Some(attempt),
            Step::Refuse | Step::Replan { .. } => None,
        }
    }
}

/// Whether `r` is as a split leaves it: planned, at its first attempt, never failed; or done
/// at its first attempt with a result the split reused (a retry's).
fn left_by_a_split(r: &SegmentRecord) -> bool {
    let reused = r.state == SegmentState::Done && r.reused_from.is_some();
    (r.state == SegmentState::Planned || reused) && r.attempt == 1 && r.failures.is_empty()
}

/// Records the failure, then decides: the same failure on another CPU node (the input's fault),
/// a full storage, or a spent budget fail the unit for good; anything else re-issues it.
fn failed(mut n: SegmentRecord, f: &Failing, now: &str) -> (SegmentRecord, Applied) {
    let repeated = f.failure.reason == Reason::EncodeFailed
        && f.conclusive
        && !f.on_gpu
        && n.failures
            .iter()
            .any(|p| &p.node != f.node && same_failure(&p.message, &f.failure.message));
    n.failures.push(AttemptFailure {
        attempt: f.attempt,
        node: f.node.clone(),
        message: f.failure.message.clone(),
    });
    let verdict = if repeated {
        Some(Final::InputDamaged)
    } else if f.failure.reason == Reason::StorageFull {
        Some(Final::StorageFull)
    } else if n.failed_nodes().len() as u32 >= f.budget.retry_nodes
        || n.failures.len() as u32 >= f.budget.max_attempts
    {
        Some(Final::Exhausted)
    } else {
        None
    };
    match verdict {
        Some(v) => {
            n.state = SegmentState::Failed;
            n.failure = Some((f.describe)(v, &n));
            (n, Applied::Failed)
        }
        None => next(&n, now),
    }
}

/// The next attempt: owned by nobody, routed nowhere, no result; failures and the GPU class
/// carry over (the budget counts across attempts, and a re-issued accelerator attempt prefers
/// a node of the class that started it).
fn next(r: &SegmentRecord, now: &str) -> (SegmentRecord, Applied) {
    let n = SegmentRecord {
        state: SegmentState::Planned,
        attempt: r.attempt + 1,
        capability: None,
        owner: None,
        result_key: None,
        frames: None,
        decode_errors: 0,
        digest: None,
        reused_from: None,
        updated_at: now.to_owned(),
        ..r.clone()
    };
    let attempt = n.attempt;
    (n, Applied::Reissued(attempt))
}

fn unclaimed(r: &SegmentRecord) -> Result<(), Refused> {
    match r.state {
        SegmentState::Planned | SegmentState::Queued => Ok(()),
        s => Err(finished_or(r, Refused::State(s))),
    }
}

fn unfinished(r: &SegmentRecord) -> Result<(), Refused> {
    match r.state {
        SegmentState::Done | SegmentState::Failed => Err(Refused::Finished(r.state)),
        _ => Ok(()),
    }
}

fn finished_or(r: &SegmentRecord, otherwise: Refused) -> Refused {
    match r.state {
        SegmentState::Done | SegmentState::Failed => Refused::Finished(r.state),
        _ => otherwise,
    }
}

/// What a read of a unit record tells the node that claimed `attempt` with a write at
/// revision `claimed_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// Still this node's running attempt: keep encoding.
    Ours,
    /// This node's attempt is finished (its own result or failure is in): nothing to drop.
    Finished,
    /// The unit moved on (another attempt or owner, or the job is gone): drop the work.
    Moved,
    /// The read is older than this node's own claim: it says nothing, decide nothing.
    Behind,
}

/// Judges `read`, the record and the revision it was read at (`None`: the key was deleted at
/// a revision no older than the claim, as a finished job's cleanup does).
pub fn holding(
    read: Option<(&SegmentRecord, u64)>,
    me: &NodeId,
    attempt: u32,
    claimed_at: u64,
) -> Holding {
    let Some((rec, revision)) = read else {
        return Holding::Moved;
    };
    if revision < claimed_at {
        return Holding::Behind;
    }
    if rec.attempt != attempt || rec.owner.as_ref() != Some(me) {
        return Holding::Moved;
    }
    match rec.state {
        SegmentState::Running => Holding::Ours,
        SegmentState::Done | SegmentState::Failed => Holding::Finished,
        // Unclaimed again at this attempt, at a revision past the claim: rewritten under it.
        SegmentState::Planned | SegmentState::Queued => Holding::Moved,
    }
}

/// What the unit record says about a report that `attempt` stored `result_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The record's current result: count it.
    Count,
    /// Not counted: the unit moved on (superseded attempt, refused result, failed unit).
    Ignore,
    /// The read cannot have been taken after the report was sent (the encoder writes `done`
    /// before it reports): read again later; dropping the report would lose the unit.
    Behind,
}

/// Judges a report of `attempt` with `result_key` against `rec`, the unit record as read.
pub fn judge_report(rec: &SegmentRecord, attempt: u32, result_key: &str) -> Report {
    let unfinished = matches!(
        rec.state,
        SegmentState::Planned | SegmentState::Queued | SegmentState::Running
    );
    if rec.attempt < attempt || (rec.attempt == attempt && unfinished) {
        Report::Behind
    } else if rec.attempt == attempt
        && rec.state == SegmentState::Done
        && rec.result_key.as_deref() == Some(result_key)
    {
        Report::Count
    } else {
        Report::Ignore
    }
}

/// Whether two failure reports say the same thing: the same verdict (the text before ffmpeg's
/// stderr, e.g. `ffmpeg failed (exit code 69)`) and at least one error line in common. Two
/// runs of one failing ffmpeg differ in the addresses of `[h264 @ 0x55d0...]` prefixes, in how
/// many repeats it folds into "Last message repeated", and so in which lines the kept tail of
/// stderr holds.
pub fn same_failure(a: &str, b: &str) -> bool {
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
