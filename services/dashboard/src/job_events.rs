//! A job's events for its page, read from the events stream when the page is asked for: what
//! other systems were told (accepted, progress, the end), each as one line, and the job's
//! trace id from the `traceparent` the events carry, for a link to the tracing UI.

use ffleet_runtime::JobId;
use ffleet_runtime::messages::{CloudEvent, JobEvent, SegmentOutcome};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::subjects;
use std::time::Duration;

/// Events read for one page at most (the newest kept).
const READ_AT_MOST: usize = 2_000;

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
    pub rows: Vec<Row>,
    /// Progress events, of which only the last is listed.
    pub progress: usize,
    /// Segment reports (the timeline shows them).
    pub segments: usize,
    /// The job's trace (32 hex digits), as its events' `traceparent` says.
    pub trace_id: Option<String>,
}

/// Reads `job`'s events, for at most `within`.
pub async fn read(ctx: &Ctx, job: &JobId, within: Duration) -> Events {
    let filter = subjects::job_events(Some(job));
    let msgs = match ffleet_runtime::nats::follow::read(
        &ctx.js,
        ctx.retry,
        subjects::STREAM_EVENTS,
        &filter,
        READ_AT_MOST,
        within,
    )
    .await
    {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(job = %job, error = %e, "reading a job's events");
            return Events::default();
        }
    };
    let mut out = Events::default();
    let mut last_progress: Option<Row> = None;
    for m in &msgs {
        if out.trace_id.is_none() {
            out.trace_id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .and_then(|v| trace_id(v.as_str()));
        }
        let Some((ce, ev)) = serde_json::from_slice::<CloudEvent>(&m.payload)
            .ok()
            .and_then(|ce| JobEvent::from_cloudevent(&ce).ok().map(|ev| (ce, ev)))
        else {
            continue;
        };
        let at = ce.time.clone().unwrap_or_default();
        match &ev {
            JobEvent::SegmentDone(_) => out.segments += 1,
            JobEvent::Progress(_) => {
                out.progress += 1;
                last_progress = Some(row(at, &ev));
            }
            _ => {
                // The last progress before the end, in its place.
                if ev.is_terminal()
                    && let Some(p) = last_progress.take()
                {
                    out.rows.push(p);
                }
                out.rows.push(row(at, &ev));
            }
        }
    }
    out.rows.extend(last_progress);
    out
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
