//! The scheduler's view of unfinished jobs, kept from a watch on the jobs bucket, so the
//! reconciler walks only live work instead of listing every job ever run; of the jobs seen to
//! finish, for the leader to purge what they leave in the record buckets (`purge`); and of the
//! ended jobs whose records are still there, so that no unit of one is routed or left running
//! (`drops`).

use ffleet_runtime::JobId;
use ffleet_runtime::messages::{self, JobRecord, JobState};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::kv::{self, Typed};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A job seen to finish is forgotten this long after it is due for purging, if no leader took
/// it (a replica that never leads, a leader whose purges keep failing): its records then age
/// out with the bucket's max age.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// How recent a cancel must be for a leader to announce it to every service.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(30);
/// How long a job that ended is remembered as ended (`has_ended`).
const ENDED_FOR: Duration = Duration::from_secs(3600);

#[derive(Clone, Default)]
pub struct JobsView {
    active: Arc<Mutex<HashMap<JobId, JobRecord>>>,
    /// Jobs seen to go from unfinished to finished, oldest first, with when.
    finished: Arc<Mutex<VecDeque<(JobId, Instant)>>>,
    /// Jobs whose record says they ended, with when this view saw it, for `ENDED_FOR`: long
    /// enough for whatever of theirs is still queued or running to be dropped.
    ended: Arc<Mutex<HashMap<JobId, Instant>>>,
    /// Jobs seen to be cancelled, with when, not yet announced to the nodes. Every replica
    /// keeps it; only a leader takes from it, and only what is recent (`take_unannounced`).
    unannounced: Arc<Mutex<VecDeque<(JobId, Instant)>>>,
    /// Fired when a job is seen to end.
    ending: Arc<Notify>,
    /// How long a finished job's records are kept (`scheduler.keep_finished_records_secs`).
    keep: Duration,
    /// Failed jobs seen to finish, oldest first, with when and how many units: their unit
    /// records are what `ffleet retry` reuses results by, so they are kept as long as those
    /// results (`storage.keep_failed_results_secs`, or `keep` if longer), up to
    /// `MAX_KEPT_FAILED_UNITS` in all.
    failed: Arc<Mutex<Failed>>,
    keep_failed: Duration,
}

/// The failed jobs whose records are kept for retries.
#[derive(Default)]
struct Failed {
    jobs: VecDeque<(JobId, Instant, usize)>,
    units: usize,
}

/// Unit records of failed jobs kept past `keep` for retries, in all: a burst of failures (a
/// broken profile, an output root gone) must not fill the unit-record bucket
/// (`streams.max_msgs`, each record up to five revisions), where every new job would then be
/// refused. Past it, the oldest failed jobs' records go at the usual time.
const MAX_KEPT_FAILED_UNITS: usize = 100_000;

impl JobsView {
    /// An empty view that keeps finished jobs' records for `keep`.
    pub fn new(keep: Duration) -> JobsView {
        JobsView {
            keep,
            keep_failed: keep,
            ..JobsView::default()
        }
    }

    /// The same view keeping failed jobs' records for `keep_failed` (at least `keep`).
    pub fn keeping_failed(self, keep_failed: Duration) -> JobsView {
        JobsView {
            keep_failed: keep_failed.max(self.keep),
            ..self
        }
    }

    pub async fn watch(
        jobs: Typed<JobRecord>,
        keep: Duration,
        keep_failed: Duration,
        shutdown: CancellationToken,
    ) -> Result<JobsView, NatsError> {
        let view = JobsView::new(keep).keeping_failed(keep_failed);
        let v = view.clone();
        let policy = jobs.policy();
        // Every job's current record first: a job that runs on, unchanged, while this
        // scheduler starts (a replica taking over, a restart) is live work all the same.
        kv::follow_current(jobs.store(), policy, shutdown, "jobs", None, move |e| {
            v.apply(e)
        })
        .await?;
        Ok(view)
    }

    fn apply(&self, e: &async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Ok(id) = JobId::new(e.key.as_str()) else {
            return;
        };
        let rec = match e.operation {
            Operation::Put => messages::decode::<JobRecord>("job record", &e.value).ok(),
            Operation::Delete | Operation::Purge => None,
        };
        self.record(id, rec);
    }

    /// The job's record as it now is (`None`: deleted or unreadable). A job seen unfinished
    /// that now is finished joins the jobs whose records are purged; one that finished before
    /// this view saw it unfinished does not (the watch's first pass over every job ever run).
    pub fn record(&self, id: JobId, rec: Option<JobRecord>) {
        let mut map = self.active.lock().expect("jobs lock");
        match rec {
            Some(r) if !r.state.is_terminal() => {
                // An id used again after its old record expired names a new job.
                self.ended.lock().expect("ended lock").remove(&id);
                map.insert(id, r);
            }
            Some(r) => {
                // Completed jobs leave nothing to drop.
                if r.state != JobState::Completed {
                    self.mark_ended(&id);
                }
                if map.remove(&id).is_some() {
                    if r.state == JobState::Cancelled {
                        let mut u = self.unannounced.lock().expect("unannounced lock");
                        // A replica that does not lead keeps only the recent ones.
                        let now = Instant::now();
                        while u
                            .front()
                            .is_some_and(|(_, at)| now.duration_since(*at) > ANNOUNCE_WITHIN)
                        {
                            u.pop_front();
                        }
                        u.push_back((id.clone(), now));
                        drop(u);
                        self.ending.notify_one();
                    }
                    drop(map);
                    let now = Instant::now();
                    // Kept for a retry only when the job has encoded units to reuse: one that
                    // failed before any was collected (at its split, say) has nothing to keep.
                    if r.state == JobState::Failed && !r.collected.is_empty() {
                        let units = r.plan.as_ref().map_or(1, |p| p.unit_count().max(1));
                        let mut failed = self.failed.lock().expect("failed lock");
                        // A replica that never leads forgets them as it does finished jobs.
                        while let Some(&(_, at, n)) = failed.jobs.front()
                            && now.duration_since(at) > self.keep_failed + FORGET_AFTER
                        {
                            failed.units -= n;
                            failed.jobs.pop_front();
                        }
                        failed.units += units;
                        failed.jobs.push_back((id, now, units));
                        return;
                    }
                    let (queue, keep) = (&self.finished, self.keep);
                    let mut finished = queue.lock().expect("finished lock");
                    while finished
                        .front()
                        .is_some_and(|(_, at)| now.duration_since(*at) > keep + FORGET_AFTER)
                    {
                        finished.pop_front();
                    }
                    finished.push_back((id, now));
                }
            }
            None => {
                map.remove(&id);
                self.ended.lock().expect("ended lock").remove(&id);
            }
        }
    }

    /// The priority of unfinished job `job` as its record last said (`None`: not seen).
    pub fn priority(&self, job: &JobId) -> Option<i32> {
        self.active
            .lock()
            .expect("jobs lock")
            .get(job)
            .map(JobRecord::priority)
    }

    /// Remembers `job` as ended (forgetting those that ended more than `ENDED_FOR` ago).
    fn mark_ended(&self, job: &JobId) {
        let mut ended = self.ended.lock().expect("ended lock");
        if ended.len() % 1024 == 1023 {
            let now = Instant::now();
            ended.retain(|_, at| now.duration_since(*at) < ENDED_FOR);
        }
        if ended.insert(job.clone(), Instant::now()).is_none() {
            self.ending.notify_one();
        }
    }

    /// Whether `job`'s record, as last seen, says it ended (within `ENDED_FOR`).
    pub fn has_ended(&self, job: &JobId) -> bool {
        self.ended
            .lock()
            .expect("ended lock")
            .get(job)
            .is_some_and(|at| at.elapsed() < ENDED_FOR)
    }

    /// Jobs seen to be cancelled within `ANNOUNCE_WITHIN` and not taken yet: each handed out
    /// once. A leader taking over long after a cancel does not announce it again.
    pub fn take_unannounced(&self) -> Vec<JobId> {
        let now = Instant::now();
        std::mem::take(&mut *self.unannounced.lock().expect("unannounced lock"))
            .into_iter()
            .filter(|(_, at)| now.duration_since(*at) <= ANNOUNCE_WITHIN)
            .map(|(id, _)| id)
            .collect()
    }

    /// Returns once a job was seen to end since the last call returned (at once if one did
    /// meanwhile). One waiter: the leader's drops.
    pub async fn job_ended(&self) {
        self.ending.notified().await
    }

    /// The finished jobs whose records are due for purging (finished `keep` ago or more),
    /// taken from the view: each is handed out once.
    pub fn take_due(&self) -> Vec<JobId> {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut finished = self.finished.lock().expect("finished lock");
        while let Some((_, at)) = finished.front() {
            if now.duration_since(*at) < self.keep {
                break;
            }
            due.extend(finished.pop_front().map(|(id, _)| id));
        }
        drop(finished);
        let mut failed = self.failed.lock().expect("failed lock");
        while let Some(&(_, at, units)) = failed.jobs.front() {
            let age = now.duration_since(at);
            let over = failed.units > MAX_KEPT_FAILED_UNITS;
            if age < self.keep || (age < self.keep_failed && !over) {
                break;
            }
            failed.units -= units;
            due.extend(failed.jobs.pop_front().map(|(id, _, _)| id));
        }
        due
    }

    /// How long a finished job's records are kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Unfinished jobs as last seen.
    pub fn active(&self) -> Vec<JobRecord> {
        self.active
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, job: &JobId) -> Option<JobRecord> {
        self.active.lock().expect("jobs lock").get(job).cloned()
    }
}
