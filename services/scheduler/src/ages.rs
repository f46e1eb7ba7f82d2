//! How long each unit record has stayed as it is, on this process's monotonic clock: the
//! reconciler's measure of "stuck". A record's own `updated_at` is the wall clock of whichever
//! node wrote it last, and a node whose clock is off would make its units look stuck at once
//! (clock behind) or never (clock ahead). Here a record's age starts when this process first
//! reads it at its current revision, so a scheduler that just took the lead waits one full
//! period before it repairs anything, never less.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
pub struct Ages {
    /// Per key: the revision last read, when it was first read at it, and whether this round
    /// read it.
    seen: HashMap<String, (u64, Instant, bool)>,
}

impl Ages {
    /// How long `key` has been at `revision`, as of `now`. A read older than the one this
    /// process last saw (revisions only grow) keeps the age of the newer one.
    pub fn age(&mut self, key: &str, revision: u64, now: Instant) -> Duration {
        let e = self
            .seen
            .entry(key.to_owned())
            .or_insert((revision, now, true));
        e.2 = true;
        if revision > e.0 {
            *e = (revision, now, true);
        }
        now.saturating_duration_since(e.1)
    }

    /// Ends a reconcile round: keys it did not read (finished units and jobs) are forgotten.
    pub fn end_round(&mut self) {
        self.seen.retain(|_, e| std::mem::replace(&mut e.2, false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_ages_from_its_first_reading_at_a_revision_and_not_by_older_reads() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ages = Ages::default();
        assert_eq!(ages.age("u1", 5, t0), s(0));
        assert_eq!(ages.age("u1", 5, t0 + s(7)), s(7));
        // An older read (a lagging leader) neither resets nor extends it.
        assert_eq!(ages.age("u1", 3, t0 + s(8)), s(8));
        // A newer revision starts over.
        assert_eq!(ages.age("u1", 9, t0 + s(10)), s(0));
        assert_eq!(ages.age("u1", 9, t0 + s(12)), s(2));
    }

    #[test]
    fn keys_not_read_in_a_round_are_forgotten() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ages = Ages::default();
        ages.age("a", 1, t0);
        ages.age("b", 1, t0);
        ages.end_round();
        ages.age("a", 1, t0 + s(5));
        ages.end_round();
        // "b" was not read in the second round: read again, it starts from zero.
        assert_eq!(ages.age("b", 1, t0 + s(6)), s(0));
        assert_eq!(ages.age("a", 1, t0 + s(6)), s(6));
    }
}
