//! A durable pull consumer that notices when it stops answering and re-creates itself.
//!
//! In a cluster a durable consumer can be lost: one created while the cluster formed, whose
//! assignment the old meta leader had not replicated when it died, is simply gone after the
//! election (seen on nats-server 2.9.10), and every pull request for it then fails or goes
//! unanswered. A pull loop that only retried would wait forever. So every pull reports its
//! outcome here; after a few failed or unanswered pulls in a row the consumer is looked up and
//! created again with the same settings (`get_or_create_consumer` returns an existing one as it
//! is). A re-created consumer starts from the stream's first message: every handler is
//! idempotent, and work queues hold only unfinished work.

use super::retry::{self, Patience, Policy};
use super::{BoxError, NatsError};
use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Settings of a durable pull consumer.
pub struct ConsumerSpec<'a> {
    pub stream: &'a str,
    pub durable: &'a str,
    pub filter: String,
    pub ack_wait: Duration,
    /// -1 for unlimited.
    pub max_deliver: i64,
    pub max_ack_pending: i64,
}

/// Failed or unanswered pulls in a row after which the consumer is re-created.
const SUSPECT_AFTER: u32 = 3;

/// A durable pull consumer (cheap to clone; clones share the handle).
#[derive(Clone)]
pub struct Durable(Arc<Inner>);

struct Inner {
    js: Context,
    /// How creating the consumer retries, at start and on re-creation.
    policy: Policy,
    stream: String,
    name: String,
    config: pull::Config,
    consumer: Mutex<PullConsumer>,
    failures: AtomicU32,
    recreating: tokio::sync::Mutex<()>,
}

impl Durable {
    /// Gets or creates the consumer; waits for JetStream as long as it takes (only services
    /// create durable consumers, and a service waits at start), each try bounded by `policy`,
    /// which also governs a later re-creation.
    pub async fn ensure(
        js: &Context,
        policy: Policy,
        spec: ConsumerSpec<'_>,
    ) -> Result<Durable, NatsError> {
        let config = pull::Config {
            durable_name: Some(spec.durable.into()),
            filter_subject: spec.filter,
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            max_deliver: spec.max_deliver,
            max_ack_pending: spec.max_ack_pending,
            ..Default::default()
        };
        let consumer = create(
            js,
            policy,
            spec.stream,
            spec.durable,
            &config,
            Patience::Forever,
        )
        .await?;
        Ok(Durable(Arc::new(Inner {
            js: js.clone(),
            policy,
            stream: spec.stream.into(),
            name: spec.durable.into(),
            config,
            consumer: Mutex::new(consumer),
            failures: AtomicU32::new(0),
            recreating: tokio::sync::Mutex::new(()),
        })))
    }

    /// The current handle, for one pull.
    pub fn consumer(&self) -> PullConsumer {
        self.0.consumer.lock().expect("consumer lock").clone()
    }

    /// The JetStream context the consumer lives in.
    pub fn context(&self) -> &Context {
        &self.0.js
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Failed or unanswered pulls in a row so far.
    pub fn failures(&self) -> u32 {
        self.0.failures.load(Ordering::Relaxed)
    }

    /// A pull was answered (a message, or the server saying there was none).
    pub fn answered(&self) {
        self.0.failures.store(0, Ordering::Relaxed);
    }

    /// A pull failed or went unanswered; after a few in a row the consumer is re-created.
    pub async fn failed(&self, why: &(dyn std::fmt::Display + Sync)) {
        let n = self.0.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(SUSPECT_AFTER) {
            tracing::debug!(consumer = %self.0.name, failures = n, error = %why, "pull failed");
            return;
        }
        // One re-creation at a time; the other loops keep pulling meanwhile.
        let Ok(_one) = self.0.recreating.try_lock() else {
            return;
        };
        tracing::warn!(consumer = %self.0.name, failures = n, error = %why, "consumer not answering, re-creating it");
        let inner = &self.0;
        match create(
            &inner.js,
            inner.policy,
            &inner.stream,
            &inner.name,
            &inner.config,
            inner.policy.window(),
        )
        .await
        {
            Ok(c) => {
                *inner.consumer.lock().expect("consumer lock") = c;
                tracing::info!(consumer = %inner.name, "consumer looked up or re-created");
            }
            Err(e) => {
                tracing::warn!(consumer = %inner.name, error = %e, "consumer re-creation failed")
            }
        }
    }
}

async fn create(
    js: &Context,
    policy: Policy,
    stream: &str,
    name: &str,
    config: &pull::Config,
    patience: Patience,
) -> Result<PullConsumer, NatsError> {
    retry::retry(policy, "create consumer", name, patience, |_| async {
        let s = js.get_stream(stream).await?;
        let consumer = s.get_or_create_consumer(name, config.clone()).await?;
        Ok::<_, BoxError>(consumer)
    })
    .await
}
