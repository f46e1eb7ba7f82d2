//! How often a job's `progress` event goes out: at most once per `EVERY` per job from this
//! merger. A fleet turning over hundreds of short units a second would otherwise store one
//! progress event per unit; a progress bar needs a few a second, and the job's terminal event
//! follows its last unit anyway. Whatever is skipped is superseded by the next one sent.

use ffleet_runtime::JobId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(500);

/// When each job's last progress event went out; one per merger.
#[derive(Debug, Default)]
pub struct Throttle(Mutex<HashMap<JobId, Instant>>);

impl Throttle {
    /// Whether a progress event for `job` is due now; if so, it counts as sent.
    pub fn due(&self, job: &JobId, done: usize, total: usize) -> bool {
        let mut last = self.0.lock().expect("throttle lock");
        // The last unit's report is followed by the merge and the terminal event.
        if done >= total {
            last.remove(job);
            return false;
        }
        let now = Instant::now();
        // Forget jobs that went quiet (ended, or taken over by another merger).
        if last.len() > 10_000 {
            last.retain(|_, t| now.duration_since(*t) < EVERY * 20);
        }
        match last.get(job) {
            Some(t) if now.duration_since(*t) < EVERY => false,
            _ => {
                last.insert(job.clone(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_per_job_and_none_for_the_last_unit() {
        let t = Throttle::default();
        let (a, b) = (JobId::new("a").unwrap(), JobId::new("b").unwrap());
        assert!(t.due(&a, 1, 10));
        assert!(!t.due(&a, 2, 10), "within the period");
        assert!(t.due(&b, 1, 10), "each job its own");
        assert!(
            !t.due(&a, 10, 10),
            "the terminal event follows the last unit"
        );
        assert!(t.due(&a, 3, 10), "forgotten with its last unit");
        // Two mergers in one process keep their own.
        assert!(Throttle::default().due(&b, 2, 10));
    }
}
