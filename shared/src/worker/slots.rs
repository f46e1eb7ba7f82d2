//! The pull loop for work that holds slots (an encoder's cores or GPU sessions): a pool of
//! `total` slots takes a message only once a slot is free, and starts it only once every slot
//! it needs is held (the message kept alive meanwhile), so the node is never over-committed and
//! no message waits in a client buffer while its AckWait runs. Messages are handled
//! concurrently, each holding its slots until its outcome is applied.
//!
//! Some queues are taken first (re-issued attempts before the backlog): they are looked at with
//! a no-wait fetch before each long poll of the others, but at most once per `PRIORITY_CHECK`
//! while the backlog keeps every poll busy, since a no-wait fetch per message would double the
//! pull requests of a node turning over many short messages.
//!
//! A pool can be paused (an operator's drain): it takes nothing new until resumed, and a
//! message that arrives from a pull already out is handed back at once.

use super::{try_next, try_now};
use crate::nats::ack::{self, KeepAlive, Outcome};
use crate::nats::durable::Durable;
use crate::nats::pull::Puller;
use async_nats::jetstream::Message;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often a busy pool looks at its priority queues.
const PRIORITY_CHECK: Duration = Duration::from_secs(1);

/// Where one pool takes its messages from.
pub struct Queues {
    /// Taken before `backlog`, in this order (no-wait fetches).
    pub priority: Vec<Durable>,
    /// Long-polled in turns, in this order.
    pub backlog: Vec<Durable>,
    /// How long one round of long polls over the backlog waits in all.
    pub wait: Duration,
}

/// One pool's slots.
pub struct Slots {
    pub total: u32,
    /// How often a message waiting for more slots is kept alive (in-progress acks).
    pub keep_alive: Duration,
    /// While it reads `true` (an operator's drain), nothing new is taken; what runs finishes.
    pub paused: Option<watch::Receiver<bool>>,
    /// Messages taken and not yet finished (claiming, waiting for slots, running, being handed
    /// back), counted the moment a pull returns one: what a drain waits for.
    pub in_flight: Option<Arc<AtomicU32>>,
}

/// One message counted in `Slots::in_flight` until dropped.
struct Taken(Option<Arc<AtomicU32>>);

impl Taken {
    fn new(counter: &Option<Arc<AtomicU32>>) -> Self {
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::SeqCst);
        }
        Taken(counter.clone())
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Hands a message taken while the pool is paused straight back, for another node.
async fn hand_back(msg: &Message) {
    ack::finish(msg, Outcome::retry_after("node drained", Duration::ZERO)).await;
}

/// Whether the pool is paused now.
fn is_paused(paused: &Option<watch::Receiver<bool>>) -> bool {
    paused.as_ref().is_some_and(|p| *p.borrow())
}

/// Waits while the pool is paused; false when `shutdown` fired meanwhile.
async fn until_resumed(
    paused: &mut Option<watch::Receiver<bool>>,
    shutdown: &CancellationToken,
) -> bool {
    let Some(p) = paused else { return true };
    while *p.borrow_and_update() {
        tokio::select! {
            changed = p.changed() => if changed.is_err() { return true },
            _ = shutdown.cancelled() => return false,
        }
    }
    true
}

/// Serves `queues` with `slots` until `shutdown` fires and every message taken is finished.
/// `prepare` reads a message once, when it is taken: the slots it needs (clamped to 1..=total)
/// and what the handler gets beside it. `handler` gets the message, that, and the slots held.
pub async fn run<T, P, H, F>(
    queues: Queues,
    slots: Slots,
    shutdown: CancellationToken,
    prepare: P,
    handler: H,
) where
    T: Send + 'static,
    P: Fn(&Message) -> (u32, T),
    H: Fn(Message, T, u32) -> F,
    F: Future<Output = Outcome> + Send + 'static,
{
    let total = slots.total.max(1);
    let free = Arc::new(Semaphore::new(total as usize));
    // Long-poll the backlog in short turns, so a priority message waits at most one turn.
    let turn = (queues.wait / queues.backlog.len().max(1) as u32).min(Duration::from_secs(1));
    let mut running = JoinSet::new();
    let mut checked: Option<Instant> = None;
    let mut priority: Vec<Puller> = queues.priority.into_iter().map(Puller::new).collect();
    let mut backlog: Vec<Puller> = queues.backlog.into_iter().map(Puller::new).collect();
    let mut paused = slots.paused;
    while !shutdown.is_cancelled() {
        if !until_resumed(&mut paused, &shutdown).await {
            break;
        }
        let first = tokio::select! {
            p = free.clone().acquire_owned() => p.expect("semaphore open"),
            _ = shutdown.cancelled() => break,
        };
        // Paused while it waited for a free slot: wait for the resume instead.
        if is_paused(&paused) {
            continue;
        }
        let mut msg = None;
        if checked.is_none_or(|t| t.elapsed() >= PRIORITY_CHECK) {
            checked = Some(Instant::now());
            for q in &mut priority {
                if is_paused(&paused) {
                    break;
                }
                msg = try_now(q, &shutdown).await;
                if msg.is_some() {
                    // More may be waiting: look again next time.
                    checked = None;
                    break;
                }
            }
        }
        if msg.is_none() {
            for q in &mut backlog {
                if msg.is_some() || is_paused(&paused) {
                    break;
                }
                msg = try_next(q, turn, &shutdown).await;
                if msg.is_some() {
                    break;
                }
            }
        }
        let Some(msg) = msg else { continue };
        let taken = Taken::new(&slots.in_flight);
        if is_paused(&paused) {
            // Drained while the pull was out: handed back at once, for another node.
            hand_back(&msg).await;
            continue;
        }
        let (need, prepared) = prepare(&msg);
        let need = need.clamp(1, total);
        let rest = if need > 1 {
            let _keep = KeepAlive::start(&msg, slots.keep_alive);
            let more = free.clone().acquire_many_owned(need - 1);
            let rest = more.await.expect("semaphore open");
            if is_paused(&paused) {
                // Drained while it waited for its slots: it never started.
                hand_back(&msg).await;
                continue;
            }
            Some(rest)
        } else {
            None
        };
        let handled = handler(msg.clone(), prepared, need);
        running.spawn(async move {
            let outcome = handled.await;
            ack::finish(&msg, outcome).await;
            drop((first, rest, taken));
        });
        // Reap finished messages so the set does not grow without bound.
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}
