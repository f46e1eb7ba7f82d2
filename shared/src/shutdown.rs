//! Process-level shutdown: one root cancellation token that SIGINT/SIGTERM fire.
//!
//! The first signal cancels the token and services drain; a second signal exits at once, for an
//! operator who does not want to wait.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT or SIGTERM; the second one exits the process.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            if round == 0 {
                tracing::info!("shutdown requested, draining");
                t.cancel();
            } else {
                tracing::warn!("second signal, exiting now");
                std::process::exit(130);
            }
        }
    });
    token
}
