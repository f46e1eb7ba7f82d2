//! The `[nats]` (connection, credentials, JetStream patience) and `[streams]` (replicas, caps
//! and retention of every stream and bucket) sections. Owned here, gathered by the runtime.

use ffleet_protocol::settings::{Invalid, Section, positive};
use ffleet_protocol::subjects;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The environment variable holding an nkey seed (`nats.nkey_seed`).
pub const NKEY_SEED_ENV: &str = "FFLEET_NATS_NKEY_SEED";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// One URL or several, comma-separated (cluster seeds). `NATS_URL` and `-s` override it.
    pub url: String,
    /// Also use the cluster members the servers advertise (beyond `url`) when reconnecting.
    pub discover_servers: bool,
    /// NATS credentials file (JWT + nkey seed) for this service.
    pub creds_file: Option<PathBuf>,
    /// File holding this process's nkey seed (`SU...`), as `ffleet secrets init` writes them.
    pub nkey_seed_file: Option<PathBuf>,
    /// The nkey seed itself; taken from `FFLEET_NATS_NKEY_SEED` (a secret: keep it out of
    /// files others can read).
    #[serde(skip_serializing)]
    pub nkey_seed: Option<String>,
    /// The role these credentials stand for, when known: clients then skip what the role may
    /// not do (a submitter follows a job by its events only) instead of being refused.
    pub role: Option<crate::security::Role>,
    /// The tenant these credentials belong to (a submitter identity of `ffleet secrets init
    /// --tenant`): jobs are submitted, followed and asked after as the tenant's own, on its
    /// subjects, and replies arrive under its inbox prefix.
    pub tenant: Option<ffleet_protocol::Tenant>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Refuse to connect without TLS.
    pub tls_required: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// JetStream API request timeout: bounds the longest try of every JetStream call.
    pub request_timeout_secs: f64,
    /// How long the first try of a JetStream operation waits for an answer before it is sent
    /// again; each further try waits twice as long, up to `request_timeout_secs`. Short, so a
    /// request lost with a dead stream leader goes to the new one within seconds.
    pub first_try_timeout_secs: f64,
    /// How long one JetStream operation at run time (publish, KV read or write, consumer
    /// creation) is retried through a leader election or a lost server before its caller sees
    /// the error and takes its transient-failure path.
    pub op_retry_secs: f64,
    /// How long client commands (`submit`, `status`, `workers`) wait at start for JetStream to
    /// be ready; services wait as long as it takes.
    pub startup_wait_secs: f64,
    /// File this process writes its health to (`starting`, `waiting for jetstream: ...`,
    /// `ready`) for container healthchecks; unset: kept in the process only.
    pub health_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            discover_servers: true,
            creds_file: None,
            nkey_seed_file: None,
            nkey_seed: None,
            role: None,
            tenant: None,
            user: None,
            password: None,
            token: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            request_timeout_secs: 10.0,
            first_try_timeout_secs: 2.0,
            op_retry_secs: 60.0,
            startup_wait_secs: 60.0,
            health_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Stream and KV replicas (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// Replicas of single streams or buckets, by name (`FFLEET_EVENTS`, `ffleet-workers`, ...),
    /// overriding `replicas`: e.g. heartbeats at 1 where losing them on a node loss is fine.
    pub replicas_for: BTreeMap<String, usize>,
    /// How long job events stay readable.
    pub events_max_age_hours: f64,
    /// Window in which a repeated Nats-Msg-Id (job id, task attempt) is dropped.
    pub duplicate_window_secs: f64,
    /// AckWait of every work-queue consumer: the backstop that redelivers a message whose
    /// holder died while the scheduler (which reacts in seconds) was down too. Holders keep
    /// their messages alive every third of it.
    pub ack_wait_secs: f64,
    /// Largest message a stream stores, and largest KV value (tasks, events, job records): a
    /// bigger publish is refused by the server instead of stored.
    pub max_msg_bytes: i32,
    /// Largest job request `FFLEET_JOBS` stores (a real one is a few hundred bytes).
    pub max_request_bytes: i32,
    /// Bytes each stream and bucket may hold (events: `events_max_bytes`); work queues then
    /// refuse new messages, retained streams drop their oldest. -1: unlimited. The server
    /// reserves this much of its JetStream storage per stream.
    pub max_bytes: i64,
    pub events_max_bytes: i64,
    /// Messages each stream and bucket may hold (events: `events_max_msgs`); -1: unlimited.
    pub max_msgs: i64,
    pub events_max_msgs: i64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            replicas: 1,
            replicas_for: BTreeMap::new(),
            events_max_age_hours: 72.0,
            duplicate_window_secs: 120.0,
            ack_wait_secs: 30.0,
            max_msg_bytes: 1024 * 1024,
            max_request_bytes: 64 * 1024,
            // JetStream reserves each stream's cap from the server's storage at creation: the
            // defaults (about 2.8 GiB in all) must fit a small disk's share.
            max_bytes: 256 * 1024 * 1024,
            events_max_bytes: 1024 * 1024 * 1024,
            max_msgs: 1_000_000,
            events_max_msgs: 10_000_000,
        }
    }
}

impl StreamsConfig {
    /// Replicas of the stream or bucket `name`.
    pub fn replicas_of(&self, name: &str) -> usize {
        self.replicas_for
            .get(name)
            .copied()
            .unwrap_or(self.replicas)
    }

    pub fn ack_wait(&self) -> Duration {
        Duration::from_secs_f64(self.ack_wait_secs)
    }
}

impl Section for NatsConfig {
    const KEY: &'static str = "nats";

    fn validate(&self) -> Result<(), Invalid> {
        if self.tenant.is_some()
            && !matches!(self.role, None | Some(crate::security::Role::Submitter))
        {
            return Err(Invalid(
                "nats.tenant is for a tenant's submitter credentials: nats.role must be \
                 submitter or unset"
                    .into(),
            ));
        }
        positive(
            "nats",
            &[
                ("request_timeout_secs", self.request_timeout_secs),
                ("first_try_timeout_secs", self.first_try_timeout_secs),
                ("op_retry_secs", self.op_retry_secs),
                ("startup_wait_secs", self.startup_wait_secs),
            ],
        )
    }
}

impl Section for StreamsConfig {
    const KEY: &'static str = "streams";

    fn validate(&self) -> Result<(), Invalid> {
        positive("streams", &[("ack_wait_secs", self.ack_wait_secs)])?;
        if !(1..=5).contains(&self.replicas) {
            return Err(Invalid("streams.replicas must be 1..=5".into()));
        }
        for (name, n) in &self.replicas_for {
            if !subjects::PROVISIONED.contains(&name.as_str()) {
                return Err(Invalid(format!(
                    "streams.replicas_for.{name}: no such stream or bucket (one of {})",
                    subjects::PROVISIONED.join(", ")
                )));
            }
            if !(1..=5).contains(n) {
                return Err(Invalid(format!(
                    "streams.replicas_for.{name} must be 1..=5"
                )));
            }
        }
        for (name, v) in [
            ("streams.max_msg_bytes", self.max_msg_bytes),
            ("streams.max_request_bytes", self.max_request_bytes),
        ] {
            if v < 1024 {
                return Err(Invalid(format!("{name} must be >= 1024 (got {v})")));
            }
        }
        for (name, v) in [
            ("streams.max_bytes", self.max_bytes),
            ("streams.events_max_bytes", self.events_max_bytes),
            ("streams.max_msgs", self.max_msgs),
            ("streams.events_max_msgs", self.events_max_msgs),
        ] {
            if v != -1 && v <= 0 {
                return Err(Invalid(format!(
                    "{name} must be > 0 or -1 for unlimited (got {v})"
                )));
            }
        }
        Ok(())
    }
}
