//! Removing what a finished job leaves in the record buckets. A job's unit records (up to five
//! revisions each, in `ffleet-segments`) and its job record's older revisions serve while it
//! runs and shortly after (`ffleet transcode`'s summary, reports still in flight). Kept for the
//! buckets' 7-day max age, they filled the unit-record bucket's message cap
//! (`streams.max_msgs`, 1,000,000) after about 250,000 segments, a few hours of a busy fleet,
//! and from then on every new job's records were refused. So the leader purges them
//! `scheduler.keep_finished_records_secs` after the job ends: one purge by subject per bucket,
//! replicated once per job rather than once per unit. A job that ended while no scheduler
//! watched (or before this one started watching) keeps its records until their max age.

use crate::jobs_view::JobsView;
use crate::ports::Records;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often due jobs are looked for, at most and at least.
const MIN_EVERY: Duration = Duration::from_millis(250);
const MAX_EVERY: Duration = Duration::from_secs(10);

/// Purges finished jobs' records when they are due, until `term` fires.
pub async fn run(records: impl Records, jobs: JobsView, term: CancellationToken) {
    let every = (jobs.keep() / 4).clamp(MIN_EVERY, MAX_EVERY);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = term.cancelled() => return,
        }
        for job in jobs.take_due() {
            // Left to the bucket's max age when it fails: a purge is tidying, never a reason to
            // stop, or to hold up a leader handing over.
            let purged = tokio::select! {
                r = records.purge_finished(&job) => r,
                _ = term.cancelled() => return,
            };
            match purged {
                Ok(()) => tracing::debug!(job = %job, "finished job's records purged"),
                Err(e) => {
                    tracing::warn!(job = %job, error = %e, "finished job's records not purged; they age out");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{self, Mem};
    use ffleet_runtime::Unit;
    use ffleet_runtime::messages::JobState;
    use tokio::time::sleep;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn a_finished_jobs_records_go_after_the_keep_time_and_no_others() {
        let mem = Mem::default();
        let done = mem::encoding_job(&mem, "done", 3);
        let running = mem::encoding_job(&mem, "running", 2);
        let before = mem::encoding_job(&mem, "ended-before", 2);
        let jobs = JobsView::new(S(60));
        jobs.record(done.job_id.clone(), Some(done.clone()));
        jobs.record(running.job_id.clone(), Some(running.clone()));
        // Seen only finished: it ended before this view watched.
        let mut ended = before.clone();
        ended.state = JobState::Completed;
        jobs.record(before.job_id.clone(), Some(ended));

        let term = CancellationToken::new();
        let task = tokio::spawn(run(mem.clone(), jobs.clone(), term.clone()));
        sleep(S(5)).await;
        let mut finished = done.clone();
        finished.state = JobState::Completed;
        jobs.record(done.job_id.clone(), Some(finished.clone()));
        // A second sight of the finished record (a redelivered watch entry) changes nothing.
        jobs.record(done.job_id.clone(), Some(finished));

        sleep(S(55)).await;
        assert!(mem.with(|s| s.purged.is_empty()), "kept for its keep time");
        assert!(mem.with(
            |s| s.units.contains_key(&ffleet_runtime::subjects::segment_key(
                &done.job_id,
                Unit::Video(0)
            ))
        ));
        sleep(S(20)).await;
        assert_eq!(mem.with(|s| s.purged.clone()), vec![done.job_id.clone()]);
        let left: Vec<String> = mem.with(|s| s.units.keys().cloned().collect());
        assert!(
            left.iter().all(|k| !k.starts_with("done.")),
            "every unit of the finished job went: {left:?}"
        );
        assert_eq!(
            left.len(),
            4,
            "the running job's and the earlier job's stay: {left:?}"
        );

        sleep(S(600)).await;
        assert_eq!(mem.with(|s| s.purged.len()), 1, "each finished job once");
        term.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_never_leads_forgets_finished_jobs() {
        let jobs = JobsView::new(S(1));
        let mem = Mem::default();
        for i in 0..3 {
            let rec = mem::encoding_job(&mem, &format!("j{i}"), 1);
            jobs.record(rec.job_id.clone(), Some(rec.clone()));
            let mut fin = rec.clone();
            fin.state = JobState::Failed;
            jobs.record(rec.job_id.clone(), Some(fin));
            sleep(S(400)).await;
        }
        // Each sighting forgets what finished more than the keep time and ten minutes ago: the
        // first job went when the third finished, 800 s after it.
        let due: Vec<String> = jobs.take_due().iter().map(|j| j.to_string()).collect();
        assert_eq!(due, ["j1", "j2"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_jobs_records_stay_as_long_as_its_kept_results() {
        let mem = Mem::default();
        let jobs = JobsView::new(S(60)).keeping_failed(S(3600));
        let (failed, done) = (
            mem::encoding_job(&mem, "failed", 2),
            mem::encoding_job(&mem, "done", 2),
        );
        let early = mem::encoding_job(&mem, "failed-early", 2);
        for (rec, end, collected) in [
            (&failed, JobState::Failed, true),
            (&done, JobState::Completed, true),
            (&early, JobState::Failed, false),
        ] {
            jobs.record(rec.job_id.clone(), Some(rec.clone()));
            let mut ended = rec.clone();
            ended.state = end;
            if collected {
                ended.collected.insert(Unit::Video(0));
            }
            jobs.record(rec.job_id.clone(), Some(ended));
        }
        sleep(S(61)).await;
        // A failed job with nothing collected has nothing to reuse: it goes at the usual time.
        let mut due = jobs.take_due();
        due.sort();
        assert_eq!(due, vec![done.job_id.clone(), early.job_id.clone()]);
        sleep(S(3000)).await;
        assert!(
            jobs.take_due().is_empty(),
            "a retry may still reuse its results"
        );
        sleep(S(600)).await;
        assert_eq!(jobs.take_due(), vec![failed.job_id.clone()]);
    }
}
