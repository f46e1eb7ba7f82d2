//! Adding a unit's result to the job record. The unit's ownership record is the authority: a
//! report counts only if that record says the same attempt is done with the same result. The job
//! moves to `merging` in the same revision-checked write that adds its last unit, so exactly one
//! merger starts the merge.

use ffleet_shared::messages::records::Collected;
use ffleet_shared::messages::{JobState, SegmentState};
use ffleet_shared::nats::kv::{Change, KvError};
use ffleet_shared::runtime::Ctx;
use ffleet_shared::{JobId, Unit, subjects};

#[derive(Debug, PartialEq)]
pub enum Collect {
    /// Counted; `done` of `total` units are in.
    Progress {
        done: usize,
        total: usize,
        frames_done: u64,
        frames_total: u64,
    },
    /// Counted, and it was the last one: this caller merges.
    Merge,
    /// Not counted (superseded attempt, job gone or already ended).
    Ignored,
}

pub async fn collect(
    ctx: &Ctx,
    job: &JobId,
    unit: Unit,
    attempt: u32,
    result_key: &str,
) -> Result<Collect, KvError> {
    let seg = ctx.segments.get(&subjects::segment_key(job, unit)).await?;
    let current = matches!(&seg, Some((r, _))
        if r.attempt == attempt
            && r.state == SegmentState::Done
            && r.result_key.as_deref() == Some(result_key));
    if !current {
        return Ok(Collect::Ignored);
    }
    let (frames, decode_errors) =
        seg.map_or((0, 0), |(r, _)| (r.frames.unwrap_or(0), r.decode_errors));
    let entry = Collected {
        attempt,
        result_key: result_key.to_owned(),
        frames,
        decode_errors,
    };
    ctx.jobs
        .modify(job.as_str(), |rec| {
            let Some(rec) = rec else {
                return Change::Keep(Collect::Ignored);
            };
            let Some(plan) = &rec.plan else {
                return Change::Keep(Collect::Ignored);
            };
            if rec.state != JobState::Encoding {
                return Change::Keep(Collect::Ignored);
            }
            let mut rec = rec.clone();
            let total = plan.unit_count();
            if rec.collected.get(&unit) == Some(&entry) {
                // A repeated report: nothing new, but say where the job stands.
                let (frames_done, frames_total) = rec.frame_progress();
                return Change::Keep(Collect::Progress {
                    done: rec.collected.len(),
                    total,
                    frames_done,
                    frames_total,
                });
            }
            rec.collected.insert(unit, entry.clone());
            rec.touch();
            if rec.collected.len() == total {
                rec.state = JobState::Merging;
                Change::Write(rec, Collect::Merge)
            } else {
                let (frames_done, frames_total) = rec.frame_progress();
                let done = rec.collected.len();
                Change::Write(
                    rec,
                    Collect::Progress {
                        done,
                        total,
                        frames_done,
                        frames_total,
                    },
                )
            }
        })
        .await
}
