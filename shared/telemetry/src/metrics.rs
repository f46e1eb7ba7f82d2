//! ffleet's OTLP metrics. Instruments come from the global meter, which is a no-op until
//! `telemetry::init` installs an exporting one, so recording costs nothing without an endpoint.
//!
//! | name | kind | attributes |
//! | --- | --- | --- |
//! | `ffleet.jobs.accepted` | counter | |
//! | `ffleet.jobs.completed` | counter | |
//! | `ffleet.jobs.failed` | counter | `reason` |
//! | `ffleet.segments.encoded` | counter | `capability` |
//! | `ffleet.segments.redelivered` | counter | `capability` |
//! | `ffleet.encode.fps` | histogram (frames/s) | `capability` |
//! | `ffleet.encode.realtime_factor` | histogram (media s per wall s) | `capability` |
//! | `ffleet.queue.depth` | gauge (messages) | `subject` |
//! | `ffleet.heartbeat.age` | gauge (s) | `node` |
//! | `ffleet.pool.slots.total`, `ffleet.pool.slots.busy` | gauge | `capability` |

use ffleet_protocol::Capability;
use ffleet_protocol::reason::Reason;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use std::sync::OnceLock;

struct Instruments {
    jobs_accepted: Counter<u64>,
    jobs_completed: Counter<u64>,
    jobs_failed: Counter<u64>,
    jobs_cancelled: Counter<u64>,
    segments_encoded: Counter<u64>,
    segments_redelivered: Counter<u64>,
    encode_fps: Histogram<f64>,
    encode_realtime: Histogram<f64>,
    queue_depth: Gauge<u64>,
    heartbeat_age: Gauge<f64>,
    slots_total: Gauge<u64>,
    slots_busy: Gauge<u64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// Built on first use, which comes after `telemetry::init` in every entry point.
fn get() -> &'static Instruments {
    INSTRUMENTS.get_or_init(|| {
        let m = opentelemetry::global::meter("ffleet");
        Instruments {
            jobs_accepted: m
                .u64_counter("ffleet.jobs.accepted")
                .with_description("jobs accepted by the splitter")
                .build(),
            jobs_completed: m
                .u64_counter("ffleet.jobs.completed")
                .with_description("jobs that ended with a verified output")
                .build(),
            jobs_failed: m
                .u64_counter("ffleet.jobs.failed")
                .with_description("jobs that ended failed, by reason")
                .build(),
            jobs_cancelled: m
                .u64_counter("ffleet.jobs.cancelled")
                .with_description("jobs stopped on request")
                .build(),
            segments_encoded: m
                .u64_counter("ffleet.segments.encoded")
                .with_description("units encoded and recorded")
                .build(),
            segments_redelivered: m
                .u64_counter("ffleet.segments.redelivered")
                .with_description("encode tasks delivered again or re-issued as a new attempt")
                .build(),
            encode_fps: m
                .f64_histogram("ffleet.encode.fps")
                .with_unit("{frame}/s")
                .with_description("frames per second of each video encode")
                .build(),
            encode_realtime: m
                .f64_histogram("ffleet.encode.realtime_factor")
                .with_unit("1")
                .with_description("media seconds encoded per wall-clock second")
                .with_boundaries(vec![0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
                .build(),
            queue_depth: m
                .u64_gauge("ffleet.queue.depth")
                .with_unit("{message}")
                .with_description("messages waiting or unacknowledged, per task subject")
                .build(),
            heartbeat_age: m
                .f64_gauge("ffleet.heartbeat.age")
                .with_unit("s")
                .with_description("age of each encoder's last heartbeat")
                .build(),
            slots_total: m
                .u64_gauge("ffleet.pool.slots.total")
                .with_description("encode slots of live encoders, per capability")
                .build(),
            slots_busy: m
                .u64_gauge("ffleet.pool.slots.busy")
                .with_description("busy encode slots of live encoders, per capability")
                .build(),
        }
    })
}

pub fn job_accepted() {
    get().jobs_accepted.add(1, &[]);
}

pub fn job_completed() {
    get().jobs_completed.add(1, &[]);
}

pub fn job_cancelled() {
    get().jobs_cancelled.add(1, &[]);
}

pub fn job_failed(reason: Reason) {
    get()
        .jobs_failed
        .add(1, &[KeyValue::new("reason", reason.to_string())]);
}

/// One unit encoded: `fps` only for video, `realtime` = media seconds per wall second.
pub fn segment_encoded(cap: &Capability, fps: Option<f64>, realtime: Option<f64>) {
    let i = get();
    let c = [KeyValue::new("capability", cap.to_string())];
    i.segments_encoded.add(1, &c);
    if let Some(f) = fps {
        i.encode_fps.record(f, &c);
    }
    if let Some(r) = realtime {
        i.encode_realtime.record(r, &c);
    }
}

pub fn segment_redelivered(cap: &Capability) {
    get()
        .segments_redelivered
        .add(1, &[KeyValue::new("capability", cap.to_string())]);
}

pub fn queue_depth(subject: &str, depth: u64) {
    get()
        .queue_depth
        .record(depth, &[KeyValue::new("subject", subject.to_owned())]);
}

pub fn heartbeat_age(node: &str, secs: f64) {
    get()
        .heartbeat_age
        .record(secs, &[KeyValue::new("node", node.to_owned())]);
}

pub fn pool_slots(cap: &str, total: u64, busy: u64) {
    let a = [KeyValue::new("capability", cap.to_owned())];
    get().slots_total.record(total, &a);
    get().slots_busy.record(busy, &a);
}
