//! The slow path: every `reconcile_interval`, each unfinished job is compared with its unit
//! records, the live pool and the queues, and whatever fell through the cracks is repaired:
//! units owned by a node that is gone (it died before its heartbeat named them, or while no
//! scheduler was running), units a live owner no longer holds, units whose task message was
//! lost, a failed unit whose report never ended the job, a done unit whose report never got
//! into the job record (its report is sent again), and jobs past their deadline.

use crate::ages::Ages;
use crate::backlog::HeldKeys;
use crate::config::SchedulerConfig;
use crate::jobs_view::JobsView;
use crate::pool::Pool;
use crate::ports::{Jobs, Outbox, Queues, Units};
use crate::reissue::reissue;
use ffleet_runtime::messages::events::{SegmentDone, SegmentOutcome};
use ffleet_runtime::messages::{
    CURRENT, JobEvent, JobRecord, JobState, SegmentRecord, SegmentState,
};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::time::age_secs;
use ffleet_runtime::unit_protocol::Seen;
use ffleet_runtime::{Capability, JobId, Unit, subjects};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the reconciler reads and writes.
pub trait Ports: Units + Jobs + Outbox + Queues {}
impl<T: Units + Jobs + Outbox + Queues> Ports for T {}

pub async fn run(
    ports: impl Ports,
    cfg: SchedulerConfig,
    pool: Pool,
    jobs: JobsView,
    held: HeldKeys,
    term: CancellationToken,
) {
    let every = Duration::from_secs_f64(cfg.reconcile_interval_secs);
    let mut ages = Ages::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = term.cancelled() => return,
        }
        let mut round = Round {
            ports: &ports,
            cfg: &cfg,
            pool: &pool,
            held: &held,
            queues: IdleQueues::default(),
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
struct Round<'a, P> {
    ports: &'a P,
    cfg: &'a SchedulerConfig,
    pool: &'a Pool,
    held: &'a HeldKeys,
    queues: IdleQueues,
    ages: &'a mut Ages,
}

async fn reconcile<P: Ports>(round: &mut Round<'_, P>, job: &JobRecord) {
    let (ports, cfg, pool, held) = (round.ports, round.cfg, round.pool, round.held);
    if overdue(ports, cfg, job).await || job.state != JobState::Encoding {
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
        let (rec, revision) = match ports.unit(&key).await {
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
                let lost = stale(cfg.lost_task_secs) && queues.empty(ports, &rec).await;
                lost.then_some("task message lost")
            }
            SegmentState::Failed => {
                if let Some(f) = &rec.failure
                    && let Err(e) = ports.fail(&job.job_id, f).await
                {
                    tracing::warn!(job = %job.job_id, error = %e, "failing a job failed");
                }
                return;
            }
            SegmentState::Done => {
                if stale(cfg.lost_task_secs) && queues.merger_idle(ports).await {
                    report_again(ports, job, unit, &rec).await;
                }
                continue;
            }
        };
        let Some(why) = repair else { continue };
        let seen = Seen {
            state: rec.state,
            owner: rec.owner.as_ref(),
        };
        match reissue(ports, job, unit, rec.attempt, seen).await {
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
async fn overdue(ports: &impl Jobs, cfg: &SchedulerConfig, job: &JobRecord) -> bool {
    let deadline = cfg.job_deadline_secs;
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
    if let Err(e) = ports.fail(&job.job_id, &f).await {
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
    let orphaned = pool.settled() && age > pool.ttl() && owner.is_some_and(|o| !pool.is_live(o));
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
async fn report_again(ports: &impl Outbox, job: &JobRecord, unit: Unit, rec: &SegmentRecord) {
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
    match ports.event(&ev, id).await {
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
struct IdleQueues {
    empty: HashMap<String, bool>,
    merger_idle: Option<bool>,
}

impl IdleQueues {
    /// Whether the merger has no report waiting or in hand: a done unit still uncollected then
    /// lost its report, rather than waiting behind others.
    async fn merger_idle(&mut self, ports: &impl Queues) -> bool {
        if let Some(idle) = self.merger_idle {
            return idle;
        }
        let idle = ports
            .idle(subjects::STREAM_EVENTS, subjects::CONSUMER_MERGER)
            .await;
        self.merger_idle = Some(idle);
        idle
    }

    async fn empty(&mut self, ports: &impl Queues, rec: &SegmentRecord) -> bool {
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
            if !self.consumer_empty(ports, c).await {
                return false;
            }
        }
        true
    }

    async fn consumer_empty(&mut self, ports: &impl Queues, consumer: String) -> bool {
        if let Some(e) = self.empty.get(&consumer) {
            return *e;
        }
        // No consumer yet reads as not idle: nobody could have taken the message, so it is not
        // lost.
        let empty = ports.idle(subjects::STREAM_TASKS, &consumer).await;
        self.empty.insert(consumer, empty);
        empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{self, Mem};
    use ffleet_runtime::NodeId;
    use ffleet_runtime::messages::JobEvent;
    use ffleet_runtime::unit_protocol::Step;
    use tokio::time::sleep;

    const S: fn(u64) -> Duration = Duration::from_secs;
    /// Keeps the test's checks between two rounds, never at the instant of one.
    const HALF: Duration = Duration::from_millis(500);

    fn cfg() -> SchedulerConfig {
        SchedulerConfig {
            reconcile_interval_secs: 1.0,
            lost_task_secs: 10.0,
            ..SchedulerConfig::default()
        }
    }

    /// Runs the reconciler over `mem`'s active jobs until the returned token fires.
    fn start(mem: &Mem, pool: &Pool) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let jobs = JobsView::default();
        for j in mem.with(|s| s.jobs.values().cloned().collect::<Vec<_>>()) {
            jobs.record(j.job_id.clone(), Some(j));
        }
        let term = CancellationToken::new();
        let task = tokio::spawn(run(
            mem.clone(),
            cfg(),
            pool.clone(),
            jobs,
            HeldKeys::default(),
            term.clone(),
        ));
        (term, task)
    }

    async fn claim(mem: &Mem, job: &JobId, unit: Unit, node: &str) {
        let key = subjects::segment_key(job, unit);
        let (cpu, node) = (Capability::cpu(), NodeId::new(node).unwrap());
        let route = Step::Route {
            attempt: 1,
            capability: &cpu,
        };
        mem.step(&key, &route).await.unwrap().unwrap();
        if node.as_str() != "-" {
            let claim = Step::Claim {
                attempt: 1,
                node: &node,
                gpu_class: None,
            };
            mem.step(&key, &claim).await.unwrap().unwrap();
        }
    }

    fn attempt(mem: &Mem, job: &JobId, unit: Unit) -> u32 {
        mem.unit_of(job, unit).attempt
    }

    #[tokio::test(start_paused = true)]
    async fn a_unit_whose_owner_is_gone_is_reissued_once_its_record_aged_a_ttl() {
        let mem = Mem::default();
        let job = mem::encoding_job(&mem, "j1", 2).job_id;
        claim(&mem, &job, Unit::Video(0), "gone").await;
        let pool = Pool::new(S(3));
        let (term, task) = start(&mem, &pool);
        // A leader that just took over repairs nothing for a whole TTL of its own.
        sleep(S(3) + HALF).await;
        assert_eq!(attempt(&mem, &job, Unit::Video(0)), 1);
        // Rounds run every second from 1 s, and a record's age starts at its first reading.
        sleep(S(2)).await;
        assert_eq!(attempt(&mem, &job, Unit::Video(0)), 2);
        assert_eq!(
            attempt(&mem, &job, Unit::Video(1)),
            1,
            "a planned unit waits longer"
        );
        assert_eq!(mem.with(|s| s.planned.len()), 1);
        term.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_owner_that_no_longer_holds_its_unit_loses_it_after_the_lost_task_time() {
        let mem = Mem::default();
        let job = mem::encoding_job(&mem, "j1", 1).job_id;
        claim(&mem, &job, Unit::Video(0), "a").await;
        let pool = Pool::new(S(3));
        let a = NodeId::new("a").unwrap();
        // `a` beats every second, holding nothing.
        let beats = {
            let pool = pool.clone();
            tokio::spawn(async move {
                for rev in 1.. {
                    let hb = mem::heartbeat("a", &[]);
                    pool.observe(a.clone(), Some(hb), rev, time::OffsetDateTime::now_utc());
                    sleep(S(1)).await;
                }
            })
        };
        let (term, task) = start(&mem, &pool);
        sleep(S(9) + HALF).await;
        assert_eq!(
            attempt(&mem, &job, Unit::Video(0)),
            1,
            "not before lost_task_secs"
        );
        sleep(S(3)).await;
        assert_eq!(attempt(&mem, &job, Unit::Video(0)), 2);
        term.cancel();
        task.await.unwrap();
        beats.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_unit_is_reissued_only_when_its_queues_hold_nothing() {
        let mem = Mem::default();
        let job = mem::encoding_job(&mem, "j1", 3).job_id;
        claim(&mem, &job, Unit::Video(0), "-").await;
        claim(&mem, &job, Unit::Video(1), "-").await;
        let cpu = Capability::cpu();
        let (tasks, encode, retry, plan) = (
            subjects::STREAM_TASKS,
            subjects::encode_consumer(&cpu),
            subjects::retry_consumer(&cpu),
            subjects::CONSUMER_SCHEDULER,
        );
        // Queued units wait on the capability's queue and its retry queue; planned ones (unit
        // 2) on the plan queue. Each in turn holds messages, or is not there yet.
        mem.all_idle();
        mem.queue(tasks, &encode, false);
        mem.queue(tasks, plan, false);
        let pool = Pool::new(S(3));
        let (term, task) = start(&mem, &pool);
        sleep(S(30)).await;
        mem.with(|s| s.queues.remove(&(tasks.to_owned(), plan.to_owned())));
        mem.queue(tasks, &encode, true);
        mem.queue(tasks, &retry, false);
        sleep(S(30)).await;
        for u in 0..3 {
            assert_eq!(attempt(&mem, &job, Unit::Video(u)), 1, "unit {u}");
        }
        mem.all_idle();
        sleep(S(1) + HALF).await;
        for u in 0..3 {
            assert_eq!(attempt(&mem, &job, Unit::Video(u)), 2, "unit {u}");
        }
        term.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_unit_fails_its_job_and_an_overdue_job_fails_by_its_deadline() {
        let mem = Mem::default();
        let job = mem::encoding_job(&mem, "j1", 2).job_id;
        let mut rec = mem.unit_of(&job, Unit::Video(1));
        rec.state = SegmentState::Failed;
        rec.failure = Some(Failure::new(
            Reason::InputDamaged,
            "unit 1 cannot be decoded",
        ));
        mem.put_unit(&job, Unit::Video(1), rec);
        let old = mem::encoding_job(&mem, "j2", 1);
        let mut old_rec = old.clone();
        old_rec.accepted_at = "2020-01-01T00:00:00Z".into();
        mem.with(|s| s.jobs.insert(old.job_id.clone(), old_rec));
        let pool = Pool::new(S(3));
        let (term, task) = start(&mem, &pool);
        // Several rounds see the failed unit: still one `failed` per job.
        sleep(S(5) + HALF).await;
        let failed: Vec<_> = mem.with(|s| {
            s.events
                .iter()
                .filter_map(|(e, _)| match e {
                    JobEvent::Failed(f) => Some((f.job_id.clone(), f.reason)),
                    _ => None,
                })
                .collect()
        });
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(failed.contains(&(Some(job.clone()), Reason::InputDamaged)));
        assert!(failed.contains(&(Some(old.job_id.clone()), Reason::DeadlineExceeded)));
        term.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_done_unit_never_collected_is_reported_again_only_while_the_merger_is_idle() {
        let mem = Mem::default();
        let job = mem::encoding_job(&mem, "j1", 1).job_id;
        let mut rec = mem.unit_of(&job, Unit::Video(0));
        rec.state = SegmentState::Done;
        rec.owner = Some(NodeId::new("a").unwrap());
        rec.result_key = Some("jobs/j1/enc/v00000.a1.nut".into());
        rec.frames = Some(25);
        mem.put_unit(&job, Unit::Video(0), rec);
        mem.all_idle();
        mem.queue(subjects::STREAM_EVENTS, subjects::CONSUMER_MERGER, false);
        let pool = Pool::new(S(3));
        let (term, task) = start(&mem, &pool);
        sleep(S(20)).await;
        assert!(
            mem.with(|s| s.events.is_empty()),
            "the merger may have it in hand"
        );
        mem.all_idle();
        sleep(S(1) + HALF).await;
        let reports = mem.with(|s| s.events.clone());
        assert!(!reports.is_empty());
        let (ev, id) = &reports[0];
        assert!(
            matches!(ev, JobEvent::SegmentDone(d) if d.unit == Unit::Video(0) && d.attempt == 1)
        );
        assert_ne!(
            id,
            &ev.message_id(),
            "a fresh id, past the duplicate window"
        );
        term.cancel();
        task.await.unwrap();
    }
}
