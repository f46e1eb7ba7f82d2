//! Process-level shutdown: one root cancellation token that SIGINT/SIGTERM fire.
//!
//! The first signal cancels the token and services drain; a second signal exits at once, for an
//! operator who does not want to wait. A signal during start-up ends it (`unless_stopped`):
//! start-up waits as long as it takes for a server, a stream, or a permission the credentials
//! lack, and none of those may keep a process from stopping.

use std::future::Future;
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

/// Runs the start-up step `step` (connecting, looking streams up, creating consumers, probing)
/// unless `shutdown` fires first: `None` then, the step dropped where it waits. A service that
/// gets `None` returns as from an ordinary stop, so a process asked to stop while still starting
/// exits 0: it did what it was asked and left nothing half-done, and the supervisor that sent
/// the signal expects no failure (a non-zero code would count a stop during a wait for the
/// server as a crash). Why it could not start is in the log already (the retries' warnings).
pub async fn unless_stopped<F: Future>(shutdown: &CancellationToken, step: F) -> Option<F::Output> {
    tokio::select! {
        // Checked first: once the stop has fired, no further step is begun, not even one that
        // would finish at once.
        biased;
        _ = shutdown.cancelled() => {
            tracing::info!("start-up interrupted by shutdown");
            None
        }
        out = step => Some(out),
    }
}
