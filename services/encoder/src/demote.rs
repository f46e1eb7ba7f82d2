//! Self-demotion: a node whose accelerator encodes fail gives the capability up, so the
//! scheduler stops routing GPU work to it after its first failures instead of letting every
//! GPU-preferring job spend its retry budget there.
//!
//! The node decides, not the scheduler: it alone can tell a broken accelerator from a bad
//! input. After a failed accelerator encode it runs the failed variant once more on a
//! generated picture (`probe::variant`): if that fails too, the accelerator (or the variant)
//! cannot work here and the capability goes at once. If it passes, the input was at fault and
//! the capability stays, unless `encoder.demote_after_failures` accelerator encodes in a row
//! failed (a GPU that fails only on real work). From then on the heartbeat no longer lists the
//! capability (it names it under `demoted`), and tasks already queued for it are handed back
//! to the scheduler unencoded. The demotion lasts until the encoder restarts.

use ffleet_runtime::Capability;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    /// Accelerator encodes that failed in a row, per capability.
    in_a_row: HashMap<Capability, u32>,
    demoted: Vec<Capability>,
}

pub struct Demotions {
    inner: Mutex<Inner>,
    after: u32,
}

/// What a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The capability stays (the input was at fault, or too few failures yet).
    Kept,
    /// The capability was given up by this failure.
    Demoted,
}

impl Demotions {
    /// `after`: accelerator failures in a row that demote even when the variant still passes.
    pub fn new(after: u32) -> Self {
        Self {
            inner: Mutex::default(),
            after: after.max(1),
        }
    }

    pub fn is_demoted(&self, cap: &Capability) -> bool {
        self.inner
            .lock()
            .expect("demote lock")
            .demoted
            .contains(cap)
    }

    pub fn demoted(&self) -> Vec<Capability> {
        self.inner.lock().expect("demote lock").demoted.clone()
    }

    pub fn succeeded(&self, cap: &Capability) {
        self.inner.lock().expect("demote lock").in_a_row.remove(cap);
    }

    /// Records a failed encode of `cap`; `variant_works`: whether the variant passed its test
    /// again after the failure.
    pub fn failed(&self, cap: &Capability, variant_works: bool) -> Verdict {
        if !cap.is_gpu() {
            return Verdict::Kept;
        }
        let mut inner = self.inner.lock().expect("demote lock");
        if inner.demoted.contains(cap) {
            return Verdict::Kept;
        }
        let n = inner.in_a_row.entry(cap.clone()).or_default();
        *n += 1;
        if variant_works && *n < self.after {
            return Verdict::Kept;
        }
        inner.demoted.push(cap.clone());
        Verdict::Demoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(s: &str) -> Capability {
        Capability::new(s).unwrap()
    }

    #[test]
    fn a_broken_variant_demotes_at_the_first_failure() {
        let d = Demotions::new(3);
        assert_eq!(d.failed(&cap("nvenc"), false), Verdict::Demoted);
        assert!(d.is_demoted(&cap("nvenc")));
        assert_eq!(d.demoted(), vec![cap("nvenc")]);
        // Once is enough.
        assert_eq!(d.failed(&cap("nvenc"), false), Verdict::Kept);
    }

    #[test]
    fn bad_inputs_do_not_demote_but_failures_in_a_row_do() {
        let d = Demotions::new(3);
        assert_eq!(d.failed(&cap("nvenc"), true), Verdict::Kept);
        d.succeeded(&cap("nvenc"));
        assert_eq!(d.failed(&cap("nvenc"), true), Verdict::Kept);
        assert_eq!(d.failed(&cap("nvenc"), true), Verdict::Kept);
        assert_eq!(d.failed(&cap("nvenc"), true), Verdict::Demoted);
        // CPU is never demoted: a CPU failure is the input's.
        assert_eq!(d.failed(&cap("cpu"), false), Verdict::Kept);
        assert!(!d.is_demoted(&cap("cpu")));
    }
}
