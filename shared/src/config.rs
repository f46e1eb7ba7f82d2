//! Layered configuration: built-in defaults → `ffleet.toml` (or `--config FILE`) → `FFLEET_*`
//! environment (nested keys joined by `__`, e.g. `FFLEET_ENCODER__SLOTS=4`) → command-line flags
//! (applied by the binary), then `validate()` once. Only `FFLEET_*` variables that
//! name a configuration section are read, so `FFLEET_CONFIG` (the file) or `FFLEET_NATS_SERVER`
//! (the nats-server binary for local clusters) never trip the unknown-key check.

use crate::profiles::{self, Profile, ProfileError};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("configuration: {0}")]
    Profile(#[from] ProfileError),
    #[error("configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub storage: StorageConfig,
    pub ffmpeg: FfmpegConfig,
    pub limits: LimitsConfig,
    pub streams: StreamsConfig,
    pub splitter: SplitterConfig,
    pub scheduler: SchedulerConfig,
    pub encoder: EncoderConfig,
    pub merger: MergerConfig,
    pub log: LogConfig,
    /// Profile used when a job names none.
    pub default_profile: String,
    pub profiles: BTreeMap<String, Profile>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: NatsConfig::default(),
            storage: StorageConfig::default(),
            ffmpeg: FfmpegConfig::default(),
            limits: LimitsConfig::default(),
            streams: StreamsConfig::default(),
            splitter: SplitterConfig::default(),
            scheduler: SchedulerConfig::default(),
            encoder: EncoderConfig::default(),
            merger: MergerConfig::default(),
            log: LogConfig::default(),
            default_profile: "h264".into(),
            profiles: profiles::builtin(),
        }
    }
}

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

/// Where media travels between services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageBackend {
    /// A directory every node mounts (`storage.scratch`): zero copies, one host or NFS.
    SharedDir,
    /// A JetStream Object Store bucket: nodes share nothing but the NATS URL.
    ObjectStore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `object-store` (the default for a fleet) or `shared-dir` (`ffleet transcode`).
    pub backend: StorageBackend,
    /// Scratch directory shared by every node (a compose volume, NFS): cuts and encoded segments.
    pub scratch: PathBuf,
    /// Private local directory for downloaded and staged media; each process takes its own
    /// subdirectory and removes those of processes that died.
    pub work_dir: PathBuf,
    /// Object Store bucket holding the media.
    pub bucket: String,
    /// Cap on the bucket's size in bytes (0: the server's JetStream storage limit), set when
    /// the bucket is created. JetStream reserves a stream's cap out of the server's storage,
    /// so the default reserves nothing. A job that does not fit fails with `storage_full`.
    pub max_bytes: u64,
    /// Bytes per object chunk (one NATS message each): memory per transfer is a few chunks.
    pub chunk_size: usize,
    /// Largest file `ffleet submit --upload` sends (checked before the upload starts).
    pub max_upload_bytes: u64,
    /// Directories inputs must resolve into (after following symlinks).
    pub input_roots: Vec<PathBuf>,
    /// Directories outputs must resolve into.
    pub output_roots: Vec<PathBuf>,
}

/// `<tmp>/ffleet-work-<uid>`: private to the user (the directory is created mode 0700, so a
/// shared name would lock other users out).
fn default_work_dir() -> PathBuf {
    #[cfg(unix)]
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or_else(|_| "user".to_owned(), |m| m.uid().to_string())
    };
    #[cfg(not(unix))]
    let owner = "user".to_owned();
    std::env::temp_dir().join(format!("ffleet-work-{owner}"))
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::ObjectStore,
            scratch: std::env::temp_dir().join("ffleet-scratch"),
            work_dir: default_work_dir(),
            bucket: crate::subjects::BUCKET_MEDIA.into(),
            max_bytes: 0,
            chunk_size: 128 * 1024,
            max_upload_bytes: 64 << 30,
            input_roots: Vec::new(),
            output_roots: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FfmpegConfig {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl Default for FfmpegConfig {
    fn default() -> Self {
        Self {
            ffmpeg: "ffmpeg".into(),
            ffprobe: "ffprobe".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_width: u32,
    pub max_height: u32,
    pub max_duration_secs: f64,
    pub max_frame_rate: f64,
    pub max_input_bytes: u64,
    /// Bound on every ffprobe run (hostile files can make probing slow).
    pub probe_timeout_secs: f64,
    /// Most ffprobe output read from one run (format and streams); more is refused.
    pub max_probe_output_bytes: usize,
    /// Most packets the source's kept streams may have (a packet flood is refused while it is
    /// read, before it fills memory); each is also held to what the duration and frame rate
    /// limits allow.
    pub max_packets: u64,
    /// Resource limits of every ffmpeg and ffprobe child (set through `prlimit`); 0: none.
    /// Address space in MiB, for children that use no accelerator (CUDA and other GPU runtimes
    /// reserve more virtual memory than the machine has, so those children are exempt).
    pub child_address_space_mb: u64,
    /// Largest file a child may write, in MiB.
    pub child_file_size_mb: u64,
    pub child_open_files: u64,
    /// CPU seconds per child.
    pub child_cpu_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_width: 8192,
            max_height: 8192,
            max_duration_secs: 12.0 * 3600.0,
            max_frame_rate: 300.0,
            max_input_bytes: 512 * 1024 * 1024 * 1024,
            probe_timeout_secs: 60.0,
            max_probe_output_bytes: 16 * 1024 * 1024,
            max_packets: 5_000_000,
            child_address_space_mb: 32 * 1024,
            child_file_size_mb: 512 * 1024,
            child_open_files: 4096,
            child_cpu_secs: 7 * 24 * 3600,
        }
    }
}

/// A path with symlinks resolved as far as it exists (the rest appended), for comparing
/// directories that may not exist yet.
fn normalized(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(c, |acc, part| acc.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return abs,
        }
    }
}

impl LimitsConfig {
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.probe_timeout_secs)
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitterConfig {
    /// Jobs split at the same time by one splitter.
    pub concurrency: usize,
    /// Longest segment when the job does not ask for one (a request's `segment_seconds` takes
    /// its place). Below it the length follows the pool: about two segments per live slot.
    pub default_segment_secs: f64,
    /// Shortest segment the pool rule cuts, against per-segment start-up cost (a request's own
    /// shorter `segment_seconds` is still honoured).
    pub min_segment_secs: f64,
    /// Highest priority a request on `ffleet.jobs.submit` may ask for; requests above it are
    /// refused (`priority_not_allowed`). Requests on `ffleet.jobs.submit-privileged` (clients
    /// allowed to publish there) are not capped.
    pub max_submitter_priority: i32,
}

impl Default for SplitterConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            default_segment_secs: 10.0,
            min_segment_secs: 1.0,
            max_submitter_priority: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// A heartbeat older than this marks its node as dead: its units are handed to others.
    pub heartbeat_ttl_secs: f64,
    /// The leader's lease: a follower takes over within this long of the leader dying.
    pub lease_ttl_secs: f64,
    /// How often the leader compares every active job's units with the live pool and the
    /// queues, re-issuing what went missing (the slow path behind heartbeat staleness).
    pub reconcile_interval_secs: f64,
    /// A unit queued this long whose queue holds no message is re-issued (a lost message).
    pub lost_task_secs: f64,
    /// A job still unfinished this long after it was accepted fails.
    pub job_deadline_secs: f64,
    /// Tasks released into a capability queue beyond the pool's free slots, so a node that
    /// frees a slot finds its next task waiting instead of a round trip away.
    pub release_buffer: u32,
    /// A GPU-preferring task spills to CPU (if its job allows it) once more than this many
    /// tasks wait for GPU capacity.
    pub spill_queue_depth: u32,
    /// A task whose allowed capabilities have no live node at all waits this long for one,
    /// then fails its job (`no_capable_node`).
    pub capability_wait_secs: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            heartbeat_ttl_secs: 3.0,
            lease_ttl_secs: 3.0,
            reconcile_interval_secs: 5.0,
            lost_task_secs: 30.0,
            job_deadline_secs: 24.0 * 3600.0,
            release_buffer: 1,
            spill_queue_depth: 4,
            capability_wait_secs: 60.0,
        }
    }
}

impl SchedulerConfig {
    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_ttl_secs)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    /// Stable node id; generated from the host name when absent.
    pub node_id: Option<String>,
    /// Concurrent segment encodes; default: CPU cores / the profile threads (1).
    pub slots: Option<u32>,
    /// Restrict or label capabilities; default: detected (`cpu` from `ffmpeg -encoders`,
    /// `nvenc` when NVML finds an NVIDIA GPU and ffmpeg has h264_nvenc). Either way an
    /// accelerator capability is offered only once a test encode with an encoder its profile
    /// variants use succeeded.
    pub capabilities: Option<Vec<String>>,
    /// Concurrent accelerator encodes (GPU sessions); default: what the driver allows per
    /// GPU (consumer boards 3/5/8 by driver version, less the sessions already open; 8 for
    /// professional and data-center boards), or `slots` for a labelled node without a GPU.
    pub gpu_slots: Option<u32>,
    /// Limit for each start-up test encode/decode (and the re-test after a GPU failure).
    pub proof_timeout_secs: f64,
    /// Accelerator encodes failing in a row after which the node gives the capability up even
    /// though its variant still passes a test encode (a failing variant demotes at once).
    pub demote_after_failures: u32,
    pub heartbeat_interval_secs: f64,
    /// Kill an ffmpeg that reports no progress for this long.
    pub stall_timeout_secs: f64,
    /// Hard limit per unit: max(min_timeout_secs, media duration × this factor).
    pub timeout_factor: f64,
    pub min_timeout_secs: f64,
    /// How long one pull waits for a task before asking again.
    pub fetch_wait_secs: f64,
    /// Attempts after which a unit that keeps failing is failed for good, however few nodes
    /// it failed on (a fleet of one node never reaches `retry_nodes`).
    pub max_attempts: u32,
    /// A unit that failed on this many distinct nodes fails its job.
    pub retry_nodes: u32,
    /// On SIGTERM: how long held units may run on before they are handed back.
    pub stop_grace_secs: f64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            slots: None,
            capabilities: None,
            gpu_slots: None,
            proof_timeout_secs: 15.0,
            demote_after_failures: 3,
            heartbeat_interval_secs: 1.0,
            stall_timeout_secs: 30.0,
            timeout_factor: 30.0,
            min_timeout_secs: 300.0,
            fetch_wait_secs: 2.0,
            max_attempts: 5,
            retry_nodes: 3,
            stop_grace_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MergerConfig {
    /// Merges run at the same time by one merger.
    pub concurrency: usize,
    /// Keep scratch media of failed jobs for inspection.
    pub keep_failed_scratch: bool,
}

impl Default for MergerConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            keep_failed_scratch: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `auto` (JSON lines on stdout for a service process, text on stderr for commands run by a
    /// person), `text` or `json`.
    pub format: String,
    /// An `EnvFilter` directive; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: "auto".into(),
            level: "info".into(),
        }
    }
}

/// The environment variable holding an nkey seed (`nats.nkey_seed`).
pub const NKEY_SEED_ENV: &str = "FFLEET_NATS_NKEY_SEED";

/// Top-level keys read from `FFLEET_*` variables; other `FFLEET_` variables (the config file,
/// the nats-server binary, benchmark knobs) are not configuration and are left alone.
const TOP_LEVEL_KEYS: &[&str] = &[
    "nats",
    "storage",
    "ffmpeg",
    "limits",
    "streams",
    "splitter",
    "scheduler",
    "encoder",
    "merger",
    "log",
    "default_profile",
    "profiles",
];

impl Config {
    /// Loads defaults → TOML file → environment. `file` is `--config`; without it,
    /// `ffleet.toml` in the working directory is read when present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) if !f.exists() => return Err(ConfigError::MissingFile(f.to_path_buf())),
            Some(f) => fig = fig.merge(Toml::file(f)),
            None => fig = fig.merge(Toml::file("ffleet.toml")),
        }
        fig = fig.merge(
            Env::prefixed("FFLEET_")
                .filter(|k| {
                    let top = k.as_str().split("__").next().unwrap_or_default();
                    TOP_LEVEL_KEYS.iter().any(|t| top.eq_ignore_ascii_case(t))
                })
                .split("__"),
        );
        let mut cfg: Config = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        if let Ok(seed) = std::env::var(NKEY_SEED_ENV)
            && !seed.trim().is_empty()
        {
            cfg.nats.nkey_seed = Some(seed.trim().to_owned());
        }
        Ok(cfg)
    }

    /// Checks what no type can: profiles, bounds, consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !["auto", "text", "json"].contains(&self.log.format.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "log.format {:?}: expected auto, text or json",
                self.log.format
            )));
        }
        for (name, p) in &self.profiles {
            crate::ids::Capability::new(name.replace('.', "_"))
                .map_err(|e| ConfigError::Invalid(format!("profile name {name:?}: {e}")))?;
            p.validate(name)?;
            for cap in p.variants.keys() {
                crate::ids::Capability::new(cap.as_str()).map_err(|e| {
                    ConfigError::Invalid(format!("profile {name:?} variant {cap:?}: {e}"))
                })?;
            }
        }
        if !self.profiles.contains_key(&self.default_profile) {
            return Err(ConfigError::Invalid(format!(
                "default_profile {:?} is not among the profiles ({})",
                self.default_profile,
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        let positive = [
            (
                "encoder.heartbeat_interval_secs",
                self.encoder.heartbeat_interval_secs,
            ),
            (
                "encoder.stall_timeout_secs",
                self.encoder.stall_timeout_secs,
            ),
            ("encoder.fetch_wait_secs", self.encoder.fetch_wait_secs),
            ("encoder.timeout_factor", self.encoder.timeout_factor),
            (
                "splitter.default_segment_secs",
                self.splitter.default_segment_secs,
            ),
            ("splitter.min_segment_secs", self.splitter.min_segment_secs),
            ("limits.probe_timeout_secs", self.limits.probe_timeout_secs),
            (
                "scheduler.heartbeat_ttl_secs",
                self.scheduler.heartbeat_ttl_secs,
            ),
            ("nats.request_timeout_secs", self.nats.request_timeout_secs),
            (
                "nats.first_try_timeout_secs",
                self.nats.first_try_timeout_secs,
            ),
            ("nats.op_retry_secs", self.nats.op_retry_secs),
            ("nats.startup_wait_secs", self.nats.startup_wait_secs),
            ("scheduler.lease_ttl_secs", self.scheduler.lease_ttl_secs),
            (
                "scheduler.reconcile_interval_secs",
                self.scheduler.reconcile_interval_secs,
            ),
            ("scheduler.lost_task_secs", self.scheduler.lost_task_secs),
            (
                "scheduler.job_deadline_secs",
                self.scheduler.job_deadline_secs,
            ),
            ("streams.ack_wait_secs", self.streams.ack_wait_secs),
            (
                "scheduler.capability_wait_secs",
                self.scheduler.capability_wait_secs,
            ),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be > 0 (got {v})"
                )));
            }
        }
        if self.splitter.concurrency == 0 || self.merger.concurrency == 0 {
            return Err(ConfigError::Invalid(
                "splitter.concurrency and merger.concurrency must be >= 1".into(),
            ));
        }
        if self.encoder.slots == Some(0) {
            return Err(ConfigError::Invalid("encoder.slots must be >= 1".into()));
        }
        if self.encoder.gpu_slots == Some(0) {
            return Err(ConfigError::Invalid(
                "encoder.gpu_slots must be >= 1".into(),
            ));
        }
        if !(self.encoder.proof_timeout_secs.is_finite() && self.encoder.proof_timeout_secs > 0.0)
            || self.encoder.demote_after_failures == 0
        {
            return Err(ConfigError::Invalid(
                "encoder.proof_timeout_secs must be > 0 and encoder.demote_after_failures >= 1"
                    .into(),
            ));
        }
        if !(self.encoder.stop_grace_secs.is_finite() && self.encoder.stop_grace_secs >= 0.0) {
            return Err(ConfigError::Invalid(
                "encoder.stop_grace_secs must be >= 0".into(),
            ));
        }
        if self.encoder.retry_nodes == 0 {
            return Err(ConfigError::Invalid(
                "encoder.retry_nodes must be >= 1".into(),
            ));
        }
        if self.encoder.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "encoder.max_attempts must be >= 1".into(),
            ));
        }
        if !(1..=5).contains(&self.streams.replicas) {
            return Err(ConfigError::Invalid(
                "streams.replicas must be 1..=5".into(),
            ));
        }
        for (name, n) in &self.streams.replicas_for {
            if !crate::subjects::PROVISIONED.contains(&name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "streams.replicas_for.{name}: no such stream or bucket (one of {})",
                    crate::subjects::PROVISIONED.join(", ")
                )));
            }
            if !(1..=5).contains(n) {
                return Err(ConfigError::Invalid(format!(
                    "streams.replicas_for.{name} must be 1..=5"
                )));
            }
        }
        self.validate_bounds()?;
        // A chunk is one NATS message: within the servers' default 1 MiB max_payload.
        if self.storage.chunk_size < 4096 || self.storage.chunk_size > 1000 << 10 {
            return Err(ConfigError::Invalid(format!(
                "storage.chunk_size must be between 4096 and 1024000 bytes (got {})",
                self.storage.chunk_size
            )));
        }
        if self.storage.bucket.is_empty()
            || !self
                .storage
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(ConfigError::Invalid(format!(
                "storage.bucket {:?} must be letters, digits, - and _",
                self.storage.bucket
            )));
        }
        self.roots_must_not_contain(&self.storage.work_dir, "storage.work_dir")?;
        self.roots_must_not_contain(&self.storage.scratch, "storage.scratch")
    }

    /// Stream and child-process limits: each positive, or -1 (unlimited) where allowed.
    fn validate_bounds(&self) -> Result<(), ConfigError> {
        let st = &self.streams;
        for (name, v) in [
            ("streams.max_msg_bytes", st.max_msg_bytes),
            ("streams.max_request_bytes", st.max_request_bytes),
        ] {
            if v < 1024 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be >= 1024 (got {v})"
                )));
            }
        }
        for (name, v) in [
            ("streams.max_bytes", st.max_bytes),
            ("streams.events_max_bytes", st.events_max_bytes),
            ("streams.max_msgs", st.max_msgs),
            ("streams.events_max_msgs", st.events_max_msgs),
        ] {
            if v != -1 && v <= 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be > 0 or -1 for unlimited (got {v})"
                )));
            }
        }
        let l = &self.limits;
        if l.max_probe_output_bytes < 64 * 1024 || l.max_packets == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_probe_output_bytes must be >= 65536 and limits.max_packets >= 1".into(),
            ));
        }
        Ok(())
    }

    /// Refuses a directory ffleet writes to (`what`: scratch, the NATS store) that lies inside
    /// an input or output root, or contains one: a job could then name another job's cut, or
    /// the server's store, as its input.
    pub fn roots_must_not_contain(&self, dir: &Path, what: &str) -> Result<(), ConfigError> {
        let dir = normalized(dir);
        let roots = self
            .storage
            .input_roots
            .iter()
            .map(|r| ("storage.input_roots", r))
            .chain(
                self.storage
                    .output_roots
                    .iter()
                    .map(|r| ("storage.output_roots", r)),
            );
        for (key, root) in roots {
            let root_n = normalized(root);
            if dir.starts_with(&root_n) || root_n.starts_with(&dir) {
                return Err(ConfigError::Invalid(format!(
                    "{what} {} overlaps {key} entry {}: keep ffleet's own data outside the \
                     directories jobs may read and write",
                    dir.display(),
                    root.display()
                )));
            }
        }
        Ok(())
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }
}

#[cfg(test)]
// figment's test jail returns its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_layers_apply_in_order() {
        Config::default().validate().unwrap();
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ffleet.toml",
                r#"
                default_profile = "mine"
                [encoder]
                slots = 3
                [profiles.mine.cpu]
                args = ["-c:v", "libx264", "-qp", "20"]
                quality_flag = "-qp"
                "#,
            )?;
            jail.set_env("FFLEET_ENCODER__SLOTS", "5");
            jail.set_env("FFLEET_NATS_SERVER", "/usr/bin/nats-server");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.encoder.slots, Some(5));
            assert_eq!(c.default_profile, "mine");
            assert!(c.profiles.contains_key("h264"), "built-ins stay");
            assert_eq!(c.profiles["mine"].variants["cpu"].threads, 1);
            c.validate().expect("valid");
            Ok(())
        });
    }

    #[test]
    fn scratch_or_data_inside_a_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.storage.input_roots = vec![root.path().to_path_buf()];
        c.storage.scratch = root.path().join("not-yet/scratch");
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("storage.scratch") && e.contains("input_roots"),
            "{e}"
        );
        // A root inside the data directory is as bad.
        c.storage.scratch = root.path().parent().unwrap().to_path_buf();
        assert!(c.validate().is_err());
        c.storage.scratch = tempfile::tempdir().unwrap().path().join("s");
        c.validate().unwrap();
        assert!(
            c.roots_must_not_contain(&root.path().join("data"), "--data")
                .is_err()
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_key_named() {
        let c = Config {
            default_profile: "nope".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("default_profile")
        );
        let mut c = Config::default();
        c.encoder.stall_timeout_secs = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("stall_timeout")
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("ffleet.toml", "[encoder]\nslotz = 3\n")?;
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }
}
