//! The spans every message gets: a consumer span per JetStream message, child of the trace
//! context the message carries, named after what the service does with it (`job`, `route`,
//! `encode`, `collect`), plus attribute and error helpers for the handlers.

use super::{metrics, propagation};
use async_nats::jetstream::Message;
use ffleet_protocol::media::progress::ProgressBlock;
use ffleet_protocol::messages::Task;
use ffleet_protocol::reason::Failure;
use ffleet_protocol::{Capability, JobId, NodeId};
use opentelemetry::trace::Status;
use std::ffi::OsString;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span name of a service's per-message work.
fn operation(service: &str) -> &'static str {
    match service {
        "splitter" => "job",
        "scheduler" => "route",
        "encoder" => "encode",
        "merger" => "collect",
        _ => "process",
    }
}

/// A consumer span for one message of `service`, parented on the message's trace context.
pub fn consume(service: &'static str, msg: &Message) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = operation(service),
        otel.kind = "consumer",
        ffleet.service = service,
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %msg.subject,
        ffleet.delivery = delivered(msg),
    );
    if !span.is_disabled() {
        let _ = span.set_parent(propagation::extract(msg.headers.as_ref()));
    }
    span
}

/// The span of one encode: a consumer span carrying this node's id.
pub fn encode(msg: &Message, node: &NodeId) -> Span {
    let span = consume("encoder", msg);
    span.set_attribute("ffleet.node", node.to_string());
    span
}

/// Names the job on the current span (the trace's handle for people searching by job id).
pub fn job(job: &JobId) {
    Span::current().set_attribute("ffleet.job", job.to_string());
}

/// Describes a task on the current span.
pub fn task(task: &Task) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.set_attribute("ffleet.job", task.job_id.to_string());
    span.set_attribute("ffleet.unit", task.unit.to_string());
    span.set_attribute("ffleet.attempt", i64::from(task.attempt));
    if let Some(c) = &task.capability {
        span.set_attribute("ffleet.capability", c.to_string());
    }
}

/// Describes an encode task on the current span and counts it when it is a redelivery (a
/// JetStream redelivery or a later attempt handed out by the scheduler).
pub fn encode_task(t: &Task, msg: &Message) {
    task(t);
    if t.attempt > 1 || delivered(msg) > 1 {
        metrics::segment_redelivered(t.capability.as_ref().unwrap_or(&Capability::cpu()));
    }
}

/// Marks `span` failed with the job failure's reason.
pub fn fail(span: &Span, f: &Failure) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("ffleet.failure.reason", f.reason.to_string());
    span.set_status(Status::error(format!("{}: {}", f.reason, f.message)));
}

/// Marks `span` failed with a free-form error.
pub fn error(span: &Span, e: impl std::fmt::Display) {
    if !span.is_disabled() {
        span.set_status(Status::error(e.to_string()));
    }
}

/// Records a finished encode on the current span (codec, frames, fps, speed) and in the encode
/// metrics. `media_secs` is the unit's duration, `wall_secs` what encoding it took.
pub fn encoded(
    cap: &Capability,
    args: &[OsString],
    last: &ProgressBlock,
    media_secs: f64,
    wall_secs: f64,
    video: bool,
) {
    let fps = last.fps.filter(|_| video);
    let realtime = (wall_secs > 0.0 && media_secs > 0.0).then(|| media_secs / wall_secs);
    metrics::segment_encoded(cap, fps, realtime);
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(codec) = codec(args) {
        span.set_attribute("ffleet.codec", codec);
    }
    if video {
        span.set_attribute("ffleet.frames", last.frame.unwrap_or(0) as i64);
    }
    if let Some(f) = fps {
        span.set_attribute("ffleet.fps", f);
    }
    if let Some(s) = last.speed {
        span.set_attribute("ffleet.speed", s);
    }
    if let Some(r) = realtime {
        span.set_attribute("ffleet.realtime_factor", r);
    }
}

/// The encoder an ffmpeg command line selects (`-c:v`, else `-c:a`).
fn codec(args: &[OsString]) -> Option<String> {
    ["-c:v", "-c:a"].iter().find_map(|flag| {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).map(|c| c.to_string_lossy().into_owned())
    })
}

/// Records how a child process ended on the current span; on failure, the tail of its stderr
/// (the summary a person needs, never the whole stream).
pub fn child_exit(program: &str, status: &str, stderr_tail: Option<&str>) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.set_attribute("process.executable.name", program.to_owned());
    span.set_attribute("ffleet.exit_status", status.to_owned());
    if let Some(tail) = stderr_tail.filter(|t| !t.is_empty()) {
        span.add_event(
            "child failed",
            vec![opentelemetry::KeyValue::new("stderr_tail", tail.to_owned())],
        );
    }
}

/// Which delivery of its message this is (1 when the server did not say). The same reading as
/// `nats::ack::delivered`, kept here so that telemetry stays below the NATS layer.
fn delivered(msg: &Message) -> i64 {
    msg.info().map(|i| i.delivered).unwrap_or(1)
}
