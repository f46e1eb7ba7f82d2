//! Handing a unit to a new attempt: the ownership record moves to attempt + 1 (revision-checked,
//! and only if it still is what the caller saw), then the new attempt goes to the plan queue to
//! be routed like any other task. From that write on, a result of the old attempt is refused
//! everywhere, so a node that comes back late cannot get its work merged.

use crate::Error;
use crate::ports::{Outbox, Units};
use ffleet_runtime::messages::{JobRecord, Task};
use ffleet_runtime::unit_protocol::{Seen, Step};
use ffleet_runtime::{Unit, subjects};

/// Re-issues `attempt` of `unit` of `job` if its record is still as `seen`. Returns the new
/// attempt, or `None` when the record had moved on (someone else handled it).
pub async fn reissue(
    ports: &(impl Units + Outbox),
    job: &JobRecord,
    unit: Unit,
    attempt: u32,
    seen: Seen<'_>,
) -> Result<Option<u32>, Error> {
    let key = subjects::segment_key(&job.job_id, unit);
    let step = Step::Reissue { attempt, seen };
    let Some(next) = ports.step(&key, &step).await? else {
        return Ok(None);
    };
    let attempt = next.attempt;
    // A publish lost here leaves the unit planned with no task: the reconciler re-issues it.
    if let Some(task) = Task::for_unit(job, unit, next.cut.as_ref(), attempt) {
        ports.plan(&task).await?;
    }
    Ok(Some(attempt))
}
