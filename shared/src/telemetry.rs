//! Logging setup: structured `tracing` output, text or JSON, through a non-blocking writer so a
//! slow terminal or log shipper never stalls a service (records are dropped instead).

use crate::config::LogConfig;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Flushes buffered log records when dropped; keep it alive until exit.
pub struct Guard(#[allow(dead_code)] Option<WorkerGuard>);

/// Installs the global subscriber. `RUST_LOG` overrides the configured level. Later calls are
/// no-ops, which in-process clusters (CLI, tests) rely on.
pub fn init(cfg: &LogConfig) -> Guard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    let installed = if cfg.format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    Guard(installed.is_ok().then_some(guard))
}
