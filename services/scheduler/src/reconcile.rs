//! The slow path: every `reconcile_interval`, each unfinished job is compared with its unit
//! records, the live pool and the queues, and whatever fell through the cracks is repaired:
//! units owned by a node that is gone (it died before its heartbeat named them, or while no
//! scheduler was running), units a live owner no longer holds, units whose task message was
//! lost, a failed unit whose report never ended the job, a done unit whose report never got
//! into the job record (its report is sent again), and jobs past their deadline.

use crate::ages::Ages;
use crate::backlog::HeldKeys;
use crate::jobs_view::JobsView;
use crate::pool::Pool;
use crate::reissue::reissue;
use ffleet_runtime::config::SchedulerConfig;
use ffleet_runtime::messages::events::{SegmentDone, SegmentOutcome};
use ffleet_runtime::messages::{
    CURRENT, JobEvent, JobRecord, JobState, SegmentRecord, SegmentState,
};
use ffleet_runtime::nats::publish;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::age_secs;
use ffleet_runtime::unit_protocol::Seen;
use ffleet_runtime::{Capability, JobId, Unit, jobs, subjects};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub async fn run(ctx: Ctx, pool: Pool, jobs: JobsView, held: HeldKeys, term: CancellationToken) {
    let every = Duration::from_secs_f64(ctx.config.scheduler.reconcile_interval_secs);
    let mut ages = Ages::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = term.cancelled() => return,
        }
        let mut round = Round {
            ctx: &ctx,
            pool: &pool,
            held: &held,
            queues: Queues::default(),
            ages: &mut ages,
        };
        for job in jobs.active() {
            if term.is_cancelled() {
                return;
            }
            reconcile(&mut round, &job).await;
        }
        ages.end_round();
    }
}

/// What one reconcile round works with.
struct Round<'a> {
    ctx: &'a Ctx,
    pool: &'a Pool,
    held: &'a HeldKeys,
    queues: Queues,
    ages: &'a mut Ages,
}

async fn reconcile(round: &mut Round<'_>, job: &JobRecord) {
    let (ctx, pool, held) = (round.ctx, round.pool, round.held);
    let cfg = &ctx.config.scheduler;
    if overdue(ctx, job).await || job.state != JobState::Encoding {
        return;
    }
    let Some(plan) = &job.plan else { return };
    for unit in plan.units() {
        if job.collected.contains(unit) {
            continue;
        }
        let key = subjects::segment_key(&job.job_id, unit);
        // Waiting in this leader's backlog: its task is neither lost nor out on a node.
        if held.lock().expect("held keys").contains(&key) {
            continue;
        }
        let (rec, revision) = match ctx.segments.get(&key).await {
            Ok(Some(read)) => read,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "reconcile read failed");
                return;
            }
        };
        let age = round.ages.age(&key, revision, Instant::now());
        let stale = |secs: f64| age.as_secs_f64() > secs;
        let queues = &mut round.queues;
        let repair = match rec.state {
            SegmentState::Running => running_repair(cfg, pool, &job.job_id, unit, &rec, age),
            SegmentState::Planned | SegmentState::Queued => {
                let lost = stale(cfg.lost_task_secs) && queues.empty(ctx, &rec).await;
                lost.then_some("task message lost")
            }
            SegmentState::Failed => {
                if let Some(f) = &rec.failure
                    && let Err(e) = jobs::fail(ctx, &job.job_id, f).await
                {
                    tracing::warn!(job = %job.job_id, error = %e, "failing a job failed");
                }
                return;
            }
            SegmentState::Done => {
                if stale(cfg.lost_task_secs) && queues.merger_idle(ctx).await {
                    report_again(ctx, job, unit, &rec).await;
                }
                continue;
            }
        };
        let Some(why) = repair else { continue };
        let seen = Seen {
            state: rec.state,
            owner: rec.owner.as_ref(),
        };
        match reissue(ctx, job, unit, rec.attempt, seen).await {
            Ok(Some(attempt)) => {
                tracing::warn!(job = %job.job_id, unit = %unit, attempt, why, "unit re-issued by reconciler")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %job.job_id, unit = %unit, error = %e, "re-issue failed")
            }
        }
    }
}

/// Fails a job past its deadline; whether it was.
async fn overdue(ctx: &Ctx, job: &JobRecord) -> bool {
    let deadline = ctx.config.scheduler.job_deadline_secs;
    let age = age_secs(&job.accepted_at).unwrap_or(0.0);
    if age <= deadline {
        return false;
    }
    let f = Failure::new(
        Reason::DeadlineExceeded,
        format!(
            "job {} was still {:?} {:.0} s after it was accepted (deadline {} s)",
            job.job_id, job.state, age, deadline
        ),
    );
    if let Err(e) = jobs::fail(ctx, &job.job_id, &f).await {
        tracing::warn!(job = %job.job_id, error = %e, "failing an overdue job failed");
    }
    true
}

/// Why a running unit, unchanged for `age`, needs a new attempt, if it does.
fn running_repair(
    cfg: &SchedulerConfig,
    pool: &Pool,
    job: &JobId,
    unit: Unit,
    rec: &SegmentRecord,
    age: Duration,
) -> Option<&'static str> {
    let stale = |secs: f64| age.as_secs_f64() > secs;
    let owner = rec.owner.as_ref();
    let orphaned =
        pool.settled() && stale(cfg.heartbeat_ttl_secs) && owner.is_some_and(|o| !pool.is_live(o));
    // The owner lives but let the task go without recording an outcome (a step decided on a
    // read older than its claim, a handed-back task nobody took): its heartbeats, sent long
    // after the claim, no longer name the unit. A late result of that attempt is fenced off by
    // the re-issue.
    let dropped = stale(cfg.lost_task_secs)
        && owner.and_then(|o| pool.holds(o, job, unit, rec.attempt)) == Some(false);
    if orphaned {
        Some("owner is gone")
    } else {
        dropped.then_some("owner no longer holds it")
    }
}

/// Sends a done unit's report again, under an id of its own: the original id may still be in
/// the stream's duplicate window. The merger checks it against the unit record like any report,
/// so a repeated one costs a read and changes nothing.
async fn report_again(ctx: &Ctx, job: &JobRecord, unit: Unit, rec: &SegmentRecord) {
    let (Some(result_key), Some(node)) = (rec.result_key.clone(), rec.owner.clone()) else {
        return;
    };
    let ev = JobEvent::SegmentDone(SegmentDone {
        version: CURRENT,
        job_id: job.job_id.clone(),
        unit,
        attempt: rec.attempt,
        node,
        outcome: SegmentOutcome::Encoded {
            result_key,
            frames: rec.frames.unwrap_or(0),
            encode_secs: 0.0,
        },
    });
    let id = format!("{}.again.{}", ev.message_id(), uuid::Uuid::new_v4());
    match publish::event_as(&ctx.js, ctx.service, &ev, id).await {
        Ok(_) => {
            tracing::warn!(job = %job.job_id, unit = %unit, attempt = rec.attempt, "done unit never collected, report sent again")
        }
        Err(e) => {
            tracing::warn!(job = %job.job_id, unit = %unit, error = %e, "sending a report again failed")
        }
    }
}

/// Whether a queue holds any message, asked once per queue per round.
#[derive(Default)]
struct Queues {
    empty: HashMap<String, bool>,
    merger_idle: Option<bool>,
}

impl Queues {
    /// Whether the merger has no report waiting or in hand: a done unit still uncollected then
    /// lost its report, rather than waiting behind others.
    async fn merger_idle(&mut self, ctx: &Ctx) -> bool {
        if let Some(idle) = self.merger_idle {
            return idle;
        }
        let idle = match ctx.js.get_stream(subjects::STREAM_EVENTS).await {
            Ok(s) => match s.consumer_info(subjects::CONSUMER_MERGER).await {
                Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
                Err(_) => false,
            },
            Err(_) => false,
        };
        self.merger_idle = Some(idle);
        idle
    }

    async fn empty(&mut self, ctx: &Ctx, rec: &SegmentRecord) -> bool {
        let consumers = match (&rec.state, &rec.capability) {
            (SegmentState::Queued, cap) => {
                let cap = cap.clone().unwrap_or_else(Capability::cpu);
                vec![
                    subjects::encode_consumer(&cap),
                    subjects::retry_consumer(&cap),
                ]
            }
            _ => vec![subjects::CONSUMER_SCHEDULER.to_owned()],
        };
        for c in consumers {
            if !self.consumer_empty(ctx, c).await {
                return false;
            }
        }
        true
    }

    async fn consumer_empty(&mut self, ctx: &Ctx, consumer: String) -> bool {
        if let Some(e) = self.empty.get(&consumer) {
            return *e;
        }
        let empty = match ctx.js.get_stream(subjects::STREAM_TASKS).await {
            Ok(s) => match s.consumer_info(&consumer).await {
                Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
                // No consumer yet: nobody could have taken the message, so it is not lost.
                Err(_) => false,
            },
            Err(_) => false,
        };
        self.empty.insert(consumer, empty);
        empty
    }
}
