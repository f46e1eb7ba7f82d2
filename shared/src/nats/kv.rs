//! Typed KV records: JSON values with a schema version, read with their revision and written
//! with `create` (must not exist) or `update` (must still be at the revision read). `modify`
//! wraps the read–decide–write loop that every state change goes through.

use super::NatsError;
use crate::messages::{self, DecodeError, Versioned};
use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{what} {key}: gave up after {tries} conflicting updates")]
    Contended {
        what: &'static str,
        key: String,
        tries: u32,
    },
}

/// A bucket whose values are `T`.
#[derive(Clone)]
pub struct Typed<T> {
    store: Store,
    what: &'static str,
    _t: PhantomData<fn() -> T>,
}

/// What a `modify` closure decided.
pub enum Change<T, R> {
    /// Write this value, then return `R`.
    Write(T, R),
    /// Leave the record as it is and return `R`.
    Keep(R),
}

impl<T> Typed<T>
where
    T: Serialize + DeserializeOwned + Versioned,
{
    pub fn new(store: Store, what: &'static str) -> Self {
        Self {
            store,
            what,
            _t: PhantomData,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The value and its revision, or `None` if absent (or deleted).
    pub async fn get(&self, key: &str) -> Result<Option<(T, u64)>, KvError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| NatsError::op("kv get", e))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some((messages::decode(self.what, &e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Creates the key; `None` if it already exists.
    pub async fn create(&self, key: &str, value: &T) -> Result<Option<u64>, KvError> {
        match self.store.create(key, messages::encode(value)).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(NatsError::op("kv create", e).into()),
        }
    }

    /// Writes if the key is still at `revision`; `None` if someone wrote in between.
    pub async fn update(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<Option<u64>, KvError> {
        match self
            .store
            .update(key, messages::encode(value), revision)
            .await
        {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(NatsError::op("kv update", e).into()),
        }
    }

    /// Unconditional write (heartbeats).
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, KvError> {
        self.store
            .put(key, messages::encode(value))
            .await
            .map_err(|e| NatsError::op("kv put", e).into())
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store
            .delete(key)
            .await
            .map_err(|e| NatsError::op("kv delete", e).into())
    }

    /// Read–decide–write with retries on conflict. `decide` sees the current value (or `None`)
    /// and may be called several times; it must not have side effects.
    pub async fn modify<R>(
        &self,
        key: &str,
        mut decide: impl FnMut(Option<&T>) -> Change<T, R>,
    ) -> Result<R, KvError> {
        const TRIES: u32 = 50;
        for attempt in 0..TRIES {
            let current = self.get(key).await?;
            let (value, rev) = match current {
                Some((v, r)) => (Some(v), Some(r)),
                None => (None, None),
            };
            match decide(value.as_ref()) {
                Change::Keep(r) => return Ok(r),
                Change::Write(new, r) => {
                    let written = match rev {
                        Some(rev) => self.update(key, &new, rev).await?,
                        None => self.create(key, &new).await?,
                    };
                    if written.is_some() {
                        return Ok(r);
                    }
                }
            }
            // Lost a race: back off a little, with jitter, and look again.
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 8);
            tokio::time::sleep(Duration::from_millis(
                2 * u64::from(attempt.min(10)) + jitter,
            ))
            .await;
        }
        Err(KvError::Contended {
            what: self.what,
            key: key.into(),
            tries: TRIES,
        })
    }

    /// Every key in the bucket (status listings, reconciliation).
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        use futures::TryStreamExt;
        let keys = self
            .store
            .keys()
            .await
            .map_err(|e| NatsError::op("kv keys", e))?;
        keys.try_collect()
            .await
            .map_err(|e| NatsError::op("kv keys", e).into())
    }
}

/// Follows every key of `store` from its current values on, calling `apply` for each entry,
/// until `shutdown` fires: how services keep a live view of a bucket.
pub async fn follow(
    store: &Store,
    shutdown: tokio_util::sync::CancellationToken,
    what: &'static str,
    mut apply: impl FnMut(&async_nats::jetstream::kv::Entry) + Send + 'static,
) -> Result<(), NatsError> {
    use futures::StreamExt;
    let mut watch = store
        .watch_all()
        .await
        .map_err(|e| NatsError::op("kv watch", e))?;
    tokio::spawn(async move {
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = shutdown.cancelled() => return,
            };
            match entry {
                Some(Ok(e)) => apply(&e),
                Some(Err(err)) => tracing::warn!(bucket = what, error = %err, "kv watch error"),
                None => {
                    tracing::warn!(bucket = what, "kv watch ended");
                    return;
                }
            }
        }
    });
    Ok(())
}
