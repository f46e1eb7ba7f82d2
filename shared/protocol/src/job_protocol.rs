//! The job state machine in one place, beside the unit protocol. Every change to a job record
//! after its creation (`JobRecord`) is a `JobStep` applied by `apply`: a pure function of the
//! record read, the step and the time, which the services call inside their revision-checked KV
//! update (`Typed::modify`), so the decision and the write it leads to see the same revision.
//!
//! ```text
//!   splitting ──Plan──► encoding ──Collect (the set complete)──► merging ──Finalize──► finalizing
//!   merging, finalizing ──Complete──► completed
//!                          ▲  │ Collect (more to come)             │
//!                          │  └──────┘                             │
//!                          └──────────────── Uncollect ────────────┘
//!   splitting, encoding, merging ──Fail──► failed
//!   splitting, encoding, merging ──Cancel──► cancelled   (never from finalizing)
//!   any unfinished state ──Prioritize──► (the same state, another priority)
//!   failed, cancelled ──retry──► (the same state, `retried_as` set once; the retry is a new job)
//! ```
//!
//! The promises, property-tested in `props`: the collected units are units of the plan, and the
//! frames collected are exactly their planned frames' sum; a terminal state is final; a job
//! enters `merging` only from `encoding` with every unit collected, and exactly one `Collect`
//! is told to merge for each such entry (a repeated report changes nothing).

use crate::ids::{JobId, Unit};
use crate::messages::records::{OutputInfo, SourceInfo};
use crate::messages::{JobRecord, JobState, Plan};
use crate::reason::Failure;

#[cfg(test)]
mod props;

/// What the caller wants done.
#[derive(Debug, Clone, Copy)]
pub enum JobStep<'a> {
    /// The splitter planned the job: its source and cut are known, its units' records written.
    Plan {
        source: &'a SourceInfo,
        plan: &'a Plan,
        /// Bytes the split moved through the object store.
        media_bytes: u64,
    },
    /// The merger counts units whose results it accepted: each with its planned frames.
    Collect { units: &'a [(Unit, u64)] },
    /// The merger refused stored results of units at merge: they are encoded again, so they
    /// leave the set (each with the planned frames it was counted with).
    Uncollect { units: &'a [(Unit, u64)] },
    /// The merged output is verified and about to go into place: from here the job completes
    /// (or fails), and a cancel is refused.
    Finalize,
    /// The merged output is verified and stored.
    Complete { output: &'a OutputInfo },
    /// The job fails for good.
    Fail { failure: &'a Failure },
    /// Someone asked for the job to stop (`ffleet cancel`). It races the merge's `Complete`
    /// on the record's revision: exactly one of them wins.
    Cancel,
    /// An operator changed the job's priority (`ffleet priority`): it applies to the units the
    /// scheduler has not released yet.
    Prioritize { priority: i32 },
}

/// What an accepted step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobApplied {
    Planned,
    /// Each unit's outcome, in the step's order; `changed` is false when every unit was
    /// already collected (nothing to write).
    Collected {
        outcomes: Vec<Collected>,
        changed: bool,
    },
    Uncollected,
    Finalizing,
    Completed,
    Failed,
    /// Cancelled; the state it was cancelled in.
    Cancelled {
        during: JobState,
    },
    Prioritized,
}

/// One collected unit's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// This unit completed the set: the job is merging, and its caller merges.
    Merge,
    /// Counted (or counted before); the job's progress after it.
    Progress {
        done: usize,
        total: usize,
        frames_done: u64,
        frames_total: u64,
    },
    /// Not a unit of the plan: ignored (a report for another cut of the job, or forged).
    Foreign,
}

/// Why a step was refused (the record is left as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRefused {
    /// No record: the job is gone, or the read is older than its creation.
    Missing,
    /// The job already ended.
    Terminal(JobState),
    /// The step does not apply in this state.
    State(JobState),
    /// The job has no plan yet.
    NoPlan,
}

impl JobRefused {
    /// Whether a refused `Collect` came from a read older than the report it counts: a unit's
    /// report exists only once its job is encoding, so a record read as missing, still
    /// splitting or without its plan is behind, not a reason to drop the report.
    pub fn behind(&self) -> bool {
        matches!(
            self,
            JobRefused::Missing | JobRefused::NoPlan | JobRefused::State(JobState::Splitting)
        )
    }
}

/// Applies `step` to `rec`, stamped `now`: the new record and what happened, or why not.
pub fn apply(
    rec: Option<&JobRecord>,
    step: &JobStep,
    now: &str,
) -> Result<(JobRecord, JobApplied), JobRefused> {
    let r = rec.ok_or(JobRefused::Missing)?;
    if r.state.is_terminal() {
        return Err(JobRefused::Terminal(r.state));
    }
    let mut n = r.clone();
    n.updated_at = now.to_owned();
    let applied = match *step {
        JobStep::Plan {
            source,
            plan,
            media_bytes,
        } => {
            in_state(r, JobState::Splitting)?;
            n.state = JobState::Encoding;
            n.source = Some(source.clone());
            n.plan = Some(plan.clone());
            n.media_bytes += media_bytes;
            JobApplied::Planned
        }
        JobStep::Collect { units } => {
            let plan = r.plan.as_ref().ok_or(JobRefused::NoPlan)?;
            in_state(r, JobState::Encoding)?;
            let (outcomes, changed) = collect(&mut n, plan, units);
            if !changed {
                // Nothing to write: the record read stays as it was.
                n.updated_at.clone_from(&r.updated_at);
            }
            JobApplied::Collected { outcomes, changed }
        }
        JobStep::Uncollect { units } => {
            in_state(r, JobState::Merging)?;
            for &(unit, frames) in units {
                if n.collected.remove(unit) {
                    n.frames_collected = n.frames_collected.saturating_sub(frames);
                }
            }
            n.state = JobState::Encoding;
            JobApplied::Uncollected
        }
        JobStep::Finalize => {
            in_state(r, JobState::Merging)?;
            n.state = JobState::Finalizing;
            JobApplied::Finalizing
        }
        JobStep::Complete { output } => {
            if r.state != JobState::Finalizing {
                in_state(r, JobState::Merging)?;
            }
            n.state = JobState::Completed;
            n.output = Some(output.clone());
            JobApplied::Completed
        }
        JobStep::Fail { failure } => {
            n.state = JobState::Failed;
            n.failure = Some(failure.clone());
            JobApplied::Failed
        }
        JobStep::Cancel => {
            if r.state == JobState::Finalizing {
                return Err(JobRefused::State(r.state));
            }
            n.state = JobState::Cancelled;
            n.cancelled_during = Some(r.state);
            JobApplied::Cancelled { during: r.state }
        }
        JobStep::Prioritize { priority } => {
            n.priority = Some(priority);
            JobApplied::Prioritized
        }
    };
    Ok((n, applied))
}

/// Why a job could not be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryRefused {
    /// No record.
    Missing,
    /// Only a failed or cancelled job runs again; this one is in that state.
    NotEnded(JobState),
    /// It was retried already, as that job: whoever asks again is answered with it.
    Retried(JobId),
}

/// Marks `rec`, a failed or cancelled job, as retried by job `retry`. A job is retried once
/// (the retry is retried in turn), so two retries never merge the same kept results, and a
/// retry asked twice is answered with the same job. `stale` is a retry the record names whose
/// id turned out to be another job's (taken before the retry's request arrived): it is
/// replaced.
pub fn retry(
    rec: Option<&JobRecord>,
    retry: &JobId,
    stale: Option<&JobId>,
    now: &str,
) -> Result<JobRecord, RetryRefused> {
    let r = rec.ok_or(RetryRefused::Missing)?;
    if !matches!(r.state, JobState::Failed | JobState::Cancelled) {
        return Err(RetryRefused::NotEnded(r.state));
    }
    if let Some(done) = &r.retried_as
        && Some(done) != stale
    {
        return Err(RetryRefused::Retried(done.clone()));
    }
    let mut n = r.clone();
    n.retried_as = Some(retry.clone());
    n.updated_at = now.to_owned();
    Ok(n)
}

fn in_state(r: &JobRecord, want: JobState) -> Result<(), JobRefused> {
    if r.state == want {
        Ok(())
    } else {
        Err(JobRefused::State(r.state))
    }
}

/// Counts `units` into `n`: each one's outcome, and whether anything changed. The unit that
/// completes the set moves the job to merging and is the one told to merge; a unit reported
/// after that (in the same step) only sees the progress.
fn collect(n: &mut JobRecord, plan: &Plan, units: &[(Unit, u64)]) -> (Vec<Collected>, bool) {
    let total = plan.unit_count();
    let mut changed = false;
    let mut outcomes = Vec::with_capacity(units.len());
    for &(unit, frames) in units {
        if !plan.contains(unit) {
            outcomes.push(Collected::Foreign);
            continue;
        }
        // A repeated report (the unit is collected only from its done attempt, which does not
        // change until the unit is re-issued and uncollected) changes nothing.
        if n.collected.insert(unit) {
            n.frames_collected += frames;
            changed = true;
            if n.collected.len() == total {
                n.state = JobState::Merging;
                outcomes.push(Collected::Merge);
                continue;
            }
        }
        let (frames_done, frames_total) = n.frame_progress();
        outcomes.push(Collected::Progress {
            done: n.collected.len(),
            total,
            frames_done,
            frames_total,
        });
    }
    (outcomes, changed)
}
