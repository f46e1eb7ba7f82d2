//! A job's events for its page, read from the events stream when the page is asked for: what
//! other systems were told (accepted, the last progress, the end), each as one line, and the
//! job's trace id from the `traceparent` the events carry, for a link to the tracing UI. Each
//! is the newest message on its own subject (a message get), so a job of ten thousand units
//! costs the page five reads, not a walk over its segment reports.

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use ffleet_runtime::JobId;
use ffleet_runtime::messages::{CloudEvent, JobEvent, SegmentOutcome};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects::{self, EventKind};
use std::time::Duration;

/// One event as the page lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// When it was sent (the CloudEvent's `time`).
    pub at: String,
    pub kind: &'static str,
    pub text: String,
}

/// What the page shows of the job's events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Events {
    /// Oldest first.
    pub rows: Vec<Row>,
    /// The job's trace (32 hex digits), as its events' `traceparent` says.
    pub trace_id: Option<String>,
}

/// The kinds listed, in the order a job goes through them.
const LISTED: [EventKind; 5] = [
    EventKind::Accepted,
    EventKind::Progress,
    EventKind::Completed,
    EventKind::Failed,
    EventKind::Cancelled,
];

/// Reads `job`'s events, for at most `within` (what was read by then is shown).
pub async fn read(ctx: &Ctx, job: &JobId, within: Duration) -> Events {
    let mut found: Vec<Option<(u64, Row, Option<String>)>> = vec![None; LISTED.len()];
    let reading = async {
        let stream = ctx
            .js
            .get_stream_no_info(subjects::STREAM_EVENTS)
            .await
            .map_err(|e| e.to_string())?;
        for (slot, kind) in found.iter_mut().zip(LISTED) {
            let subject = subjects::event(Some(job), kind);
            let m = match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(m) => m,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(e.to_string()),
            };
            let trace = m
                .headers
                .get("traceparent")
                .and_then(|v| trace_id(v.as_str()));
            let Some((ce, ev)) = serde_json::from_slice::<CloudEvent>(&m.payload)
                .ok()
                .and_then(|ce| JobEvent::from_cloudevent(&ce).ok().map(|ev| (ce, ev)))
            else {
                continue;
            };
            let at = ce.time.clone().unwrap_or_default();
            *slot = Some((m.sequence, row(at, &ev), trace));
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(within, reading).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(job = %job, error = %e, "reading a job's events"),
        Err(_) => tracing::warn!(job = %job, "reading a job's events: cut short"),
    }
    let mut found: Vec<(u64, Row, Option<String>)> = found.into_iter().flatten().collect();
    found.sort_by_key(|(seq, _, _)| *seq);
    Events {
        trace_id: found.iter().find_map(|(_, _, t)| t.clone()),
        rows: found.into_iter().map(|(_, r, _)| r).collect(),
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), unless all zero.
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    let ok = id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0');
    ok.then(|| id.to_ascii_lowercase())
}

fn row(at: String, ev: &JobEvent) -> Row {
    let text = match ev {
        JobEvent::Accepted(a) => format!(
            "{} → {}, profile {}, priority {}",
            a.input, a.output, a.profile, a.priority
        ),
        JobEvent::Progress(p) => format!(
            "{}/{} units, {:.0}%",
            p.units_done, p.units_total, p.percent
        ),
        JobEvent::Completed(c) => format!(
            "{} frames, {:.1} s of media in {:.1} s, {} bytes",
            c.frames, c.duration_secs, c.wall_secs, c.bytes
        ),
        JobEvent::Failed(f) => format!("{}: {}", f.reason, f.message),
        JobEvent::Cancelled(c) => format!("during {}", c.during.name()),
        JobEvent::SegmentDone(s) => match &s.outcome {
            SegmentOutcome::Encoded { frames, .. } => {
                format!("{} on {}: {frames} frames", s.unit, s.node)
            }
            SegmentOutcome::Failed { failure } => {
                format!("{} on {}: {}", s.unit, s.node, failure.reason)
            }
        },
    };
    Row {
        at,
        kind: ev.kind().token(),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_well_formed_traceparents_only() {
        assert_eq!(
            trace_id("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            trace_id("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id(""), None);
    }
}
