//! Steps of an attempt this node claimed, applied to the unit's record through the unit
//! protocol and the revision-checked update, without believing a read older than the claim.
//!
//! A refusal normally means the unit moved on (superseded, finished, taken over) and the task
//! is dropped. But while a JetStream server catches up after a restart, a read can come back
//! older than this node's own claim; a task dropped on such a read leaves its unit running on
//! this node for good. So a refusal that only such a read can give is read again for a while
//! before anything is decided.

use ffleet_shared::messages::SegmentRecord;
use ffleet_shared::nats::kv::{Change, KvError};
use ffleet_shared::runtime::Ctx;
use ffleet_shared::time::now_rfc3339;
use ffleet_shared::unit_protocol::{self, Applied, Refused, Step};
use std::time::Duration;

/// Reads that may show the record older than the claim before the caller hands the task back.
const LAGGING_READS: u32 = 8;
/// Between them: a catching-up server needs a few seconds.
const LAG_PAUSE: Duration = Duration::from_millis(500);

/// What became of a step.
pub enum Applying {
    /// Written: the new record and what happened.
    Written(Box<SegmentRecord>, Applied),
    /// Refused on a current record: the unit moved on.
    Refused(Refused),
    /// Every read showed the record older than this node's claim: hand the task back.
    Lagging,
}

/// Applies `step`, an attempt this node claimed, to record `key`, starting from `known` (the
/// record and revision this node last wrote) when it has it.
pub async fn apply(
    ctx: &Ctx,
    key: &str,
    step: &Step<'_>,
    mut known: Option<(SegmentRecord, u64)>,
) -> Result<Applying, KvError> {
    let attempt = step.attempt().unwrap_or(0);
    let mut reads = 0;
    loop {
        reads += 1;
        let (got, _) = ctx
            .segments
            .modify_known(key, known.take(), |rec| {
                match unit_protocol::apply(rec, step, &now_rfc3339()) {
                    Ok((r, applied)) => Change::Write(r.clone(), Ok((r, applied))),
                    Err(why) => Change::Keep(Err(why)),
                }
            })
            .await?;
        match got {
            Ok((r, applied)) => return Ok(Applying::Written(Box::new(r), applied)),
            Err(why) if why.predates(attempt) => {
                if reads >= LAGGING_READS {
                    tracing::warn!(key, attempt, refused = ?why, "unit record still older than this node's claim");
                    return Ok(Applying::Lagging);
                }
                tracing::debug!(key, attempt, refused = ?why, "unit record read older than this node's claim, reading again");
                tokio::time::sleep(LAG_PAUSE).await;
            }
            Err(why) => return Ok(Applying::Refused(why)),
        }
    }
}
