//! The leader's backlog: every planned task waits here, its plan-queue message held un-acked
//! (kept alive with in-progress acks), until the pool has room for it. Each round the tasks are
//! ordered (priority, then re-issued attempts, then job arrival, audio first, then largest estimated work) and released
//! into `ffleet.tasks.encode.<capability>` only up to each capability's free slots plus
//! `release_buffer`: priorities take effect at release time, no encoder digs through a deep
//! queue, and a node that joins gets work on the next round.
//!
//! Nothing here outlives leadership: when it ends, every held message is nak'ed so the next
//! leader receives the whole backlog at once (after a crash, JetStream redelivers it after
//! AckWait). A task whose allowed capabilities have no live node for `capability_wait_secs`
//! fails its job with `no_capable_node`.

use crate::config::SchedulerConfig;
use crate::handler::{Released, release};
use crate::jobs_view::JobsView;
use crate::pool::Pool;
use crate::room::{Depths, Room};
use crate::round::{self, Entry, Release, Round, Settings};
use async_nats::jetstream::{AckKind, Message};
use ffleet_runtime::messages::{self, Task};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::ack::{self, Outcome};
use ffleet_runtime::nats::durable::Durable;
use ffleet_runtime::nats::ops::{self, Op};
use ffleet_runtime::nats::provision::{ConsumerSpec, ensure_consumer};
use ffleet_runtime::nats::pull::{Answer, Puller};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{JobId, jobs, subjects, telemetry};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long a failed pull waits before the next.
const ROUND: Duration = Duration::from_millis(10);
/// How long one pull for new plan messages waits: a plan message ends it at once, and while
/// tasks are held so does any change of a node's room (its heartbeat: a unit taken or let go, a
/// node joining or leaving), so this is only the longest gap between rounds when nothing
/// happens (a queue's depth, which no heartbeat reports, is read again then).
const IDLE: Duration = Duration::from_millis(250);
/// Longest an answer to one pull is waited for past its expiry.
const PULL_LIMIT: Duration = Duration::from_secs(3);
/// Plan messages taken per pull.
const BATCH: usize = 256;
/// Held plan messages, at most (the consumer's max ack pending): the rest wait in the stream.
pub const MAX_HELD: i64 = 10_000;

struct Held {
    entry: Entry,
    msg: Message,
}

impl AsRef<Entry> for Held {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

impl AsMut<Entry> for Held {
    fn as_mut(&mut self) -> &mut Entry {
        &mut self.entry
    }
}

/// The segment keys whose plan message the leader's backlog holds, shared with the reconciler:
/// a held unit's task is neither lost nor running, so the reconciler need not read its record,
/// and a pass costs reads in proportion to the work out in the pool, not to the backlog.
pub type HeldKeys = Arc<Mutex<HashSet<String>>>;

pub async fn run(
    ctx: Ctx,
    settings: SchedulerConfig,
    pool: Pool,
    jobs: JobsView,
    keys: HeldKeys,
    term: CancellationToken,
) -> Result<(), NatsError> {
    let spec = ConsumerSpec {
        stream: subjects::STREAM_TASKS,
        durable: subjects::CONSUMER_SCHEDULER,
        filter: subjects::TASKS_PLAN.into(),
        ack_wait: ctx.config.streams.ack_wait(),
        max_deliver: -1,
        max_ack_pending: MAX_HELD,
    };
    // Creating it waits for JetStream as long as it takes; leadership may end meanwhile.
    let consumer = tokio::select! {
        c = ensure_consumer(&ctx.js, ctx.retry, spec) => c?,
        _ = term.cancelled() => return Ok(()),
    };
    let mut b = Backlog {
        ctx,
        settings,
        pool,
        jobs,
        held: HashMap::new(),
        keys,
        job_seq: HashMap::new(),
        next_seq: 0,
        stream: None,
        depths: Depths::default(),
        last_walk: Instant::now(),
    };
    let keep_every = b.ctx.config.streams.ack_wait() / 3;
    let mut kept = Instant::now();
    let mut pulls = Pulls::new(consumer.clone());
    while !term.is_cancelled() {
        b.wait(&mut pulls, &consumer, &term).await;
        b.round().await;
        if kept.elapsed() >= keep_every {
            b.keep_alive().await;
            kept = Instant::now();
        }
    }
    // A plan message the last pull brings is held too, so that it is handed back with the
    // rest instead of waiting out its AckWait.
    if let Some(Answer::Message(msg)) = pulls.finish().await {
        b.admit(*msg).await;
    }
    b.give_back().await;
    Ok(())
}

/// The backlog's one pull request in flight, kept across rounds: a round woken by a change of
/// room leaves it waiting, so the server holds one request at a time however often rounds run.
struct Pulls {
    idle: Option<Puller>,
    inflight: Option<InFlight>,
}

/// A pull request on its way, owning its puller until it is answered.
type InFlight = std::pin::Pin<Box<dyn Future<Output = (Puller, Answer)> + Send>>;

impl Pulls {
    fn new(consumer: Durable) -> Pulls {
        Pulls {
            idle: Some(Puller::new(consumer)),
            inflight: None,
        }
    }

    /// The answer to the pull in flight, sending one first if none is.
    async fn next(&mut self) -> Answer {
        let inflight = self.inflight.get_or_insert_with(|| {
            let mut puller = self
                .idle
                .take()
                .expect("a puller when no pull is in flight");
            ops::count(Op::Fetch);
            Box::pin(async move {
                let answer = puller.pull(Some(IDLE), IDLE + PULL_LIMIT).await;
                (puller, answer)
            })
        });
        let (puller, answer) = inflight.await;
        self.inflight = None;
        self.idle = Some(puller);
        answer
    }

    /// What the pull in flight, if any, brings before it expires.
    async fn finish(&mut self) -> Option<Answer> {
        self.inflight.as_ref()?;
        tokio::time::timeout(IDLE + PULL_LIMIT, self.next())
            .await
            .ok()
    }
}

struct Backlog {
    ctx: Ctx,
    settings: SchedulerConfig,
    pool: Pool,
    /// Which jobs have ended: their tasks are dropped, not released.
    jobs: JobsView,
    /// By segment key: one entry per unit, its newest attempt.
    held: HashMap<String, Held>,
    /// The keys of `held`, for the reconciler.
    keys: HeldKeys,
    /// Order of first arrival per job: FIFO among jobs of equal priority.
    job_seq: HashMap<JobId, u64>,
    next_seq: u64,
    /// The tasks stream, for its queues' depths (fetched once, again after a failure).
    stream: Option<async_nats::jetstream::stream::Stream>,
    /// The queues' depths between reads.
    depths: Depths,
    /// When the backlog was last ordered and walked.
    last_walk: Instant,
}

impl Backlog {
    /// Waits for the first plan message, or with tasks held for room to change (up to `IDLE`),
    /// then takes whatever else is waiting without waiting for more: a round starts as soon as
    /// there is something to release or room to release it into. The first pull goes through
    /// the loop's one subscription (`Puller`) and stays in flight when room changes first.
    async fn wait(&mut self, pulls: &mut Pulls, consumer: &Durable, term: &CancellationToken) {
        let pool = self.pool.clone();
        let holding = !self.held.is_empty();
        // At the consumer's max ack pending the server refuses every pull at once: wait for
        // room to open instead of asking in a tight loop.
        if self.held.len() as i64 >= MAX_HELD {
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = pool.room_changed() => {}
                _ = term.cancelled() => {}
            }
            return;
        }
        let answer = tokio::select! {
            a = pulls.next() => a,
            _ = pool.room_changed(), if holding => return,
            _ = term.cancelled() => return,
        };
        match answer {
            Answer::Message(msg) => {
                consumer.answered();
                self.admit(*msg).await;
                self.take(consumer, BATCH, term).await;
            }
            Answer::Empty => consumer.answered(),
            Answer::Refused(e) => {
                tracing::debug!(error = %e, "plan pull refused");
                consumer.failed(&e).await;
                tokio::time::sleep(ROUND).await;
            }
            Answer::Unanswered => consumer.failed(&"plan pull unanswered").await,
        }
    }

    /// One no-wait pull of up to `max` messages: those waiting now.
    async fn take(&mut self, consumer: &Durable, max: usize, term: &CancellationToken) {
        ops::count(Op::Fetch);
        let batch = consumer
            .consumer()
            .fetch()
            .max_messages(max)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "plan queue fetch failed");
                consumer.failed(&e).await;
                tokio::time::sleep(ROUND).await;
                return;
            }
        };
        loop {
            // Bounded: a no-wait request lost to a server restart is never answered, and an
            // unbounded wait here stopped the leader's rounds for good (plans pending, none
            // released; cluster test, once).
            let m = tokio::select! {
                m = tokio::time::timeout(PULL_LIMIT, batch.next()) => m,
                _ = term.cancelled() => return,
            };
            let Ok(m) = m else {
                tracing::warn!("plan fetch unanswered; pulling again");
                consumer.failed(&"plan fetch unanswered").await;
                return;
            };
            match m {
                Some(Ok(msg)) => {
                    consumer.answered();
                    self.admit(msg).await
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "plan fetch ended");
                    consumer.failed(&e).await;
                    return;
                }
                None => {
                    consumer.answered();
                    return;
                }
            }
        }
    }

    async fn admit(&mut self, msg: Message) {
        let task: Task = match messages::decode("task", &msg.payload) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "undecodable task dropped");
                let why = format!("undecodable task: {e}");
                ack::finish(&msg, Outcome::permanent(Reason::Internal, why)).await;
                return;
            }
        };
        let key = subjects::segment_key(&task.job_id, task.unit);
        if let Some(old) = self.held.get(&key)
            && old.entry.task.attempt > task.attempt
        {
            ack::finish(&msg, Outcome::Done).await;
            return;
        }
        let next = &mut self.next_seq;
        self.job_seq.entry(task.job_id.clone()).or_insert_with(|| {
            *next += 1;
            *next
        });
        // A redelivery of a held message replaces the entry (same stream sequence: nothing to
        // ack); a newer attempt's message retires the older one's.
        let seq = |m: &Message| m.info().ok().map(|i| i.stream_sequence);
        let new_seq = seq(&msg);
        let held = Held {
            entry: Entry::new(task),
            msg,
        };
        self.keys.lock().expect("held keys").insert(key.clone());
        if let Some(old) = self.held.insert(key, held)
            && seq(&old.msg) != new_seq
        {
            ack::finish(&old.msg, Outcome::Done).await;
        }
    }

    /// Releases what the pool has room for, in priority order (`round::plan`).
    async fn round(&mut self) {
        self.drop_ended().await;
        if self.held.is_empty() {
            return;
        }
        self.refresh_priorities();
        let cfg = &self.settings;
        if self.stream.is_none() {
            ops::count(Op::Api);
            self.stream = self.ctx.js.get_stream(subjects::STREAM_TASKS).await.ok();
        }
        let mut view = Room::new(
            self.stream.as_ref(),
            self.pool.live(),
            cfg.release_buffer,
            &mut self.depths,
        )
        .await;
        // Nothing can go out: order and walk the backlog only now and then, for the tasks
        // waiting on a capability no live node offers.
        if !view.any_room() && self.last_walk.elapsed() < IDLE {
            return;
        }
        self.last_walk = Instant::now();
        let config = &self.ctx.config;
        let settings = Settings {
            profile: &|name| config.profile(name),
            spill_queue_depth: cfg.spill_queue_depth,
            capability_wait: Duration::from_secs_f64(cfg.capability_wait_secs),
        };
        let Round { releases, failed } = round::plan(
            &mut self.held,
            &self.job_seq,
            &mut view,
            &settings,
            Instant::now(),
        );
        for (cap, n) in view.releases() {
            self.depths.released(cap, n);
        }
        self.release_all(releases).await;
        for (job, f) in failed {
            self.fail_job(&job, &f).await;
        }
    }

    /// Releases the round's decisions concurrently (at most `PARALLEL` at once) and retires
    /// the plan messages of those that went out or are no longer wanted.
    async fn release_all(&mut self, releases: Vec<Release>) {
        const PARALLEL: usize = 64;
        let ctx = &self.ctx;
        let held = &self.held;
        let done: Vec<Option<(String, Released)>> = futures::stream::iter(releases)
            .map(|r| async move {
                let h = held.get(&r.key)?;
                // The route span continues the job's trace; the encode task carries it on.
                let span = telemetry::spans::consume(ctx.service, &h.msg);
                let done = release(ctx, &h.entry.task, &r.cap, r.slots, &r.classes)
                    .instrument(span)
                    .await;
                Some((r.key, done))
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        for (key, r) in done.into_iter().flatten() {
            if r == Released::Retry {
                continue;
            }
            if let Some(h) = self.held.remove(&key) {
                self.keys.lock().expect("held keys").remove(&key);
                ack::finish(&h.msg, Outcome::Done).await;
            }
        }
    }

    /// Takes each held task's priority from its job's record as last seen: an operator's
    /// change (`ffleet priority`) applies to what is still held here.
    fn refresh_priorities(&mut self) {
        for h in self.held.values_mut() {
            let t = &mut h.entry.task;
            if let Some(p) = self.jobs.priority(&t.job_id) {
                t.priority = p;
            }
        }
    }

    /// Drops the held tasks of jobs that have ended (cancelled, failed): nothing of them is
    /// released any more.
    async fn drop_ended(&mut self) {
        let jobs = &self.jobs;
        let ended: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| jobs.has_ended(&h.entry.task.job_id))
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            if let Some(h) = self.held.remove(&k) {
                tracing::debug!(job = %h.entry.task.job_id, unit = %h.entry.task.unit, "task of an ended job dropped");
                self.keys.lock().expect("held keys").remove(&k);
                ack::finish(&h.msg, Outcome::Done).await;
            }
        }
    }

    /// Fails a job whose tasks cannot run, and drops all of its held tasks.
    async fn fail_job(&mut self, job: &JobId, f: &Failure) {
        tracing::warn!(job = %job, reason = %f.reason, message = %f.message, "job cannot be placed");
        if let Err(e) = jobs::fail(&self.ctx, job, f).await {
            tracing::warn!(job = %job, error = %e, "failing an unplaceable job failed; will retry");
            return;
        }
        let keys: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.entry.task.job_id == *job)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(h) = self.held.remove(&k) {
                self.keys.lock().expect("held keys").remove(&k);
                ack::finish(&h.msg, Outcome::Done).await;
            }
        }
        self.job_seq.remove(job);
    }

    async fn keep_alive(&mut self) {
        for h in self.held.values() {
            ops::count(Op::Progress);
            if let Err(e) = h.msg.ack_with(AckKind::Progress).await {
                tracing::debug!(error = %e, "in-progress ack of a held task failed");
            }
        }
        // Forget the arrival order of jobs with nothing left here.
        let held = &self.held;
        self.job_seq
            .retain(|j, _| held.values().any(|h| h.entry.task.job_id == *j));
    }

    /// Leadership ended: hand every held task back for the next leader at once.
    async fn give_back(&mut self) {
        let n = self.held.len();
        self.keys.lock().expect("held keys").clear();
        for (_, h) in self.held.drain() {
            let outcome = Outcome::retry_after("scheduler leadership ended", Duration::ZERO);
            ack::finish(&h.msg, outcome).await;
        }
        if n > 0 {
            tracing::info!(tasks = n, "backlog handed back");
        }
    }
}
