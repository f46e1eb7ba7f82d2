//! Typed KV records: JSON values with a schema version, read with their revision and written
//! with `create` (must not exist) or `update` (must still be at the revision read). `modify`
//! wraps the read–decide–write loop that every state change goes through.
//!
//! In a cluster any of these calls can time out while a bucket's stream elects a new leader:
//! each is retried under the retry policy its caller carries (a `Typed` holds the one it was
//! built with: `retry::Policy`). A create or update whose earlier try timed out may have
//! been applied unseen; its retry then meets "already exists" or "wrong last revision", so the
//! current entry is read back, and if it holds exactly the bytes this caller wrote, the write
//! was this caller's. Watches (`follow`) are rebuilt from the last revision they delivered.
//!
//! KV revisions only grow, but a read in a cluster can come back older than what the reader
//! knows (a new stream leader still applying its log after an election). `get_at_least` reads
//! until the entry is at least at a revision the caller knows of, and `modify_known` never
//! decides on a read older than the copy it started from or a revision that refused its write.

use super::retry::{self, Patience, Policy};
use super::{BoxError, NatsError};
use async_nats::jetstream::kv::{CreateErrorKind, Entry, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use ffleet_protocol::messages::{self, DecodeError, Versioned};
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
    /// Every read for the caller's patience came back older than a revision the caller knows
    /// of: the server it reads from has not caught up. Nothing may be decided on such a read.
    #[error("{what} {key}: reads stayed older than revision {floor} (last read at {got})")]
    Behind {
        what: &'static str,
        key: String,
        floor: u64,
        /// The revision of the last read (0: no entry).
        got: u64,
    },
}

/// How long `modify_known` reads again while the entry reads older than what it knows.
const BEHIND_PATIENCE: Duration = Duration::from_secs(10);

/// How long a key listing may go without finishing before it is started again.
const LIST_STALL: Duration = Duration::from_secs(5);

/// A bucket whose values are `T`, and how its operations retry.
#[derive(Clone)]
pub struct Typed<T> {
    store: Store,
    what: &'static str,
    policy: Policy,
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
    pub fn new(store: Store, what: &'static str, policy: Policy) -> Self {
        Self {
            store,
            what,
            policy,
            _t: PhantomData,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How this bucket's operations retry (for the free functions below: `follow`).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// `entry` under this bucket's policy and run-time window.
    async fn entry(&self, key: &str) -> Result<Option<Entry>, NatsError> {
        entry(&self.store, self.policy, key, self.policy.window()).await
    }

    /// The value and its revision, or `None` if absent (or deleted).
    pub async fn get(&self, key: &str) -> Result<Option<(T, u64)>, KvError> {
        match self.entry(key).await? {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some((messages::decode(self.what, &e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// The value, its revision and when the server stored it (the server's clock: a value's
    /// own timestamps are its writer's clock, which may be off), or `None` if absent.
    pub async fn get_stamped(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64, time::OffsetDateTime)>, KvError> {
        match self.entry(key).await? {
            Some(e) if e.operation == Operation::Put => Ok(Some((
                messages::decode(self.what, &e.value)?,
                e.revision,
                e.created,
            ))),
            _ => Ok(None),
        }
    }

    /// The value and its revision once a read shows the entry at revision `floor` or later
    /// (a revision the caller wrote or read itself), read again with backoff for up to
    /// `patience` (zero: one read); `None` if the key was deleted at such a revision, or is gone
    /// altogether (`purged`). An entry that stays older is `KvError::Behind`.
    pub async fn get_at_least(
        &self,
        key: &str,
        floor: u64,
        patience: Duration,
    ) -> Result<Option<(T, u64)>, KvError> {
        let first = self.entry(key).await?;
        if first.is_none() && floor > 0 && self.purged(key).await? {
            return Ok(None);
        }
        let mut first = Some(first);
        let e = read_until(floor, patience, || {
            let ready = first.take();
            async move {
                match ready {
                    Some(e) => Ok(e),
                    None => self.entry(key).await,
                }
            }
        })
        .await?;
        let got = e.as_ref().map_or(0, |e| e.revision);
        if got < floor {
            return Err(KvError::Behind {
                what: self.what,
                key: key.to_owned(),
                floor,
                got,
            });
        }
        match e {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some((messages::decode(self.what, &e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Whether the stream's leader holds nothing for `key`: a key known to exist reads as no
    /// entry at all either on a replica that has not caught up with its creation or because the
    /// key was purged (a finished job's records). Only the leader tells them apart; asked only
    /// then, so it costs nothing on the common path.
    async fn purged(&self, key: &str) -> Result<bool, KvError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = ffleet_protocol::subjects::kv_key(&self.store.name, key);
        let stream = &self.store.stream;
        let read = retry::retry(self.policy, "kv get", key, self.policy.window(), |_| {
            super::ops::count(super::ops::Op::KvRead);
            let subject = subject.clone();
            async move {
                match stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(_) => Ok(false),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(true),
                    Err(e) => Err(e),
                }
            }
        })
        .await?;
        Ok(read)
    }

    /// Creates the key; `None` if it already exists.
    pub async fn create(&self, key: &str, value: &T) -> Result<Option<u64>, KvError> {
        let value = messages::encode(value);
        let window = self.policy.window();
        Ok(create(&self.store, self.policy, key, value, window).await?)
    }

    /// Writes if the key is still at `revision`; `None` if someone wrote in between.
    pub async fn update(
        &self,
        key: &str,
        value: &T,
        revision: u64,
    ) -> Result<Option<u64>, KvError> {
        let value = messages::encode(value);
        let window = self.policy.window();
        Ok(update(&self.store, self.policy, key, value, revision, window).await?)
    }

    /// Unconditional write (heartbeats). Not retried: the next heartbeat replaces a lost one,
    /// and a retried one would write a stale snapshot late.
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, KvError> {
        super::ops::count(super::ops::Op::KvWrite);
        self.store
            .put(key, messages::encode(value))
            .await
            .map_err(|e| NatsError::op("kv put", e).into())
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        retry::retry(self.policy, "kv delete", key, self.policy.window(), |_| {
            super::ops::count(super::ops::Op::KvWrite);
            self.store.delete(key)
        })
        .await
        .map_err(Into::into)
    }

    /// Read–decide–write with retries on conflict. `decide` sees the current value (or `None`)
    /// and may be called several times; it must not have side effects.
    pub async fn modify<R>(
        &self,
        key: &str,
        decide: impl FnMut(Option<&T>) -> Change<T, R>,
    ) -> Result<R, KvError>
    where
        T: Clone,
    {
        Ok(self.modify_known(key, None, decide).await?.0)
    }

    /// `modify`, first deciding on `known` (a value and its revision the caller holds, such as
    /// its own last write) instead of a read: a write that finds the key still at that revision
    /// costs no read. A refusal on `known`, or a write it lost, is decided again on a read, and
    /// never on a read older than `known` or than a revision that refused a write (each read
    /// waits, up to `BEHIND_PATIENCE`, for the entry to catch up: `KvError::Behind`).
    /// Returns, beside `decide`'s answer, the value written and its revision (`None` when
    /// nothing was written).
    pub async fn modify_known<R>(
        &self,
        key: &str,
        mut known: Option<(T, u64)>,
        mut decide: impl FnMut(Option<&T>) -> Change<T, R>,
    ) -> Result<(R, Option<(T, u64)>), KvError>
    where
        T: Clone,
    {
        const TRIES: u32 = 50;
        // The oldest revision a read may show: the copy's, then past every refused write.
        let mut floor = known.as_ref().map_or(0, |(_, r)| *r);
        for attempt in 0..TRIES {
            let guessed = known.is_some();
            let current = match known.take() {
                Some(k) => Some(k),
                None => self.get_at_least(key, floor, BEHIND_PATIENCE).await?,
            };
            let (value, rev) = match current {
                Some((v, r)) => (Some(v), Some(r)),
                None => (None, None),
            };
            match decide(value.as_ref()) {
                // Only a read may refuse: the caller's copy may be old.
                Change::Keep(_) if guessed => continue,
                Change::Keep(r) => return Ok((r, None)),
                Change::Write(new, r) => {
                    let written = match rev {
                        Some(rev) => self.update(key, &new, rev).await?,
                        None => self.create(key, &new).await?,
                    };
                    if let Some(rev) = written {
                        return Ok((r, Some((new, rev))));
                    }
                    // Refused: the entry is past what was decided on.
                    floor = floor.max(rev.map_or(1, |r| r + 1));
                    if guessed {
                        continue;
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

    /// Every key in the bucket (status listings, reconciliation). A listing that stalls (it
    /// waits for entries that expired or were deleted after it began, as heartbeats do) is
    /// started again.
    pub async fn keys(&self) -> Result<Vec<String>, KvError> {
        use futures::TryStreamExt;
        let window = self.policy.window();
        retry::retry_whole(self.policy, "kv keys", self.what, window, |_| async {
            let keys = self.store.keys().await?;
            let listed = tokio::time::timeout(LIST_STALL, keys.try_collect::<Vec<String>>())
                .await
                .map_err(|_| format!("listing stalled for {LIST_STALL:?}"))??;
            Ok::<_, BoxError>(listed)
        })
        .await
        .map_err(Into::into)
    }
}

/// The entry of `key` (any operation), retried under `policy` for up to `patience`.
pub async fn entry(
    store: &Store,
    policy: Policy,
    key: &str,
    patience: Patience,
) -> Result<Option<Entry>, NatsError> {
    retry::retry(policy, "kv get", key, patience, |_| {
        super::ops::count(super::ops::Op::KvRead);
        store.entry(key)
    })
    .await
}

/// Creates `key` with `value`; `None` if it already exists (written by someone else).
pub async fn create(
    store: &Store,
    policy: Policy,
    key: &str,
    value: Bytes,
    patience: Patience,
) -> Result<Option<u64>, NatsError> {
    // A bucket at its own cap refuses every new key until records go: its caller hears it at
    // once (`at_cap`), to fail what it was creating, instead of after the whole window.
    let at_cap = |e: &BoxError| super::at_cap(&**e);
    retry::retry_unless(
        policy,
        "kv create",
        key,
        patience,
        |n| {
            let value = value.clone();
            async move {
                super::ops::count(super::ops::Op::KvWrite);
                match store.create(key, value.clone()).await {
                    Ok(rev) => Ok(Some(rev)),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                        if n == 0 {
                            return Ok(None);
                        }
                        mine(store, key, &value, 0).await.map_err(BoxError::from)
                    }
                    Err(e) => Err(BoxError::from(e)),
                }
            }
        },
        at_cap,
    )
    .await
}

/// Writes `value` if `key` is still at `revision`; `None` if someone else wrote in between.
pub async fn update(
    store: &Store,
    policy: Policy,
    key: &str,
    value: Bytes,
    revision: u64,
    patience: Patience,
) -> Result<Option<u64>, NatsError> {
    retry::retry(policy, "kv update", key, patience, |n| {
        let value = value.clone();
        async move {
            super::ops::count(super::ops::Op::KvWrite);
            match store.update(key, value.clone(), revision).await {
                Ok(rev) => Ok(Some(rev)),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    if n == 0 {
                        return Ok(None);
                    }
                    mine(store, key, &value, revision)
                        .await
                        .map_err(BoxError::from)
                }
                Err(e) => Err(e.into()),
            }
        }
    })
    .await
}

/// After a timed-out write: whether the entry now at `key` is that write (newer than `after`,
/// the same bytes). Its revision if so. The server has just refused a write at `after`, so the
/// entry is past it: a read at `after` or older is a server catching up, read again (for up to
/// `MINE_PATIENCE`) rather than taken for someone else's write.
async fn mine(
    store: &Store,
    key: &str,
    value: &Bytes,
    after: u64,
) -> Result<Option<u64>, async_nats::jetstream::kv::EntryError> {
    let e = read_until(after + 1, MINE_PATIENCE, || {
        super::ops::count(super::ops::Op::KvRead);
        store.entry(key)
    })
    .await?;
    Ok(e.and_then(|e| {
        (e.operation == Operation::Put && e.revision > after && e.value == *value)
            .then_some(e.revision)
    }))
}

/// Reads with `read` until the entry is at revision `floor` or later (none counts as 0), again
/// with backoff while it reads older, for up to `patience` (zero: one read). Returns the last
/// entry read, which the caller compares with `floor`.
async fn read_until<E, F, Fut>(
    floor: u64,
    patience: Duration,
    mut read: F,
) -> Result<Option<Entry>, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Entry>, E>>,
{
    let started = tokio::time::Instant::now();
    let mut tries = 0u32;
    loop {
        let e = read().await?;
        let got = e.as_ref().map_or(0, |e| e.revision);
        tries += 1;
        let pause = retry::backoff(tries);
        if got >= floor || started.elapsed() + pause > patience {
            return Ok(e);
        }
        super::ops::count(super::ops::Op::BehindRead);
        tracing::debug!(
            floor,
            got,
            "kv read older than a known revision, reading again"
        );
        tokio::time::sleep(pause).await;
    }
}

/// How long `mine` reads again while the entry reads no newer than the refused revision.
const MINE_PATIENCE: Duration = Duration::from_secs(3);

/// Follows every change of `store` from now on (values written before the watch opens are not
/// delivered: `follow_current` starts with them), calling `apply` for each entry, until
/// `shutdown` fires: how services keep a live view of a bucket. A watch that fails (a
/// missed heartbeat after its server died, a consumer lost in an election) or ends is rebuilt
/// from the revision after the last one it delivered, so no change is missed or lost; creating
/// it waits for JetStream as long as it takes, each try bounded by `policy`.
///
/// `idle`: for a bucket that changes steadily (heartbeats), the longest quiet time after which
/// the watch is rebuilt anyway. An ordered consumer whose stream moved to a new leader can stay
/// silent without failing; rebuilding from the last revision costs one consumer creation and
/// misses nothing.
pub async fn follow(
    store: &Store,
    policy: Policy,
    shutdown: tokio_util::sync::CancellationToken,
    what: &'static str,
    idle: Option<std::time::Duration>,
    apply: impl FnMut(&Entry) + Send + 'static,
) -> Result<(), NatsError> {
    start_following(store, policy, shutdown, what, idle, false, apply).await
}

/// Like `follow`, delivering first every key's current value (its last revision, a delete
/// marker included), then every change: how a view that starts empty learns what the bucket
/// holds. The first pass's last entry has `delta` 0.
pub async fn follow_current(
    store: &Store,
    policy: Policy,
    shutdown: tokio_util::sync::CancellationToken,
    what: &'static str,
    idle: Option<std::time::Duration>,
    apply: impl FnMut(&Entry) + Send + 'static,
) -> Result<(), NatsError> {
    start_following(store, policy, shutdown, what, idle, true, apply).await
}

async fn start_following(
    store: &Store,
    policy: Policy,
    shutdown: tokio_util::sync::CancellationToken,
    what: &'static str,
    idle: Option<std::time::Duration>,
    current: bool,
    apply: impl FnMut(&Entry) + Send + 'static,
) -> Result<(), NatsError> {
    let open = async {
        if current {
            open_current(store, policy, what).await
        } else {
            open_watch(store, policy, what, 0).await
        }
    };
    let first = tokio::select! {
        w = open => w?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let following = Following {
        store: store.clone(),
        policy,
        shutdown,
        what,
        idle,
    };
    tokio::spawn(following.run(first, apply));
    Ok(())
}

struct Following {
    store: Store,
    policy: Policy,
    shutdown: tokio_util::sync::CancellationToken,
    what: &'static str,
    idle: Option<std::time::Duration>,
}

/// A watch of every key's last revision, then of every change.
async fn open_current(
    store: &Store,
    policy: Policy,
    what: &'static str,
) -> Result<async_nats::jetstream::kv::Watch, NatsError> {
    retry::retry(
        policy,
        "kv watch",
        what,
        Patience::Forever,
        |_| async move { store.watch_with_history(">").await },
    )
    .await
}

/// A watch of every key, from revision `from` on (0: changes from now on).
async fn open_watch(
    store: &Store,
    policy: Policy,
    what: &'static str,
    from: u64,
) -> Result<async_nats::jetstream::kv::Watch, NatsError> {
    retry::retry(
        policy,
        "kv watch",
        what,
        Patience::Forever,
        |_| async move {
            if from == 0 {
                store.watch_all().await
            } else {
                store.watch_all_from_revision(from).await
            }
        },
    )
    .await
}

impl Following {
    async fn run(
        self,
        mut watch: async_nats::jetstream::kv::Watch,
        mut apply: impl FnMut(&Entry) + Send + 'static,
    ) {
        use futures::StreamExt;
        let what = self.what;
        let idle = self.idle.unwrap_or(std::time::Duration::MAX);
        let mut last = 0u64;
        loop {
            let entry = tokio::select! {
                e = tokio::time::timeout(idle, watch.next()) => e,
                _ = self.shutdown.cancelled() => return,
            };
            let why = match entry {
                Ok(Some(Ok(e))) => {
                    last = last.max(e.revision);
                    super::ops::count(super::ops::Op::WatchDelivery);
                    apply(&e);
                    continue;
                }
                Ok(Some(Err(err))) => err.to_string(),
                Ok(None) => "ended".to_owned(),
                Err(_) => {
                    tracing::debug!(
                        bucket = what,
                        from_revision = last + 1,
                        "kv watch quiet, rebuilding"
                    );
                    String::new()
                }
            };
            if !why.is_empty() {
                tracing::warn!(bucket = what, error = %why, from_revision = last + 1, "kv watch lost, rebuilding");
                tokio::time::sleep(retry::backoff(1)).await;
            }
            drop(watch);
            watch = tokio::select! {
                w = open_watch(&self.store, self.policy, what, last + 1) => match w {
                    Ok(w) => w,
                    Err(_) => return,
                },
                _ = self.shutdown.cancelled() => return,
            };
            if !why.is_empty() {
                tracing::info!(bucket = what, from_revision = last + 1, "kv watch rebuilt");
            }
        }
    }
}
