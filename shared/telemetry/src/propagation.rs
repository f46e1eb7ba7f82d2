//! W3C trace context (`traceparent`, `tracestate`) in NATS message headers, through
//! OpenTelemetry's propagator API. The opentelemetry-nats crate pins old versions of both sides,
//! so this is the small injector/extractor pair over `async_nats::HeaderMap` it would give.

use async_nats::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes propagation fields into NATS headers.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

/// Reads propagation fields from NATS headers. NATS header names are case-sensitive on the wire
/// while W3C's are not, so a miss on the exact name falls back to a case-insensitive scan
/// (another system may well send `Traceparent`).
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.0.get(key) {
            return Some(v.as_str());
        }
        self.0
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
            .and_then(|(_, values)| values.first())
            .map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|(name, _)| AsRef::<str>::as_ref(name))
            .collect()
    }
}

/// Installs the W3C trace-context propagator process-wide (idempotent and cheap).
pub(super) fn install() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Adds the current span's trace context to outgoing headers (nothing when not tracing).
pub fn inject(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// The trace context a message arrived with (empty when it carried none).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(h) => {
            opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(h)))
        }
        None => Context::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn traceparent_and_tracestate_survive_a_round_trip_through_nats_headers() {
        install();
        let mut h = HeaderMap::new();
        h.insert(
            "Traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        h.insert("tracestate", "vendor=abc");
        let cx = extract(Some(&h));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.trace_state().header(), "vendor=abc");

        let mut out = HeaderMap::new();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(&mut out))
        });
        assert_eq!(
            out.get("traceparent").map(|v| v.as_str()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(
            out.get("tracestate").map(|v| v.as_str()),
            Some("vendor=abc")
        );
    }

    #[test]
    fn no_headers_no_context() {
        install();
        assert!(!extract(None).span().span_context().is_valid());
        assert!(
            !extract(Some(&HeaderMap::new()))
                .span()
                .span_context()
                .is_valid()
        );
    }
}
