//! How often a job's `progress` event goes out: at most once per `EVERY` per job from this
//! merger. A fleet turning over hundreds of short units a second would otherwise store one
//! progress event per unit; a progress bar needs a few a second, and the job's terminal event
//! follows its last unit anyway. Whatever is skipped is superseded by the next one sent.

use ffleet_runtime::JobId;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_millis(500);

static LAST: LazyLock<Mutex<HashMap<JobId, Instant>>> = LazyLock::new(Mutex::default);

/// Whether a progress event for `job` is due now; if so, it counts as sent.
pub fn due(job: &JobId, done: usize, total: usize) -> bool {
    let mut last = LAST.lock().expect("throttle lock");
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
