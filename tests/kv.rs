//! The typed KV layer's revision-checked updates against a real nats-server: `modify_known`
//! starts from the caller's own copy, and never lets that copy decide anything it could not
//! have decided on a read.

mod common;

use anyhow::{Result, ensure};
use common::{JobClient, TestFleet};
use ffleet_runtime::messages::SegmentRecord;
use ffleet_runtime::nats::kv::Change;

const KEY: &str = "kvtest.v00000";

#[tokio::test]
async fn a_write_from_a_known_copy_is_checked_against_the_current_revision() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let segments = &fleet.ctx().segments;
    let (_, first) = segments
        .modify_known(KEY, None, |_| {
            Change::Write(SegmentRecord::planned(None), ())
        })
        .await?;
    let (copy, rev) = first.expect("created");

    // The copy is current: written from it, at the next revision.
    let bump = |r: Option<&SegmentRecord>| {
        let mut n = r.expect("record").clone();
        n.attempt += 1;
        Change::Write(n.clone(), n.attempt)
    };
    let (attempt, second) = segments
        .modify_known(KEY, Some((copy.clone(), rev)), bump)
        .await?;
    let (_, rev2) = second.expect("written");
    ensure!(
        attempt == 2 && rev2 > rev,
        "attempt {attempt}, revision {rev2}"
    );

    // The copy is old now (someone wrote after it): the write from it is refused by the
    // revision check and decided again on what is there.
    let (attempt, third) = segments
        .modify_known(KEY, Some((copy.clone(), rev)), bump)
        .await?;
    ensure!(attempt == 3, "decided on the old copy: attempt {attempt}");
    let (stored, _) = segments.get(KEY).await?.expect("record");
    ensure!(stored.attempt == 3 && third.is_some_and(|(r, _)| r.attempt == 3));

    // A refusal on the copy is not believed: the stored record decides.
    let (decided, written) = segments
        .modify_known(KEY, Some((copy, rev)), |r| {
            let r = r.expect("record");
            if r.attempt == 1 {
                Change::Keep("refused on the copy")
            } else {
                Change::Keep("refused on a read")
            }
        })
        .await?;
    ensure!(
        decided == "refused on a read" && written.is_none(),
        "{decided}"
    );
    Ok(())
}

/// A finished job's records are purged (`scheduler.keep_finished_records_secs`) while some of
/// its tasks may still be about: a write from a copy of a purged record is decided on "no
/// record" at once, not held for a read that would never catch up (`KvError::Behind`, which
/// made the scheduler retry such a task every round and an encoder take it back forever).
#[tokio::test]
async fn a_write_from_a_copy_of_a_purged_record_is_decided_on_no_record() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let segments = &fleet.ctx().segments;
    let key = "purged-job.v00000";
    let (_, first) = segments
        .modify_known(key, None, |_| {
            Change::Write(SegmentRecord::planned(None), ())
        })
        .await?;
    let copy = first.expect("created");
    let store = segments.store();
    store
        .stream
        .purge()
        .filter(ffleet_runtime::subjects::kv_key(&store.name, key))
        .await?;
    let (decided, written) = segments
        .modify_known(key, Some(copy), |r| match r {
            None => Change::Keep("no record"),
            Some(r) => Change::Write(r.clone(), "written"),
        })
        .await?;
    ensure!(decided == "no record" && written.is_none(), "{decided}");
    ensure!(segments.get(key).await?.is_none(), "nothing written back");
    Ok(())
}
