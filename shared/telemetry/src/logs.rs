//! Log records as JSON lines carrying the active trace and span ids, written through a lossy
//! non-blocking writer: a slow stdout or log shipper drops records instead of stalling a service.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Records buffered for the writer thread before new ones are dropped.
const BUFFERED_RECORDS: usize = 64 * 1024;

/// A writer that hands lines to a background thread and never blocks the caller.
pub fn non_blocking<W: std::io::Write + Send + 'static>(w: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_RECORDS)
        .thread_name("ffleet-log")
        .finish(w)
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, the event's fields,
/// `span`, and `trace_id`/`span_id` when a sampled or remote trace is active.
pub struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut map = Map::new();
        map.insert(
            "timestamp".into(),
            ffleet_protocol::time::now_rfc3339().into(),
        );
        map.insert("level".into(), meta.level().as_str().into());
        map.insert("target".into(), meta.target().into());
        event.record(&mut Fields(&mut map));
        if let Some(span) = ctx.lookup_current() {
            map.insert("span".into(), span.name().into());
        }
        let cx = opentelemetry::Context::current();
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            map.insert("trace_id".into(), sc.trace_id().to_string().into());
            map.insert("span_id".into(), sc.span_id().to_string().into());
        }
        let line = serde_json::to_string(&Value::Object(map)).map_err(|_| fmt::Error)?;
        writeln!(w, "{line}")
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_f64(&mut self, f: &Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), v.to_string().into());
    }
    fn record_debug(&mut self, f: &Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_are_json_lines_with_structured_fields() {
        let buf = Buf::default();
        let sink = buf.clone();
        let sub = tracing_subscriber::fmt()
            .event_format(JsonFormat)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let _s = tracing::info_span!("job").entered();
            tracing::info!(job = "j1", frames = 30_u64, "split done");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["message"], "split done");
        assert_eq!(v["job"], "j1");
        assert_eq!(v["frames"], 30);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["span"], "job");
    }
}
