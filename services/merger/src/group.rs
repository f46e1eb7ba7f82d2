//! Group commit of collects into a job record. Reports of one job that arrive while a write of
//! its record is in flight wait for that write, then go in together in the next one: under load
//! a job's record is read and written once for several units instead of once per unit, and so
//! is every watcher's delivery of it.
//!
//! The first report of a job with no write in flight becomes the job's writer: it writes what
//! is waiting, batch after batch, until nothing is, and hands every report its outcome. Each
//! write is the same revision-checked update as before, so the write that marks the last unit
//! (and moves the job to `merging`) is still exactly one, and exactly one report of it is told
//! to merge.

use ffleet_runtime::job_protocol::JobRefused;
use ffleet_runtime::job_protocol::{self, Collected, JobApplied, JobStep};
use ffleet_runtime::messages::{JobRecord, JobState};
use ffleet_runtime::nats::kv::{Change, KvError};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::{JobId, Unit};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// What collecting one report did.
#[derive(Debug, Clone, PartialEq)]
pub enum Collect {
    /// Counted; `done` of `total` units are in.
    Progress {
        done: usize,
        total: usize,
        frames_done: u64,
        frames_total: u64,
    },
    /// Counted, and it was the last one: this caller merges. `at`: the revision of the job
    /// record's write that moved it to `merging`.
    Merge { at: u64 },
    /// Not counted (superseded attempt, job gone or already ended).
    Ignored,
    /// Not counted: the job was cancelled, and the result this report names is left over (its
    /// encode finished before its node heard of the cancel).
    Cancelled,
    /// The unit or job record read is older than the report: the encoder writes `done` before
    /// it reports (and only an encoding job has reports), so this read came from a replica or
    /// leader that has not caught up (seen after a JetStream node restart). Dropping the report
    /// here would lose the unit for good.
    Behind,
}

/// The outcome of one report, shared by a batch's reports when its write failed.
pub type Outcome = Result<Collect, Arc<KvError>>;

/// A report waiting for its job's next write.
struct Waiting {
    unit: Unit,
    frames: u64,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct State {
    waiting: HashMap<JobId, Vec<Waiting>>,
    writing: HashSet<JobId>,
}

/// The merger's collects in flight, per job.
#[derive(Default, Clone)]
pub struct Collects(Arc<Mutex<State>>);

impl Collects {
    /// Counts `unit` (its planned `frames`) into `job`'s record, with whatever else of that
    /// job is waiting.
    pub async fn collect(&self, ctx: &Ctx, job: &JobId, unit: Unit, frames: u64) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        let writer = {
            let mut s = self.0.lock().expect("collects lock");
            s.waiting.entry(job.clone()).or_default().push(Waiting {
                unit,
                frames,
                reply,
            });
            s.writing.insert(job.clone())
        };
        if writer {
            let mut writing = Writing {
                collects: self,
                job,
                finished: false,
            };
            loop {
                let Some(batch) = self.next_batch(job) else {
                    // `next_batch` gave the role up: a new writer may hold it already.
                    writing.finished = true;
                    break;
                };
                let units: Vec<(Unit, u64)> = batch.iter().map(|w| (w.unit, w.frames)).collect();
                match write(ctx, job, &units).await {
                    Ok(outcomes) => {
                        for (w, o) in batch.into_iter().zip(outcomes) {
                            let _ = w.reply.send(Ok(o));
                        }
                    }
                    Err(e) => {
                        let e = Arc::new(e);
                        for w in batch {
                            let _ = w.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        // A writer that stopped without answering (it panicked) dropped the reply: the report
        // is handled again.
        outcome.await.unwrap_or_else(|_| {
            Err(Arc::new(KvError::Contended {
                what: "job record",
                key: job.to_string(),
                tries: 0,
            }))
        })
    }

    /// What is waiting for `job`'s next write; `None`, and this caller is no longer the
    /// writer, when nothing is.
    fn next_batch(&self, job: &JobId) -> Option<Vec<Waiting>> {
        let mut s = self.0.lock().expect("collects lock");
        match s.waiting.remove(job) {
            Some(batch) if !batch.is_empty() => Some(batch),
            _ => {
                s.writing.remove(job);
                None
            }
        }
    }
}

/// The writer's role, given up however the writer stops: a writer that stops while reports
/// still wait (it panicked) answers them with an error (each report handled again) instead of
/// leaving them to wait for a writer that is gone.
struct Writing<'a> {
    collects: &'a Collects,
    job: &'a JobId,
    /// Stopped because nothing waited: `next_batch` gave the role up, and a new writer may
    /// hold it already.
    finished: bool,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut s = self.collects.0.lock().expect("collects lock");
        s.writing.remove(self.job);
        s.waiting.remove(self.job);
    }
}

/// One revision-checked write of `job`'s record counting `units`; each unit's outcome, in order.
/// The unit that completes the set learns the revision of the write that moved the job to
/// `merging`, so the merge never acts on a read of the record older than that.
async fn write(ctx: &Ctx, job: &JobId, units: &[(Unit, u64)]) -> Result<Vec<Collect>, KvError> {
    let (mut outcomes, written) = ctx
        .jobs
        .modify_known(job.as_str(), None, |rec| count(rec, units, &now_rfc3339()))
        .await?;
    if let Some((_, revision)) = written {
        for o in &mut outcomes {
            if let Collect::Merge { at } = o {
                *at = revision;
            }
        }
    }
    Ok(outcomes)
}

/// `rec` with `units` counted (`job_protocol`'s `Collect`): the record to write (if anything
/// changed) and each unit's outcome. The unit that completes the set is the one told to merge.
fn count(
    rec: Option<&JobRecord>,
    units: &[(Unit, u64)],
    now: &str,
) -> Change<JobRecord, Vec<Collect>> {
    match job_protocol::apply(rec, &JobStep::Collect { units }, now) {
        Ok((next, JobApplied::Collected { outcomes, changed })) => {
            let outcomes = outcomes.into_iter().map(outcome).collect();
            if changed {
                Change::Write(next, outcomes)
            } else {
                Change::Keep(outcomes)
            }
        }
        // A report exists only once its job is encoding: a record read older than that (none
        // at all, still splitting) is behind the report, not a reason to drop it.
        Err(why) if why.behind() => Change::Keep(vec![Collect::Behind; units.len()]),
        Err(JobRefused::Terminal(JobState::Cancelled)) => {
            Change::Keep(vec![Collect::Cancelled; units.len()])
        }
        _ => Change::Keep(vec![Collect::Ignored; units.len()]),
    }
}

fn outcome(c: Collected) -> Collect {
    match c {
        Collected::Merge => Collect::Merge { at: 0 },
        Collected::Progress {
            done,
            total,
            frames_done,
            frames_total,
        } => Collect::Progress {
            done,
            total,
            frames_done,
            frames_total,
        },
        Collected::Foreign => Collect::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::messages::records::Container;
    use ffleet_runtime::messages::{JobRequest, JobState, Plan};

    fn encoding_job(segments: u32) -> JobRecord {
        let request: JobRequest = serde_json::from_value(serde_json::json!({
            "version": 1,
            "job_id": "j",
            "input": "file:///in.mp4",
            "output": "file:///out.mp4",
        }))
        .expect("request");
        let mut rec = JobRecord::new(request, "h264".into());
        rec.state = JobState::Encoding;
        rec.plan = Some(Plan {
            segments,
            audio: false,
            tracks: Vec::new(),
            warnings: Vec::new(),
            container: Container::Mp4,
            source_path: String::new(),
            output_path: String::new(),
            source_key: None,
            source_digest: None,
            output_key: None,
            sized_for_slots: 0,
            reuses: Vec::new(),
        });
        rec
    }

    fn progress(done: usize) -> Collect {
        Collect::Progress {
            done,
            total: 3,
            frames_done: 0,
            frames_total: 0,
        }
    }

    #[test]
    fn the_unit_that_completes_the_set_merges_and_repeats_change_nothing() {
        let mut rec = encoding_job(3);
        let Change::Write(after, outcomes) =
            count(Some(&rec), &[(Unit::Video(0), 0), (Unit::Video(0), 0)], "t")
        else {
            panic!("a new unit was not written");
        };
        assert_eq!(outcomes, vec![progress(1), progress(1)]);
        rec = after;
        let Change::Keep(outcomes) = count(Some(&rec), &[(Unit::Video(0), 0)], "t") else {
            panic!("a repeated report was written");
        };
        assert_eq!(outcomes, vec![progress(1)]);
        let Change::Write(after, outcomes) = count(
            Some(&rec),
            &[
                (Unit::Video(1), 0),
                (Unit::Video(2), 0),
                (Unit::Video(1), 0),
            ],
            "t",
        ) else {
            panic!("new units were not written");
        };
        assert_eq!(
            outcomes,
            vec![progress(2), Collect::Merge { at: 0 }, progress(3)]
        );
        assert_eq!(after.state, JobState::Merging);
    }
}
