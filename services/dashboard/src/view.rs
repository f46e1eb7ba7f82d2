//! The dashboard's picture of the fleet, kept from KV watches (the workers bucket's heartbeats,
//! the jobs bucket's records) and from the events stream (segments done, for throughput),
//! never from reading keys one by one: each change bumps a version that open pages wait on
//! (`changed`). Jobs are kept as small rows, so a bucket of ten thousand finished jobs costs a
//! few megabytes.
//!
//! Heartbeats are followed only while someone looks: a thousand nodes beat a thousand times a
//! second, and following them costs a dashboard nobody has open most of its CPU. The first
//! page after a quiet while waits for the bucket's current values (a few milliseconds), and the
//! watch stops a minute after the last page or live stream went.

use crate::throughput::{self, Bins, Series};
use async_nats::jetstream::kv::{Entry, Operation};
use ffleet_runtime::messages::{self, Heartbeat, JobRecord, JobState, SegmentRecord, SegmentState};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::follow;
use ffleet_runtime::nats::kv;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects;
use ffleet_runtime::{JobId, NodeId, Unit};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A node as its last heartbeat said, and when that was written.
#[derive(Debug, Clone)]
pub struct Node {
    pub beat: Heartbeat,
    pub written: SystemTime,
}

/// A heartbeat as it came, decoded only when a page shows it: a thousand nodes beat a thousand
/// times a second, and nobody may be looking.
#[derive(Debug, Clone)]
struct Beat {
    raw: bytes::Bytes,
    written: SystemTime,
}

/// How a node stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    Draining,
    /// No heartbeat within the TTL: killed, hung or cut off.
    Lost,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Lost => "lost",
        }
    }
}

/// What the pages show of a job (its record, less the plan and request details).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: JobId,
    pub state: JobState,
    pub priority: i32,
    pub profile: String,
    pub input: String,
    pub units_done: usize,
    pub units_total: usize,
    pub frames_done: u64,
    pub frames_total: u64,
    pub reason: Option<String>,
    pub output_bytes: Option<u64>,
    pub speed: Option<f64>,
    pub retried_as: Option<JobId>,
    pub updated_at: String,
    /// Its output is kept in the media bucket (an upload's): the page offers it for download.
    pub output_kept: bool,
}

impl JobRow {
    fn of(rec: &JobRecord) -> JobRow {
        let (frames_done, frames_total) = rec.frame_progress();
        JobRow {
            id: rec.job_id.clone(),
            state: rec.state,
            priority: rec.priority(),
            profile: rec.profile.clone(),
            input: rec.request.input.clone(),
            units_done: rec.collected.len(),
            units_total: rec.plan.as_ref().map_or(0, |p| p.unit_count()),
            frames_done,
            frames_total,
            reason: rec
                .failure
                .as_ref()
                .map(|f| format!("{}: {}", f.reason, f.message)),
            output_bytes: rec.output.as_ref().map(|o| o.bytes),
            speed: rec
                .output
                .as_ref()
                .filter(|o| o.wall_secs > 0.0)
                .map(|o| o.duration_secs / o.wall_secs),
            retried_as: rec.retried_as.clone(),
            updated_at: rec.updated_at.clone(),
            output_kept: rec
                .request
                .output
                .starts_with(ffleet_runtime::storage::OBJECT_SCHEME),
        }
    }
}

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<NodeId, Beat>,
    jobs: HashMap<JobId, JobRow>,
    /// Each job's units as their records say, while heartbeats are followed.
    units: HashMap<JobId, BTreeMap<Unit, Cell>>,
    throughput: Bins,
}

/// A unit as the running jobs' segment maps show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub state: SegmentState,
    pub reused: bool,
    pub node: Option<NodeId>,
    pub attempt: u32,
}

/// Whether heartbeats are followed, and who asks for them.
struct Looking {
    /// When a page last asked (`want`).
    last: Mutex<Instant>,
    /// Live streams open now: while any is, the watch goes on.
    streams: AtomicUsize,
    /// Each watch's number: entries of a watch that was stopped are ignored. Changed only
    /// with `running` held.
    generation: AtomicU64,
    /// Set while a watch runs. Starting and stopping decide under this lock, so a page that
    /// asks as the watch stops either keeps it or starts the next.
    running: Mutex<Option<Run>>,
    /// How long after the last look the watch stops.
    linger: Duration,
}

/// A running watch: what stops it, its number, and whether each first pass is still awaited.
struct Run {
    stop: CancellationToken,
    generation: u64,
    passes: [Arc<AtomicBool>; 2],
}

/// Held by a live stream while it is open.
pub struct Watching(Arc<Looking>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        *self.0.last.lock().expect("looking lock") = Instant::now();
    }
}

/// The shared picture; cheap to clone.
#[derive(Clone)]
pub struct View {
    inner: Arc<Mutex<Inner>>,
    version: Arc<watch::Sender<u64>>,
    ttl: Duration,
    /// Buckets whose watch has not delivered its first pass yet (the first page waits).
    loading: Arc<watch::Sender<usize>>,
    looking: Arc<Looking>,
    /// What starts a heartbeat watch (`None`: a view fed by hand, in tests and benches).
    source: Option<(Ctx, CancellationToken)>,
}

/// Longest a page waits for the heartbeats' first pass.
const FIRST_PASS: Duration = Duration::from_secs(5);

/// A workers watch silent this long is rebuilt (see `kv::follow`).
const HEARTBEAT_QUIET: Duration = Duration::from_secs(30);

/// How long heartbeats are still followed after the last page or live stream went, unless
/// told (`Settings::linger`).
pub const LINGER: Duration = Duration::from_secs(60);

/// A node unheard of this many TTLs is dropped from the page (its key may stay in the bucket
/// until its max age).
const FORGET_NODE_TTLS: u32 = 30;

impl View {
    pub fn new(ttl: Duration) -> View {
        View {
            inner: Arc::default(),
            version: Arc::new(watch::channel(0).0),
            ttl,
            loading: Arc::new(watch::channel(0).0),
            looking: Arc::new(Looking {
                last: Mutex::new(Instant::now()),
                streams: AtomicUsize::new(0),
                generation: AtomicU64::new(0),
                running: Mutex::new(None),
                linger: LINGER,
            }),
            source: None,
        }
    }

    /// Waits until every watch delivered its first pass (what the buckets held when the
    /// dashboard started), for at most `within`.
    pub async fn loaded(&self, within: Duration) {
        let mut rx = self.loading.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|n| *n == 0)).await;
    }

    /// A first pass of `store` to wait for, counted as loading from now until `pass_done`:
    /// none when the bucket holds nothing, or when its size cannot be had (an election), as
    /// an empty bucket's pass never ends.
    async fn first_pass_of(&self, store: &async_nats::jetstream::kv::Store) -> Arc<AtomicBool> {
        let pending = Arc::new(AtomicBool::new(true));
        self.loading.send_modify(|n| *n += 1);
        if !matches!(store.status().await, Ok(s) if s.values() > 0) {
            self.pass_done(&pending);
        }
        pending
    }

    /// Watches the jobs bucket and the segments done into a new view until `shutdown` fires;
    /// heartbeats are followed while pages ask for them (`want`).
    pub async fn watch(
        ctx: &Ctx,
        linger: Duration,
        shutdown: CancellationToken,
    ) -> Result<View, NatsError> {
        let mut view = View::new(ctx.config.fleet.heartbeat_ttl());
        view.source = Some((ctx.clone(), shutdown.clone()));
        Arc::get_mut(&mut view.looking)
            .expect("a new view's own")
            .linger = linger;
        let v = view.clone();
        let pending = view.first_pass_of(ctx.jobs.store()).await;
        kv::follow_current(
            ctx.jobs.store(),
            ctx.jobs.policy(),
            shutdown.clone(),
            "jobs",
            None,
            move |e| {
                v.job_entry(e);
                if e.delta == 0 {
                    v.pass_done(&pending);
                }
            },
        )
        .await?;
        // Throughput is the page's least part: the dashboard serves while its reader opens
        // (and, where the credentials do not allow it, without throughput).
        let (v, c, s) = (view.clone(), ctx.clone(), shutdown.clone());
        tokio::spawn(async move {
            let since = time::OffsetDateTime::now_utc() - throughput::WINDOW;
            let w = v.clone();
            let followed = follow::follow(
                &c.js,
                c.retry,
                subjects::STREAM_EVENTS,
                subjects::segment_done_wildcard(),
                since,
                s,
                move |m| w.segment_done(m),
            )
            .await;
            if let Err(e) = followed {
                tracing::warn!(error = %e, "throughput: the events stream cannot be read");
            }
        });
        view.stop_looking_when_idle(shutdown);
        Ok(view)
    }

    /// Heartbeats are wanted now: follows them if it does not yet, and waits (up to
    /// `FIRST_PASS`) for the bucket's current values.
    pub async fn want(&self) {
        *self.looking.last.lock().expect("looking lock") = Instant::now();
        self.start_following();
        self.loaded(FIRST_PASS).await;
    }

    /// Heartbeats are wanted for as long as the returned guard lives (a live stream).
    pub async fn watching(&self) -> Watching {
        self.looking.streams.fetch_add(1, Ordering::Relaxed);
        let w = Watching(self.looking.clone());
        self.want().await;
        w
    }

    /// Starts the heartbeat and unit-record watches unless they run. They open in a task of
    /// their own: a page that goes away meanwhile leaves them opening, and a page waits for
    /// them only as long as `want` does.
    fn start_following(&self) {
        let Some((ctx, shutdown)) = &self.source else {
            return;
        };
        // Counted as loading before anyone else can see the watch running, so a page asking
        // meanwhile waits for the same first passes.
        let (stop, generation, [beats, units]) = {
            let mut running = self.looking.running.lock().expect("looking lock");
            if running.is_some() {
                return;
            }
            let passes = [
                Arc::new(AtomicBool::new(true)),
                Arc::new(AtomicBool::new(true)),
            ];
            self.loading.send_modify(|n| *n += passes.len());
            let generation = self.looking.generation.fetch_add(1, Ordering::Relaxed) + 1;
            let run = Run {
                stop: shutdown.child_token(),
                generation,
                passes: passes.clone(),
            };
            let stop = run.stop.clone();
            *running = Some(run);
            (stop, generation, passes)
        };
        let (v, ctx) = (self.clone(), ctx.clone());
        tokio::spawn(async move {
            for (store, pending) in [
                (ctx.workers.store(), &beats),
                (ctx.segments.store(), &units),
            ] {
                // As in `first_pass_of`: nothing, or unknown, is not waited for.
                if !matches!(store.status().await, Ok(s) if s.values() > 0) {
                    v.pass_done(pending);
                }
            }
            let followed = v
                .follow_while_looking(
                    ctx.workers.store(),
                    ctx.workers.policy(),
                    "workers",
                    // Heartbeats change every second: a quiet watch is one to rebuild.
                    Some(HEARTBEAT_QUIET),
                    (&stop, generation, &beats),
                    View::node_entry,
                )
                .await;
            let followed = match followed {
                Ok(()) => {
                    v.follow_while_looking(
                        ctx.segments.store(),
                        ctx.segments.policy(),
                        "segments",
                        None,
                        (&stop, generation, &units),
                        View::unit_entry,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match followed {
                Ok(()) => tracing::debug!("following heartbeats and unit records"),
                Err(e) => {
                    // Only at shutdown: opening waits for JetStream as long as it takes.
                    tracing::warn!(error = %e, "following heartbeats and unit records");
                    v.stop_following(generation);
                }
            }
        });
    }

    /// Follows `store` for watch `generation`: `apply` takes its entries while that watch is
    /// the one running, and the end of its first pass clears `pending`.
    async fn follow_while_looking(
        &self,
        store: &async_nats::jetstream::kv::Store,
        policy: ffleet_runtime::nats::retry::Policy,
        what: &'static str,
        idle: Option<Duration>,
        (stop, generation, pending): (&CancellationToken, u64, &Arc<AtomicBool>),
        apply: fn(&View, &Entry, u64),
    ) -> Result<(), NatsError> {
        let (v, p) = (self.clone(), pending.clone());
        kv::follow_current(store, policy, stop.clone(), what, idle, move |e| {
            apply(&v, e, generation);
            if e.delta == 0 {
                v.pass_done(&p);
            }
        })
        .await
    }

    /// Stops watch `generation` if it is the one running (`None`: whichever runs, when nobody
    /// has looked for `linger`), forgetting what it showed.
    fn stop_following(&self, generation: impl Into<Option<u64>>) {
        let generation = generation.into();
        let run = {
            let mut running = self.looking.running.lock().expect("looking lock");
            let due = match generation {
                Some(g) => running.as_ref().is_some_and(|r| r.generation == g),
                None => {
                    self.looking.streams.load(Ordering::Relaxed) == 0
                        && self.looking.last.lock().expect("looking lock").elapsed()
                            > self.looking.linger
                }
            };
            if !due {
                return;
            }
            let Some(run) = running.take() else {
                return;
            };
            self.looking.generation.fetch_add(1, Ordering::Relaxed);
            run
        };
        run.stop.cancel();
        for p in &run.passes {
            self.pass_done(p);
        }
        let mut inner = self.inner.lock().expect("view lock");
        inner.nodes.clear();
        inner.units.clear();
        drop(inner);
        tracing::debug!("nobody looks: heartbeats and unit records no longer followed");
        self.bump();
    }

    /// A watch's first pass is over (or the watch is): the page need not wait for it.
    fn pass_done(&self, pending: &AtomicBool) {
        if pending.swap(false, Ordering::Relaxed) {
            self.loading.send_modify(|n| *n = n.saturating_sub(1));
        }
    }

    /// Stops following heartbeats once nobody has looked for the linger time.
    fn stop_looking_when_idle(&self, shutdown: CancellationToken) {
        let v = self.clone();
        let every = (self.looking.linger / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.cancelled() => return,
                }
                v.stop_following(None);
            }
        });
    }

    fn segment_done(&self, m: &async_nats::jetstream::Message) {
        let Ok(ce) = serde_json::from_slice::<messages::CloudEvent>(&m.payload) else {
            return;
        };
        let Ok(messages::JobEvent::SegmentDone(done)) = messages::JobEvent::from_cloudevent(&ce)
        else {
            return;
        };
        let at = m
            .info()
            .map_or(SystemTime::now(), |i| SystemTime::from(i.published));
        self.record_segment(&done, at);
    }

    /// Counts a segment-done report stored at `at`.
    pub fn record_segment(&self, done: &messages::SegmentDone, at: SystemTime) {
        self.inner
            .lock()
            .expect("view lock")
            .throughput
            .record(done, at, SystemTime::now());
        self.bump();
    }

    /// Throughput over the last `throughput::WINDOW`.
    pub fn throughput(&self, now: SystemTime) -> Series {
        self.inner.lock().expect("view lock").throughput.series(now)
    }

    /// Whether watch `generation` is the one running, asked with the view's lock held: a
    /// stop bumps the number before it clears the view under that lock, so an entry of the
    /// watch it stopped is either cleared with the rest or not applied.
    fn current(&self, generation: u64) -> bool {
        self.looking.generation.load(Ordering::Relaxed) == generation
    }

    fn node_entry(&self, e: &Entry, generation: u64) {
        let Ok(id) = NodeId::new(e.key.as_str()) else {
            return;
        };
        let beat = match e.operation {
            Operation::Put => Some(Beat {
                raw: e.value.clone(),
                written: SystemTime::from(e.created),
            }),
            Operation::Delete | Operation::Purge => None,
        };
        let mut inner = self.inner.lock().expect("view lock");
        if !self.current(generation) {
            return;
        }
        match beat {
            Some(b) => inner.nodes.insert(id, b),
            None => inner.nodes.remove(&id),
        };
        drop(inner);
        self.bump();
    }

    fn unit_entry(&self, e: &Entry, generation: u64) {
        let Some((job, unit)) = e.key.rsplit_once('.') else {
            return;
        };
        let (Ok(job), Ok(unit)) = (JobId::new(job), unit.parse::<Unit>()) else {
            return;
        };
        let cell = match e.operation {
            Operation::Put => messages::decode::<SegmentRecord>("unit record", &e.value)
                .ok()
                .map(|r| Cell {
                    state: r.state,
                    reused: r.reused_from.is_some(),
                    node: r.owner,
                    attempt: r.attempt,
                }),
            Operation::Delete | Operation::Purge => None,
        };
        let mut inner = self.inner.lock().expect("view lock");
        if !self.current(generation) {
            return;
        }
        // Kept for unfinished jobs only: a finished job's map is on its page.
        let finished = inner.jobs.get(&job).is_some_and(|r| r.state.is_terminal());
        match cell {
            Some(c) if !finished => {
                inner.units.entry(job).or_default().insert(unit, c);
            }
            Some(_) => {}
            None => {
                if let Some(units) = inner.units.get_mut(&job) {
                    units.remove(&unit);
                    if units.is_empty() {
                        inner.units.remove(&job);
                    }
                }
            }
        }
        drop(inner);
        self.bump();
    }

    /// Job `job`'s units as their records say (empty while heartbeats are not followed), the
    /// first `at_most`, and how many there are in all.
    pub fn cells(&self, job: &JobId, at_most: usize) -> (Vec<(Unit, Cell)>, usize) {
        let inner = self.inner.lock().expect("view lock");
        let Some(units) = inner.units.get(job) else {
            return (Vec::new(), 0);
        };
        let cells = units
            .iter()
            .take(at_most)
            .map(|(u, c)| (*u, c.clone()))
            .collect();
        (cells, units.len())
    }

    fn job_entry(&self, e: &Entry) {
        let Ok(id) = JobId::new(e.key.as_str()) else {
            return;
        };
        let rec = match e.operation {
            Operation::Put => messages::decode::<JobRecord>("job record", &e.value).ok(),
            Operation::Delete | Operation::Purge => None,
        };
        self.set_job(id, rec.as_ref());
    }

    /// A job's record as it now is (`None`: deleted).
    pub fn set_job(&self, id: JobId, rec: Option<&JobRecord>) {
        let mut inner = self.inner.lock().expect("view lock");
        if rec.is_none_or(|r| r.state.is_terminal()) {
            inner.units.remove(&id);
        }
        match rec {
            Some(r) => inner.jobs.insert(id, JobRow::of(r)),
            None => inner.jobs.remove(&id),
        };
        drop(inner);
        self.bump();
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that sees each change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The nodes now, each with its state, nodes long unheard left out.
    pub fn nodes(&self, now: SystemTime) -> Vec<(Node, NodeState, Duration)> {
        let beats: Vec<(NodeId, Beat)> = {
            let inner = self.inner.lock().expect("view lock");
            inner
                .nodes
                .iter()
                .filter(|(_, b)| {
                    now.duration_since(b.written).unwrap_or_default() < self.ttl * FORGET_NODE_TTLS
                })
                .map(|(k, b)| (k.clone(), b.clone()))
                .collect()
        };
        beats
            .into_iter()
            .filter_map(|(key, b)| {
                let beat = messages::decode::<Heartbeat>("heartbeat", &b.raw).ok()?;
                // A heartbeat under another node's key is not that node's (the page's drain
                // button names the node).
                if beat.node_id != key {
                    return None;
                }
                let n = Node {
                    beat,
                    written: b.written,
                };
                let age = now.duration_since(n.written).unwrap_or_default();
                let state = if age > self.ttl {
                    NodeState::Lost
                } else if n.beat.draining {
                    NodeState::Draining
                } else {
                    NodeState::Ready
                };
                (age < self.ttl * FORGET_NODE_TTLS).then(|| (n.clone(), state, age))
            })
            .collect()
    }

    /// How long until the next node not yet lost turns lost by silence (`None`: none will).
    pub fn next_lost_in(&self, now: SystemTime) -> Option<Duration> {
        let inner = self.inner.lock().expect("view lock");
        inner
            .nodes
            .values()
            .filter_map(|b| (b.written + self.ttl).duration_since(now).ok())
            .min()
    }

    /// Every job row (unordered).
    pub fn jobs(&self) -> Vec<JobRow> {
        self.inner
            .lock()
            .expect("view lock")
            .jobs
            .values()
            .cloned()
            .collect()
    }

    pub fn job(&self, id: &JobId) -> Option<JobRow> {
        self.inner.lock().expect("view lock").jobs.get(id).cloned()
    }
}
