//! How long the segments of a job are: the rule is pure (`segment_secs`), fed by the pool's
//! slots as the encoders' heartbeats report them (`pool_slots`), counted by the scheduler's
//! leader and published with its lease.
//!
//! About two segments per slot keep every slot busy and let a fast node take a slow node's
//! share at the end; a floor keeps per-segment start-up (dispatch, ffmpeg start, the cut's
//! fetch) small beside the encode; the request's `segment_seconds` (or
//! `splitter.default_segment_secs`) caps the length, so a long file is still cut finely enough
//! to hand a dead node's work on cheaply. The slots counted are the live pool's, not the ones
//! free at this instant: a heartbeat lags its node by up to an interval, and a plan that changed
//! with it would cut the same request differently a second later (and encode different bytes).

use ffleet_runtime::messages::heartbeat::offered_slots as pool_slots;
use ffleet_runtime::messages::{Heartbeat, MAX_VIDEO_UNITS, SchedulerLease};
use ffleet_runtime::nats::kv::KvError;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects;
use futures::StreamExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Segments per slot the rule aims at.
pub const SEGMENTS_PER_SLOT: f64 = 2.0;

/// Inputs of the rule, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Longest segment: the request's `segment_seconds`, else the configured default.
    pub max_secs: f64,
    /// Shortest segment the pool may ask for (`splitter.min_segment_secs`); a request asking
    /// for shorter ones (`max_secs` below it) gets them.
    pub min_secs: f64,
}

/// Target segment length for a video of `duration_secs` on a pool of `slots` (at least one is
/// assumed: an empty pool is one that has not started yet).
pub fn segment_secs(rule: Rule, duration_secs: f64, slots: u32) -> f64 {
    let per_slot = duration_secs / (SEGMENTS_PER_SLOT * f64::from(slots.max(1)));
    per_slot.max(rule.min_secs).min(rule.max_secs)
}

/// The rule and the pool it sizes for, read before the source is probed; the length follows
/// once the probe says how long the video is.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    pub rule: Rule,
    pub slots: u32,
    /// Where segments may start (`splitter.cut_anywhere`).
    pub starts: ffleet_runtime::media::cuts::Starts,
    /// The scene score above which a cut is preferred (`splitter.scene_cuts`), if any.
    pub scenes: Option<f64>,
}

/// Fewest frames the pool rule puts in a segment: at very low frame rates (1 or 2 fps) a
/// one-second segment of a frame or two buys no parallelism worth an encode's start-up (tens of
/// milliseconds of process and encoder set-up against a frame's encode). Segments that short
/// still merge exactly (`args::SEGMENT_START_FILTER`), and a request's own `segment_seconds`
/// still bounds the length.
pub const MIN_FRAMES: f64 = 10.0;

impl Sizing {
    /// Target segment length for a video of `duration_secs` at `fps` frames per second.
    pub fn secs(&self, duration_secs: f64, fps: f64) -> f64 {
        let floor = if fps.is_finite() && fps > 0.0 {
            MIN_FRAMES / fps
        } else {
            0.0
        };
        let rule = Rule {
            min_secs: self.rule.min_secs.max(floor),
            ..self.rule
        };
        segment_secs(rule, duration_secs, self.slots)
    }
}

/// Refuses a plan of more segments than one job may have, naming what would fit.
pub fn check_count(segments: usize, duration_secs: f64, secs: f64) -> Result<(), Failure> {
    if segments <= MAX_VIDEO_UNITS as usize {
        return Ok(());
    }
    Err(Failure::new(
        Reason::LimitsExceeded,
        format!(
            "a {duration_secs:.0} s video cut into {secs} s segments makes {segments} segments; \
             a job may have at most {MAX_VIDEO_UNITS} (ask for segment_seconds of at least {:.2})",
            duration_secs / f64::from(MAX_VIDEO_UNITS) * 1.01
        ),
    ))
}

/// How long one reading of the pool serves: jobs split in a burst share it, so a large pool is
/// read at most this often, not once per job.
const POOL_FRESH: Duration = Duration::from_secs(2);
/// Longest a split waits for a pool reading.
const POOL_READ_WAIT: Duration = Duration::from_secs(3);

/// The splitter's last reading of the pool: when it was taken and the slots it found. Each
/// splitter keeps its own (in-process fleets side by side never share one).
#[derive(Debug, Default)]
pub struct PoolReading {
    last: Mutex<Option<(Instant, u32)>>,
    /// When a read of the scheduler's lease last failed.
    lease_failed: Mutex<Option<Instant>>,
}

/// Longest a read of the scheduler's lease may take before the heartbeats are counted instead.
const LEASE_READ_WAIT: Duration = Duration::from_secs(1);
/// How long the lease is not asked again after a read failed (credentials of a release before
/// the splitter could read it, a bucket's election): the heartbeats are counted meanwhile.
const LEASE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The live pool's slots, as last read within `POOL_FRESH`, else read now. A read that takes
/// longer than `POOL_READ_WAIT` (a listing stalls while heartbeats expire under it, or the
/// bucket's stream elects a leader) gives the last reading, however old: sizing is a
/// preference, and a split must not wait on it.
pub async fn live_slots(ctx: &Ctx, reading: &PoolReading) -> Result<u32, KvError> {
    let last = |fresh: bool| {
        let r = reading.last.lock().expect("pool reading lock");
        r.filter(|(at, _)| !fresh || at.elapsed() < POOL_FRESH)
            .map(|(_, slots)| slots)
    };
    if let Some(slots) = last(true) {
        return Ok(slots);
    }
    let slots = match tokio::time::timeout(POOL_READ_WAIT, read_pool(ctx, reading)).await {
        Ok(read) => read?,
        Err(_) => {
            tracing::warn!(
                wait_secs = POOL_READ_WAIT.as_secs_f64(),
                "pool read too slow, sizing from the last reading"
            );
            return Ok(last(false).unwrap_or(0));
        }
    };
    *reading.last.lock().expect("pool reading lock") = Some((Instant::now(), slots));
    Ok(slots)
}

/// The live pool's slots: as the scheduler's leader last published them with its lease (one
/// read, whatever the pool's size), else, with no leader or one whose view has not settled yet,
/// counted from the heartbeats themselves.
async fn read_pool(ctx: &Ctx, reading: &PoolReading) -> Result<u32, KvError> {
    let failed = *reading.lease_failed.lock().expect("lease failure lock");
    if failed.is_none_or(|at| at.elapsed() >= LEASE_RETRY_AFTER) {
        let read = ctx.leases.get(subjects::LEASE_SCHEDULER);
        let why = match tokio::time::timeout(LEASE_READ_WAIT, read).await {
            Ok(Ok(Some(value))) => match SchedulerLease::read(&value).pool_slots {
                Some(slots) => return Ok(slots),
                None => None,
            },
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer in time".to_owned()),
        };
        if let Some(why) = why {
            tracing::info!(error = %why, retry_secs = LEASE_RETRY_AFTER.as_secs(), "scheduler lease not read, counting the pool's heartbeats");
            *reading.lease_failed.lock().expect("lease failure lock") = Some(Instant::now());
        }
    }
    read_slots(ctx).await
}

/// The live pool's slots, read from the workers bucket now (one listing and one get per node):
/// heartbeats older than the TTL are left out even if the bucket still holds them.
async fn read_slots(ctx: &Ctx) -> Result<u32, KvError> {
    let ttl = ctx.config.fleet.heartbeat_ttl_secs;
    let keys = ctx.workers.keys().await?;
    type Beat = Option<(Heartbeat, u64, time::OffsetDateTime)>;
    let beats: Vec<Result<Beat, KvError>> = futures::stream::iter(keys)
        .map(|k| async move { ctx.workers.get_stamped(&k).await })
        .buffer_unordered(16)
        .collect()
        .await;
    let now = time::OffsetDateTime::now_utc();
    let mut live = Vec::with_capacity(beats.len());
    for b in beats {
        // Aged by the server's timestamp: the heartbeat's own `at` is its node's clock.
        if let Some((hb, _, written)) = b?
            && (now - written).as_seconds_f64() <= ttl
        {
            live.push(hb);
        }
    }
    Ok(pool_slots(&live))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_frame_rates_get_at_least_ten_frames_a_segment_unless_the_request_asks_shorter() {
        let sizing = |max_secs| Sizing {
            rule: Rule {
                max_secs,
                min_secs: 1.0,
            },
            slots: 32,
            starts: ffleet_runtime::media::cuts::Starts::AnyFrame,
            scenes: None,
        };
        assert_eq!(sizing(10.0).secs(60.0, 25.0), 1.0);
        assert_eq!(sizing(10.0).secs(60.0, 1.0), 10.0);
        assert_eq!(sizing(10.0).secs(60.0, 2.0), 5.0);
        assert_eq!(sizing(1.0).secs(60.0, 1.0), 1.0);
        assert_eq!(sizing(10.0).secs(60.0, 0.0), 1.0);
    }

    const RULE: Rule = Rule {
        max_secs: 10.0,
        min_secs: 1.0,
    };

    fn segments(duration: f64, slots: u32, rule: Rule) -> f64 {
        (duration / segment_secs(rule, duration, slots)).ceil()
    }

    #[test]
    fn a_short_file_on_a_large_pool_gets_two_segments_per_slot() {
        // 60 s on 32 slots: 0.94 s per segment would be below the floor, so 1 s (60 segments),
        // not the six 10 s segments of a fixed length.
        assert_eq!(segment_secs(RULE, 60.0, 32), 1.0);
        assert_eq!(segments(60.0, 32, RULE), 60.0);
        // 200 s on 32 slots: 64 segments of 3.125 s.
        assert_eq!(segments(200.0, 32, RULE), 64.0);
    }

    #[test]
    fn the_floor_holds_against_start_up_cost() {
        assert_eq!(segment_secs(RULE, 4.0, 100), 1.0);
        let coarse = Rule {
            min_secs: 2.5,
            ..RULE
        };
        assert_eq!(segment_secs(coarse, 4.0, 100), 2.5);
    }

    #[test]
    fn the_length_is_capped_by_the_request_or_the_default() {
        // Two hours on 8 slots would be 450 s per segment: capped at 10 s.
        assert_eq!(segment_secs(RULE, 7200.0, 8), 10.0);
        let asked = Rule {
            max_secs: 4.0,
            ..RULE
        };
        assert_eq!(segment_secs(asked, 7200.0, 8), 4.0);
        // A request for segments shorter than the floor gets them.
        let fine = Rule {
            max_secs: 1.0,
            min_secs: 2.0,
        };
        assert_eq!(segment_secs(fine, 60.0, 32), 1.0);
    }

    #[test]
    fn an_empty_pool_counts_as_one_slot() {
        assert_eq!(segment_secs(RULE, 8.0, 0), 4.0);
        assert_eq!(segment_secs(RULE, 8.0, 1), 4.0);
    }

    #[test]
    fn more_segments_than_a_job_may_have_are_refused_with_what_would_fit() {
        assert!(check_count(MAX_VIDEO_UNITS as usize, 1e5, 1.0).is_ok());
        let f = check_count(MAX_VIDEO_UNITS as usize + 1, 2e5, 1.0).unwrap_err();
        assert_eq!(f.reason, Reason::LimitsExceeded);
        assert!(f.message.contains("at most 100000"), "{}", f.message);
    }

    #[test]
    fn draining_nodes_offer_no_slots() {
        let hb = |slots, gpu, draining| {
            let mut h: Heartbeat = serde_json::from_value(serde_json::json!({
                "version": 1, "node_id": "n", "host": "h", "capabilities": ["cpu"],
                "slots_total": slots, "slots_busy": 0, "at": "2026-01-01T00:00:00Z"
            }))
            .unwrap();
            h.gpu_slots_total = gpu;
            h.draining = draining;
            h
        };
        let pool = [hb(4, 0, false), hb(2, 3, false), hb(8, 0, true)];
        assert_eq!(pool_slots(&pool), 9);
        assert_eq!(pool_slots(&[]), 0);
    }
}
