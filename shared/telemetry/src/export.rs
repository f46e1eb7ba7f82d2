//! The OTLP pipeline: tracer, meter and logger providers exporting over gRPC or HTTP/protobuf
//! (per signal, see `otlp_config`), each batching on its own thread with a bounded queue, so an
//! unreachable collector costs dropped telemetry, never a blocked or slower service. HTTP goes
//! through reqwest's blocking client (plain HTTP, no system OpenSSL), which suits the SDK's
//! export threads: they run no async runtime of their own.

use super::otlp_config::{OtlpConfig, Signal, Transport};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{
    ExporterBuildError, LogExporter, MetricExporter, Protocol, SpanExporter, WithExportConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};
use std::time::Duration;

/// How long a stopping process waits for its last telemetry to get out. A healthy local collector
/// takes milliseconds; a dead one would otherwise hold every exit for the export timeout.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(1500);

pub(super) struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: SdkLoggerProvider,
    /// The exported signals' endpoints, probed at exit.
    endpoints: Vec<String>,
}

/// Builds one signal's exporter for its transport. The endpoint, headers, timeout and
/// compression come from the environment inside opentelemetry-otlp.
macro_rules! exporter {
    ($builder:expr, $transport:expr) => {
        match $transport {
            Transport::Grpc => $builder.with_tonic().with_protocol(Protocol::Grpc).build(),
            Transport::HttpProtobuf => $builder
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build(),
        }
    };
}

impl Providers {
    /// `None` when no signal is exported, or the exporters cannot be built. Problems go to
    /// stderr (logging is not up yet, and a service runs fine without telemetry).
    pub(super) fn from_env(default_service_name: &str) -> Option<Providers> {
        let cfg = OtlpConfig::from_env();
        for w in &cfg.warnings {
            eprintln!("{w}");
        }
        if cfg.signals.is_empty() {
            return None;
        }
        match Self::build(default_service_name, &cfg) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("ffleet: telemetry export disabled: {e}");
                None
            }
        }
    }

    /// A provider per signal; those without an endpoint get no exporter (they still hand out
    /// tracers, meters and loggers, which then cost next to nothing).
    fn build(
        default_service_name: &str,
        cfg: &OtlpConfig,
    ) -> Result<Providers, ExporterBuildError> {
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
            resource = resource.with_service_name(default_service_name.to_owned());
        }
        let resource = resource.build();
        let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
        if let Some(s) = cfg.get(Signal::Traces) {
            tracer = tracer.with_batch_exporter(exporter!(SpanExporter::builder(), s.transport)?);
        }
        let mut meter = SdkMeterProvider::builder().with_resource(resource.clone());
        if let Some(s) = cfg.get(Signal::Metrics) {
            meter =
                meter.with_periodic_exporter(exporter!(MetricExporter::builder(), s.transport)?);
        }
        let mut logger = SdkLoggerProvider::builder().with_resource(resource);
        if let Some(s) = cfg.get(Signal::Logs) {
            logger = logger.with_batch_exporter(exporter!(LogExporter::builder(), s.transport)?);
        }
        let endpoints = cfg.signals.iter().map(|s| s.endpoint.clone()).collect();
        Ok(Providers {
            tracer: tracer.build(),
            meter: meter.build(),
            logger: logger.build(),
            endpoints,
        })
    }

    pub(super) fn tracer(&self) -> Tracer {
        self.tracer.tracer("ffleet")
    }

    pub(super) fn logger_provider(&self) -> &SdkLoggerProvider {
        &self.logger
    }

    /// Makes these the process-wide providers (for `global::meter` and friends).
    pub(super) fn install_global(&self) {
        opentelemetry::global::set_tracer_provider(self.tracer.clone());
        opentelemetry::global::set_meter_provider(self.meter.clone());
    }

    /// Flushes and stops, waiting at most `SHUTDOWN_WAIT`, and not at all when no collector
    /// even accepts a connection: the rest is given up.
    pub(super) fn shutdown(self) {
        let wait_for_it = collector_reachable(&self.endpoints);
        let (done, wait) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = self.tracer.shutdown_with_timeout(SHUTDOWN_WAIT);
            let _ = self.meter.shutdown_with_timeout(SHUTDOWN_WAIT);
            let _ = self.logger.shutdown_with_timeout(SHUTDOWN_WAIT);
            let _ = done.send(());
        });
        if wait_for_it {
            let _ = wait.recv_timeout(SHUTDOWN_WAIT);
        }
    }
}

/// Whether a collector at any of `endpoints` accepts a TCP connection within `PROBE_WAIT`
/// (refused or silent collectors fail it at once or after that short wait; each address is tried
/// once, however many signals share it). The same probe serves gRPC and HTTP, both being TCP.
/// An endpoint it cannot make sense of counts as reachable.
fn collector_reachable(endpoints: &[String]) -> bool {
    const PROBE_WAIT: Duration = Duration::from_millis(200);
    let mut addrs = std::collections::BTreeSet::new();
    for endpoint in endpoints {
        let Some(resolved) = url::Url::parse(endpoint.trim()).ok().and_then(|u| {
            let host = u.host_str()?.to_owned();
            let port = u.port_or_known_default()?;
            std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).ok()
        }) else {
            return true;
        };
        addrs.extend(resolved);
    }
    addrs
        .into_iter()
        .any(|a| std::net::TcpStream::connect_timeout(&a, PROBE_WAIT).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_waits_only_for_a_collector_that_accepts_connections() {
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open_port = open.local_addr().unwrap().port();
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dead = format!("http://127.0.0.1:{closed_port}");
        let live = format!("http://127.0.0.1:{open_port}/v1/logs");
        assert!(!collector_reachable(std::slice::from_ref(&dead)));
        assert!(collector_reachable(&[dead.clone(), live]));
        assert!(collector_reachable(&[dead, "not a url".into()]));
    }
}
