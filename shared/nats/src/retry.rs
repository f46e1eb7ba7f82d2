//! Riding out a JetStream leader election or a lost server: every JetStream operation that can
//! time out while a cluster elects a new leader (or forms at start) is retried here with capped,
//! jittered backoff, and logged while it waits, instead of failing its caller on the first
//! timeout.
//!
//! How long is a policy, not a call-site choice: services wait for JetStream at start for as long
//! as it takes (`Patience::Forever`), client commands up to `nats.startup_wait_secs`, and a single
//! operation at run time up to `nats.op_retry_secs` (`Policy::window`), after which the caller
//! sees the error and takes its usual transient-failure path (a delayed nak, the next round).
//!
//! Each try is bounded by a timeout of its own (`Policy::try_timeout`):
//! `nats.first_try_timeout_secs` for the first `SHORT_TRIES`, then doubled on every try up to
//! `nats.request_timeout_secs`. A request sent towards a stream leader that just died, or while
//! a new one is elected (several seconds), is never answered; with one long timeout every
//! operation in flight waited it out whole, and with doubling from the first try one lost
//! request still cost the next try's longer wait.
//! Sending again is safe: creates and revision-checked updates recognise their own earlier
//! write (`kv`), publishes carry message ids the stream de-duplicates, and reads change nothing.
//!
//! The `Policy` is a value, not process state: each handle that does operations (a `kv::Typed`,
//! an `ObjectStore`, a service's `Ctx`) carries the one its configuration asks for, so services
//! run in one process (`ffleet up`, the tests) each retry by their own configuration.

use super::{BoxError, NatsError};
use crate::config::NatsConfig;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long to keep trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Until it works (services at start: a service that gives up leaves the fleet broken).
    Forever,
    /// Up to this long, then the last error.
    For(Duration),
}

tokio::task_local! {
    /// Set while a client's request runs (`as_client`).
    static CLIENT: ();
}

/// Runs `fut` as a client's request: a store without space is reported at once
/// (`NatsError::StoreFull`), because a person or another system decides what to do about it,
/// where a service waits for space. Scoped to the task, not the process: `ffleet transcode`
/// runs services beside its own submission.
pub async fn as_client<F: Future>(fut: F) -> F::Output {
    CLIENT.scope((), fut).await
}

/// Whether the running task is a client's request (`as_client`).
pub fn is_client() -> bool {
    CLIENT.try_with(|_| ()).is_ok()
}

/// While the store stays full, one warning per this long in the whole process: every
/// operation of every service meets the same refusal.
const FULL_LOG_EVERY: Duration = Duration::from_secs(30);
/// When the last store-full warning was logged (ms since `EPOCH`), 0: never.
static FULL_LOGGED_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Logs that the store is full, at most once per `FULL_LOG_EVERY` in this process.
pub fn warn_store_full(op: &'static str, what: &str, err: &dyn std::fmt::Display) {
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let last = FULL_LOGGED_MS.load(Ordering::Relaxed);
    if (last == 0 || now.saturating_sub(last) >= FULL_LOG_EVERY.as_millis() as u64)
        && FULL_LOGGED_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            op,
            what,
            error = %err,
            "jetstream store is full: waiting for space (free space on the nats server or raise its max_file_store)"
        );
    }
}

/// Whether `op` stores a message, where an insufficient-resources refusal (10023) means no room.
/// Creating a stream or consumer gets the same code from nats-server 2.9 when it cannot place
/// the replicas (a node down, a cluster still forming): that is waited out as an election is.
fn writes(op: &str) -> bool {
    matches!(op, "publish" | "kv create" | "kv update" | "kv delete")
}

/// Tries that wait the first try's timeout before the timeouts grow: an election lasts 4 to 9
/// s, so these see one through.
const SHORT_TRIES: u32 = 4;

/// How run-time operations retry: the window each may take (`nats.op_retry_secs`) and each try's
/// timeout (`nats.first_try_timeout_secs` growing to `nats.request_timeout_secs`). Built from a
/// configuration (`from_config`) and carried by whatever does the operation (a `kv::Typed`, an
/// `ObjectStore`, the service's `Ctx`), so services in one process each keep their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    window: Duration,
    first_try: Duration,
    last_try: Duration,
}

impl Default for Policy {
    /// The defaults of `NatsConfig`: a 60 s window, tries of 2 s growing to 10 s.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            first_try: Duration::from_secs(2),
            last_try: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// The policy `cfg` asks for: `nats.op_retry_secs` as the window, and per-try timeouts from
    /// `nats.first_try_timeout_secs` (never above the last) to `nats.request_timeout_secs`.
    pub fn from_config(cfg: &NatsConfig) -> Self {
        let last = (cfg.request_timeout_secs * 1000.0).max(1.0) as u64;
        let first = ((cfg.first_try_timeout_secs * 1000.0).max(1.0) as u64).min(last);
        Self {
            window: Duration::from_millis((cfg.op_retry_secs * 1000.0) as u64),
            first_try: Duration::from_millis(first),
            last_try: Duration::from_millis(last),
        }
    }

    /// The run-time retry window (`nats.op_retry_secs`).
    pub fn window(&self) -> Patience {
        Patience::For(self.window)
    }

    /// How long try `n` (0 first) waits for an answer: the first try's timeout for the first
    /// `SHORT_TRIES`, then doubled per try, up to the request timeout.
    pub fn try_timeout(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(SHORT_TRIES - 1).min(16);
        self.first_try
            .saturating_mul(1u32 << doublings)
            .min(self.last_try)
    }
}

/// First pause between tries; doubled up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// While an operation keeps failing, one warning per this long (not one per try).
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Pause before try `n + 1` (n ≥ 1): exponential, capped, with up to 25 % jitter so that a fleet
/// of services does not retry in lockstep against a freshly elected leader.
pub fn backoff(n: u32) -> Duration {
    let base = FIRST_PAUSE
        .saturating_mul(1u32 << n.saturating_sub(1).min(10))
        .min(MAX_PAUSE);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * base.as_millis() as u64 / 1024;
    base + Duration::from_millis(jitter)
}

/// Runs `attempt` until it succeeds or `patience` runs out, each try bounded by `policy`'s
/// timeout for it. `attempt` gets the number of the try (0 first), so an operation whose earlier
/// try may have taken effect unseen (a timed-out create or update) can tell. `what` names what
/// is waited for in the logs.
pub async fn retry<T, E, F, Fut>(
    policy: Policy,
    op: &'static str,
    what: &str,
    patience: Patience,
    attempt: F,
) -> Result<T, NatsError>
where
    E: Into<BoxError>,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    retry_unless(policy, op, what, patience, attempt, |_| false).await
}

/// Like `retry`, for operations whose try may rightly take longer than a short timeout (a key
/// listing, creating a replicated stream): each try is bounded by `policy`'s request timeout
/// only.
pub async fn retry_whole<T, E, F, Fut>(
    policy: Policy,
    op: &'static str,
    what: &str,
    patience: Patience,
    attempt: F,
) -> Result<T, NatsError>
where
    E: Into<BoxError>,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    run(policy, op, what, patience, attempt, |_| false, false).await
}

/// Like `retry`, but an error for which `permanent` holds is returned at once: no election or
/// reconnect will make a refused message acceptable.
pub async fn retry_unless<T, E, F, Fut>(
    policy: Policy,
    op: &'static str,
    what: &str,
    patience: Patience,
    attempt: F,
    permanent: impl Fn(&E) -> bool,
) -> Result<T, NatsError>
where
    E: Into<BoxError>,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    run(policy, op, what, patience, attempt, permanent, true).await
}

/// A try that got no answer within its timeout.
#[derive(Debug, thiserror::Error)]
#[error("no answer within {0:?}")]
struct NoAnswer(Duration);

/// The retry loop; `short_tries`: bound each try by `policy.try_timeout`, else by the request
/// timeout.
async fn run<T, E, F, Fut>(
    policy: Policy,
    op: &'static str,
    what: &str,
    patience: Patience,
    mut attempt: F,
    permanent: impl Fn(&E) -> bool,
    short_tries: bool,
) -> Result<T, NatsError>
where
    E: Into<BoxError>,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut logged = started;
    let mut n = 0u32;
    // Held while this operation has failed more than once; dropped on every way out (success,
    // refusal, giving up, or the caller dropping this future).
    let mut _waiting = None;
    loop {
        let limit = if short_tries {
            policy.try_timeout(n)
        } else {
            policy.try_timeout(u32::MAX)
        };
        // `full`: a write refused for want of space (`is_store_full`), said once per 30 s for the
        // whole process (`warn_store_full`) instead of per operation.
        let (err, full) = match tokio::time::timeout(limit, attempt(n)).await {
            Ok(Ok(v)) => {
                if n > 0 {
                    tracing::info!(
                        op,
                        what,
                        tries = n + 1,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "jetstream operation succeeded after retrying"
                    );
                }
                return Ok(v);
            }
            Ok(Err(e)) if permanent(&e) => {
                let e = e.into();
                tracing::warn!(op, what, error = %e, "jetstream operation refused");
                return Err(NatsError::Op { op, source: e });
            }
            Ok(Err(e)) => {
                let err: BoxError = e.into();
                let full = writes(op) && super::is_store_full(&*err);
                if full && is_client() {
                    tracing::debug!(op, what, error = %err, "jetstream store is full");
                    return Err(NatsError::StoreFull { op, source: err });
                }
                if full {
                    warn_store_full(op, what, &err);
                }
                (err, full)
            }
            Err(_) => {
                super::ops::count(super::ops::Op::TryTimedOut);
                (Box::new(NoAnswer(limit)) as BoxError, false)
            }
        };
        n += 1;
        let pause = backoff(n);
        if let Patience::For(limit) = patience
            && started.elapsed() + pause > limit
        {
            if full {
                // The caller says what it does next.
                tracing::debug!(op, what, tries = n, error = %err, "jetstream operation gave up");
            } else {
                tracing::warn!(op, what, tries = n, error = %err, "jetstream operation gave up");
            }
            return Err(NatsError::Op { op, source: err });
        }
        if n == 1 {
            tracing::debug!(op, what, error = %err, "jetstream operation failed, retrying");
        } else if n == 2 {
            _waiting = Some(crate::health::waiting_for_jetstream(&format!(
                "{op} {what}"
            )));
        } else if logged.elapsed() >= LOG_EVERY && !full {
            logged = Instant::now();
            tracing::warn!(
                op,
                what,
                tries = n,
                waited_secs = started.elapsed().as_secs(),
                error = %err,
                "waiting for jetstream"
            );
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tries_stay_short_through_an_election_then_grow_to_the_request_timeout() {
        let policy = Policy::default();
        let ms = |n| policy.try_timeout(n).as_millis();
        assert_eq!((ms(0), ms(1), ms(2), ms(3)), (2_000, 2_000, 2_000, 2_000));
        assert_eq!((ms(4), ms(5), ms(6)), (4_000, 8_000, 10_000));
        assert_eq!(ms(u32::MAX), 10_000);
        assert_eq!(policy.window(), Patience::For(Duration::from_secs(60)));
        assert_eq!(Policy::from_config(&NatsConfig::default()), policy);
    }

    #[test]
    fn the_first_try_is_never_longer_than_the_request_timeout() {
        let policy = Policy::from_config(&NatsConfig {
            first_try_timeout_secs: 5.0,
            request_timeout_secs: 3.0,
            op_retry_secs: 20.0,
            ..NatsConfig::default()
        });
        assert_eq!(policy.try_timeout(0), Duration::from_secs(3));
        assert_eq!(policy.try_timeout(u32::MAX), Duration::from_secs(3));
        assert_eq!(policy.window(), Patience::For(Duration::from_secs(20)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= FIRST_PAUSE && backoff(1) < FIRST_PAUSE * 2);
        assert!(backoff(3) >= FIRST_PAUSE * 4);
        for n in [8, 20, 1000] {
            assert!(backoff(n) >= MAX_PAUSE && backoff(n) <= MAX_PAUSE * 5 / 4);
        }
    }

    #[tokio::test]
    async fn a_full_store_is_waited_out_by_services_and_reported_at_once_to_clients() {
        let full = || super::super::api_error(503, 10023, "insufficient resources");
        let started = Instant::now();
        let err = as_client(retry(
            Policy::default(),
            "publish",
            "x",
            Patience::Forever,
            |_| async { Err::<(), _>(full()) },
        ))
        .await
        .unwrap_err();
        assert!(err.is_store_full(), "{err}");
        assert!(err.to_string().contains("store is full"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // A service's call keeps trying until space returns.
        let got = retry(
            Policy::default(),
            "publish",
            "x",
            Patience::Forever,
            |n| async move { if n < 3 { Err(full()) } else { Ok(n) } },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
        assert!(!is_client());
    }

    #[tokio::test]
    async fn retries_until_success_then_gives_up_after_the_window() {
        let got = retry(
            Policy::default(),
            "test",
            "x",
            Patience::Forever,
            |n| async move { if n < 3 { Err("not yet") } else { Ok(n) } },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
        let started = Instant::now();
        let err = retry(
            Policy::default(),
            "test",
            "x",
            Patience::For(Duration::from_millis(300)),
            |_| async { Err::<(), _>("down") },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("down"), "{err}");
        assert!(started.elapsed() <= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn two_policies_in_one_process_keep_their_own_try_timeouts_and_windows() {
        let quick = Policy::from_config(&NatsConfig {
            first_try_timeout_secs: 0.05,
            request_timeout_secs: 0.2,
            op_retry_secs: 0.3,
            ..NatsConfig::default()
        });
        let patient = Policy::default();
        assert_eq!(quick.try_timeout(0), Duration::from_millis(50));
        assert_eq!(quick.try_timeout(u32::MAX), Duration::from_millis(200));
        assert_eq!(quick.window(), Patience::For(Duration::from_millis(300)));
        assert_eq!(patient.try_timeout(0), Duration::from_secs(2));
        assert_eq!(patient.window(), Patience::For(Duration::from_secs(60)));
        // Side by side: tries that are never answered give up after the quick policy's window,
        // while the patient policy's first try, failing after a second, is still waiting, and
        // its second try (past the quick window) succeeds.
        let started = Instant::now();
        let quick_run = async {
            let got = retry(quick, "test", "quick", quick.window(), |_| {
                std::future::pending::<Result<(), &str>>()
            })
            .await;
            (got, started.elapsed())
        };
        let patient_run = async {
            let got = retry(
                patient,
                "test",
                "patient",
                patient.window(),
                |n| async move {
                    if n > 0 {
                        return Ok(n);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    Err("not yet")
                },
            )
            .await;
            (got, started.elapsed())
        };
        let ((gave_up, gave_up_after), (answered, answered_after)) =
            tokio::join!(quick_run, patient_run);
        let err = gave_up.unwrap_err();
        assert!(err.to_string().contains("no answer within 50ms"), "{err}");
        assert!(gave_up_after < Duration::from_secs(1), "{gave_up_after:?}");
        assert_eq!(answered.unwrap(), 1);
        assert!(
            answered_after >= Duration::from_secs(1),
            "{answered_after:?}"
        );
    }
}
