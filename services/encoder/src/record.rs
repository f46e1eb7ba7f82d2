//! Steps of an attempt this node claimed, applied to the unit's record through the unit
//! protocol and the revision-checked update, without believing a read older than the claim.
//!
//! A refusal normally means the unit moved on (superseded, finished, taken over) and the task
//! is dropped. But while a JetStream server catches up after an election, a read can come back
//! older than this node's own claim; a task dropped on such a read would leave its unit running
//! on this node for good. The update starts from the claim's copy, and `modify_known` reads
//! nothing older than that copy (it waits for the entry to catch up, or fails `Behind`), so
//! such a refusal cannot be decided on a read; one that still says the record predates the
//! claim is handed back, never believed.

use ffleet_runtime::messages::SegmentRecord;
use ffleet_runtime::nats::kv::{Change, KvError};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::unit_protocol::{self, Applied, Refused, Step};

/// What became of a step.
pub enum Applying {
    /// Written: the new record and what happened.
    Written(Box<SegmentRecord>, Applied),
    /// Refused on a current record: the unit moved on.
    Refused(Refused),
    /// The record read older than this node's claim: hand the task back.
    Lagging,
}

/// Applies `step`, an attempt this node claimed, to record `key`, starting from `known` (the
/// record and revision this node's claim wrote).
pub async fn apply(
    ctx: &Ctx,
    key: &str,
    step: &Step<'_>,
    known: Option<(SegmentRecord, u64)>,
) -> Result<Applying, KvError> {
    let attempt = step.attempt().unwrap_or(0);
    let (got, _) = ctx
        .segments
        .modify_known(key, known, |rec| {
            match unit_protocol::apply(rec, step, &now_rfc3339()) {
                Ok((r, applied)) => Change::Write(r.clone(), Ok((r, applied))),
                Err(why) => Change::Keep(Err(why)),
            }
        })
        .await?;
    Ok(match got {
        Ok((r, applied)) => Applying::Written(Box::new(r), applied),
        Err(why) if why.predates(attempt) => {
            tracing::warn!(key, attempt, refused = ?why, "unit record reads older than this node's claim; handed back");
            Applying::Lagging
        }
        Err(why) => Applying::Refused(why),
    })
}
