//! The live encoder pool, built from `watch_all()` on the heartbeats bucket. Expired keys send no
//! watch event on nats-server 2.9, so liveness is judged by each entry's age, not by deletes.

use ffleet_shared::messages::{self, Heartbeat};
use ffleet_shared::nats::NatsError;
use ffleet_shared::nats::kv::Typed;
use ffleet_shared::{Capability, NodeId};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Pool {
    inner: Arc<Mutex<HashMap<NodeId, (Heartbeat, Instant)>>>,
    ttl: Duration,
}

impl Pool {
    /// Starts watching the bucket; the view fills as heartbeats arrive.
    pub async fn watch(
        workers: Typed<Heartbeat>,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> Result<Pool, NatsError> {
        let pool = Pool {
            inner: Arc::default(),
            ttl,
        };
        let mut watch = workers
            .store()
            .watch_all()
            .await
            .map_err(|e| NatsError::op("kv watch", e))?;
        let view = pool.clone();
        tokio::spawn(async move {
            loop {
                let entry = tokio::select! {
                    e = watch.next() => e,
                    _ = shutdown.cancelled() => return,
                };
                match entry {
                    Some(Ok(e)) => view.apply(&e),
                    Some(Err(err)) => tracing::warn!(error = %err, "heartbeat watch error"),
                    None => {
                        tracing::warn!("heartbeat watch ended");
                        return;
                    }
                }
            }
        });
        Ok(pool)
    }

    fn apply(&self, e: &async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Ok(node) = NodeId::new(e.key.as_str()) else {
            return;
        };
        let mut map = self.inner.lock().expect("pool lock");
        match e.operation {
            Operation::Put => match messages::decode::<Heartbeat>("heartbeat", &e.value) {
                Ok(hb) => {
                    // Age from the server's timestamp, so a replayed old entry starts out old.
                    let age = (time::OffsetDateTime::now_utc() - e.created)
                        .try_into()
                        .unwrap_or(Duration::ZERO);
                    let seen = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                    map.insert(node, (hb, seen));
                }
                Err(err) => tracing::warn!(node = %node, error = %err, "bad heartbeat ignored"),
            },
            Operation::Delete | Operation::Purge => {
                map.remove(&node);
            }
        }
    }

    /// Heartbeats of nodes seen within the TTL.
    pub fn live(&self) -> Vec<Heartbeat> {
        let mut map = self.inner.lock().expect("pool lock");
        map.retain(|_, (_, seen)| seen.elapsed() <= self.ttl * 10);
        map.values()
            .filter(|(_, seen)| seen.elapsed() <= self.ttl)
            .map(|(hb, _)| hb.clone())
            .collect()
    }

    /// Whether any live node offers `cap`.
    pub fn has(&self, cap: &Capability) -> bool {
        self.live().iter().any(|hb| hb.capabilities.contains(cap))
    }
}
