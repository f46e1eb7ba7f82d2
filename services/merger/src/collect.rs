//! Counting a unit's result into the job record. The unit's ownership record is the authority
//! and keeps the result itself (key, digest, frames): a report counts only if that record says
//! the same attempt is done with the same result, and the job record only marks the unit
//! collected (one bit) and adds its planned frames. The job moves to `merging` in the same
//! revision-checked write that marks its last unit, so exactly one merger starts the merge.
//! Reports of one job that arrive together share that write (`group`).

pub use crate::group::Collect;
use crate::group::{Collects, Outcome};
use ffleet_runtime::messages::SegmentRecord;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::unit_protocol::{self, Report};
use ffleet_runtime::{JobId, Unit, subjects};
use std::sync::Arc;

pub async fn collect(
    ctx: &Ctx,
    collects: &Collects,
    job: &JobId,
    unit: Unit,
    attempt: u32,
    result_key: &str,
) -> Outcome {
    let seg = match ctx.segments.get(&subjects::segment_key(job, unit)).await {
        Ok(Some((seg, _))) => seg,
        Ok(None) => return Ok(Collect::Ignored),
        Err(e) => return Err(Arc::new(e)),
    };
    if let Some(not_counted) = judge(&seg, attempt, result_key) {
        return Ok(not_counted);
    }
    let frames = seg.cut.as_ref().map_or(0, |c| c.frames);
    collects.collect(ctx, job, unit, frames).await
}

/// What the unit record says about a report of `attempt` with `result_key`: `None` when it is
/// the record's current result (count it), `Behind` when the record cannot have been read after
/// the report was sent, `Ignored` when the unit moved on (`unit_protocol::judge_report`).
fn judge(seg: &SegmentRecord, attempt: u32, result_key: &str) -> Option<Collect> {
    match unit_protocol::judge_report(seg, attempt, result_key) {
        Report::Count => None,
        Report::Behind => Some(Collect::Behind),
        Report::Ignore => Some(Collect::Ignored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::messages::SegmentState;

    fn record(attempt: u32, state: SegmentState, result_key: Option<&str>) -> SegmentRecord {
        let mut r = SegmentRecord::planned(None);
        r.attempt = attempt;
        r.state = state;
        r.result_key = result_key.map(str::to_owned);
        r
    }

    #[test]
    fn a_record_older_than_the_report_is_read_again_not_dropped() {
        for state in [
            SegmentState::Planned,
            SegmentState::Queued,
            SegmentState::Running,
        ] {
            assert_eq!(
                judge(&record(2, state, None), 2, "k2"),
                Some(Collect::Behind)
            );
        }
        assert_eq!(
            judge(&record(1, SegmentState::Done, Some("k1")), 2, "k2"),
            Some(Collect::Behind)
        );
    }

    #[test]
    fn only_the_current_attempts_result_counts() {
        let done = record(2, SegmentState::Done, Some("k2"));
        assert_eq!(judge(&done, 2, "k2"), None);
        assert_eq!(judge(&done, 2, "other"), Some(Collect::Ignored));
        assert_eq!(judge(&done, 1, "k1"), Some(Collect::Ignored));
        let moved_on = record(3, SegmentState::Running, None);
        assert_eq!(judge(&moved_on, 2, "k2"), Some(Collect::Ignored));
        let failed = record(2, SegmentState::Failed, None);
        assert_eq!(judge(&failed, 2, "k2"), Some(Collect::Ignored));
    }
}
