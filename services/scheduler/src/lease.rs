//! Leader election over a KV lease, so that several scheduler replicas can run and exactly one
//! routes, sweeps and reconciles at a time.
//!
//! The lease bucket keeps one revision per key and drops it after `lease_ttl`. A replica leads
//! once its `create` succeeds, renews with revision-checked `update`s every third of the TTL,
//! and stops leading the moment a renewal fails: whoever wrote in between holds the lease now.
//! The revision is the fencing token; the leader's work itself is revision-checked too, so a
//! leader that has not yet noticed its loss cannot corrupt records. A clean stop deletes the
//! lease so a follower takes over at once instead of after the TTL.

use async_nats::jetstream::kv::Store;
use ffleet_shared::nats::kv;
use ffleet_shared::nats::retry::Patience;
use ffleet_shared::subjects;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a follower tries to take the lease: often enough that takeover lands close to the
/// moment the old lease expires.
fn poll_every(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// Runs `lead` whenever this replica holds the lease, until `shutdown` fires. `lead` gets a
/// token that fires when leadership ends (lost or shutting down) and must return soon after.
pub async fn run<F, Fut>(
    leases: Store,
    holder: String,
    ttl: Duration,
    shutdown: CancellationToken,
    mut lead: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    let key = subjects::LEASE_SCHEDULER;
    let mut waiting_since = Instant::now();
    while !shutdown.is_cancelled() {
        // A create that timed out in an election but landed is recognised as ours.
        let tried = kv::create(
            &leases,
            key,
            holder.clone().into(),
            Patience::For(poll_every(ttl)),
        );
        let rev = match tried.await {
            Ok(Some(rev)) => rev,
            Ok(None) | Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(poll_every(ttl)) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        tracing::info!(
            holder = %holder,
            waited_ms = waiting_since.elapsed().as_millis() as u64,
            "scheduler leadership acquired"
        );
        let term = shutdown.child_token();
        let renew = tokio::spawn(renew(
            leases.clone(),
            holder.clone(),
            rev,
            ttl,
            term.clone(),
        ));
        lead(term.clone()).await;
        term.cancel();
        let last = renew.await.ok().flatten();
        if shutdown.is_cancelled() {
            if let Some(rev) = last {
                // Hand over at once; fails harmlessly if someone else holds it by now.
                let _ = leases.delete_expect_revision(key, Some(rev)).await;
            }
            tracing::info!(holder = %holder, "scheduler leadership released");
        } else {
            tracing::warn!(holder = %holder, "scheduler leadership lost");
        }
        waiting_since = Instant::now();
    }
}

/// Renews until `term` fires (returns the last revision held) or a renewal fails (cancels
/// `term` and returns `None`).
async fn renew(
    leases: Store,
    holder: String,
    mut rev: u64,
    ttl: Duration,
    term: CancellationToken,
) -> Option<u64> {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    let started = Instant::now();
    let mut renewed = started;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = term.cancelled() => return Some(rev),
        }
        if renewed.elapsed() >= ttl {
            // This process was frozen past the TTL: another replica may have led meanwhile.
            tracing::warn!(holder = %holder, "lease renewal overdue, giving up leadership");
            term.cancel();
            return None;
        }
        // Retried through an election, but only while the lease would still be ours.
        let patience = Patience::For((ttl * 5 / 6).saturating_sub(renewed.elapsed()));
        let key = subjects::LEASE_SCHEDULER;
        match kv::update(&leases, key, holder.clone().into(), rev, patience).await {
            Ok(Some(r)) => {
                rev = r;
                renewed = Instant::now();
            }
            Ok(None) => {
                tracing::warn!(holder = %holder, "lease taken over by another replica");
                term.cancel();
                return None;
            }
            Err(e) => {
                tracing::warn!(holder = %holder, error = %e, "lease renewal failed");
                term.cancel();
                return None;
            }
        }
    }
}
