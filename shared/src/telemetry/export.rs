//! The OTLP pipeline: tracer, meter and logger providers exporting over gRPC, each batching on
//! its own thread with a bounded queue, so an unreachable collector costs dropped telemetry, never
//! a blocked or slower service. Configured only by the standard `OTEL_*` variables.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter};
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
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Export is on when an endpoint is set (generic or per signal) and the SDK is not disabled.
fn configured() -> bool {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    ]
    .iter()
    .any(|v| var(v).is_some())
}

impl Providers {
    /// `None` when no endpoint is configured, or the exporters cannot be built (reported on
    /// stderr: logging is not up yet, and a service runs fine without telemetry).
    pub(super) fn from_env(default_service_name: &str) -> Option<Providers> {
        if !configured() {
            return None;
        }
        match Self::build(default_service_name) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("ffleet: telemetry export disabled: {e}");
                None
            }
        }
    }

    fn build(
        default_service_name: &str,
    ) -> Result<Providers, opentelemetry_otlp::ExporterBuildError> {
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(default_service_name.to_owned());
        }
        let resource = resource.build();
        let tracer = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(SpanExporter::builder().with_tonic().build()?)
            .build();
        let meter = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_periodic_exporter(MetricExporter::builder().with_tonic().build()?)
            .build();
        let logger = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(LogExporter::builder().with_tonic().build()?)
            .build();
        Ok(Providers {
            tracer,
            meter,
            logger,
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

    /// Flushes and stops, waiting at most `SHUTDOWN_WAIT`, and not at all when the collector
    /// does not even accept a connection: the rest is given up.
    pub(super) fn shutdown(self) {
        let wait_for_it = collector_reachable();
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

/// Whether the traces endpoint accepts a TCP connection within `PROBE_WAIT` (refused or silent
/// collectors fail it at once or after that short wait). Unknown endpoints count as reachable.
fn collector_reachable() -> bool {
    const PROBE_WAIT: Duration = Duration::from_millis(200);
    let Some(endpoint) =
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return true;
    };
    let Some(addrs) = url::Url::parse(&endpoint).ok().and_then(|u| {
        let host = u.host_str()?.to_owned();
        let port = u.port_or_known_default()?;
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port)).ok()
    }) else {
        return true;
    };
    addrs
        .into_iter()
        .any(|a| std::net::TcpStream::connect_timeout(&a, PROBE_WAIT).is_ok())
}
