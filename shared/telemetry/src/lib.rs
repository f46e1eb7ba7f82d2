//! Telemetry setup: structured logs through a non-blocking writer, and, when an OTLP endpoint is
//! configured by the standard `OTEL_*` variables, OpenTelemetry traces, metrics and logs exported
//! over OTLP/HTTP (protobuf, the specification's default) or OTLP/gRPC, chosen per signal by
//! `OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL`. Without an endpoint no exporter, span layer or meter
//! is installed, so spans and instruments cost next to nothing.
//!
//! Service identity: every span ffleet opens carries `ffleet.service`, because an in-process
//! cluster (`ffleet transcode`, `up`, tests) runs all four services under one resource. A service
//! run as its own process also gets `service.name = ffleet-<service>` (unless `OTEL_SERVICE_NAME`
//! says otherwise).

pub mod config;
mod export;
mod logs;
pub mod metrics;
mod otlp_config;
pub mod propagation;
pub mod spans;

pub use logs::{JsonFormat, non_blocking};
pub use propagation::{extract, inject};

use crate::config::LogConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Who is logging, which decides where logs go by default and the OTel service name.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    /// One service as its own process (`ffleet run`, `ffleet-<service>`): JSON lines on stdout.
    Service(&'static str),
    /// A command run by a person (`transcode`, `up`, `submit`): text on stderr, leaving stdout
    /// to the command's own output, and only warnings unless `RUST_LOG` or a `log.level` other
    /// than the default asks for more. OTLP still gets records at the configured level: a quiet
    /// terminal is no reason to leave the collector without the job's logs.
    Command,
    /// A local cluster kept up by a person (`ffleet up`): text on stderr at the configured level.
    Cluster,
}

impl Role {
    fn service_name(self) -> String {
        match self {
            Role::Service(s) => format!("ffleet-{s}"),
            Role::Command | Role::Cluster => "ffleet".into(),
        }
    }
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether OTLP export is on in this process (gauges that need polling only run then).
pub fn enabled() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Flushes buffered log records and telemetry when dropped; keep it alive until exit.
pub struct Guard {
    _log: Option<WorkerGuard>,
    providers: Option<export::Providers>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.providers.take() {
            p.shutdown();
        }
    }
}

/// Installs the global subscriber (and, with an OTLP endpoint, the OpenTelemetry pipeline).
/// `RUST_LOG` overrides the configured level for logs; spans are kept at `info` whatever the log
/// level, so a quiet service is still traced; a command's console is quieter still (see `Role`). Later calls are no-ops, which in-process clusters
/// (CLI, tests) rely on. Must run inside a Tokio runtime (the gRPC exporter needs one).
pub fn init(cfg: &LogConfig, role: Role) -> Guard {
    propagation::install();
    let level = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&cfg.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let console_level = || match role {
        Role::Command if std::env::var_os("RUST_LOG").is_none() && cfg.level == "info" => {
            EnvFilter::new("warn")
        }
        _ => level(),
    };
    let to_stdout = matches!(role, Role::Service(_));
    let json = match cfg.format.as_str() {
        "json" => true,
        "text" => false,
        _ => to_stdout,
    };
    let (writer, guard) = if to_stdout {
        non_blocking(std::io::stdout())
    } else {
        non_blocking(std::io::stderr())
    };
    let console = if json {
        tracing_subscriber::fmt::layer()
            .event_format(JsonFormat)
            .with_writer(writer)
            .with_filter(console_level())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_filter(console_level())
            .boxed()
    };
    let providers = export::Providers::from_env(&role.service_name());
    let otel = providers.as_ref().map(|p| {
        // The exporters' own crates log through tracing too; never feed those back into OTLP.
        let quiet = Targets::new()
            .with_default(LevelFilter::TRACE)
            .with_target("opentelemetry", LevelFilter::OFF)
            .with_target("opentelemetry_sdk", LevelFilter::OFF)
            .with_target("opentelemetry_otlp", LevelFilter::OFF)
            .with_target("tonic", LevelFilter::OFF)
            .with_target("reqwest", LevelFilter::OFF)
            .with_target("h2", LevelFilter::OFF)
            .with_target("hyper", LevelFilter::OFF)
            .with_target("tower", LevelFilter::OFF);
        let spans = tracing_opentelemetry::layer()
            .with_tracer(p.tracer())
            .with_filter(quiet.clone().with_default(LevelFilter::INFO));
        let logs = opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
            p.logger_provider(),
        )
        .with_filter(level())
        .with_filter(quiet);
        spans.and_then(logs)
    });
    let installed = Registry::default()
        .with(console)
        .with(otel)
        .try_init()
        .is_ok();
    match (installed, providers) {
        (true, Some(p)) => {
            p.install_global();
            EXPORTING.store(true, Ordering::Relaxed);
            Guard {
                _log: Some(guard),
                providers: Some(p),
            }
        }
        (true, None) => Guard {
            _log: Some(guard),
            providers: None,
        },
        (false, p) => {
            // Not ours to keep: the process already has a pipeline.
            if let Some(p) = p {
                p.shutdown();
            }
            Guard {
                _log: None,
                providers: None,
            }
        }
    }
}
