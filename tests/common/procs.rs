//! `ProcFleet`: the services as separate `ffleet run <service>` processes around one test's
//! nats-server (or three-node cluster, `NatsCluster`), so faults are real signals (SIGKILL, SIGSTOP, SIGTERM) to real processes. Each
//! process logs to a file in the fleet's directory; the logs are printed when a test fails.
//! `start_secure`: the server requires TLS and per-role credentials, and each process gets its
//! own role's seed (the test's client is the admin).

use super::client::JobClient;
use super::nats_cluster::NatsCluster;
use anyhow::{Context, Result, bail};
use ffleet::local::NatsServer;
use ffleet_runtime::config::{Config, StorageBackend};
use ffleet_runtime::messages::{JobRecord, SegmentRecord};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::security::Role;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Service {
    /// `splitter`, `scheduler`, `merger` or `encoder`.
    pub name: String,
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// What the fleet runs on.
pub enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

pub struct ProcFleet {
    pub nats: Nats,
    /// The URL (or comma-separated URLs) services and the client are given.
    url: String,
    pub dir: tempfile::TempDir,
    pub services: Vec<Service>,
    env: Vec<(String, String)>,
    client: Option<Ctx>,
    out: PathBuf,
    /// Set by `passed()`: otherwise the logs are printed on drop.
    ok: bool,
    /// With `start_secure`: the secrets and the server's log.
    pub secure: Option<super::secure::SecureServer>,
    /// Where media travels (`FFLEET_STORAGE__BACKEND`, else the run's `FFLEET_TEST_STORAGE`).
    pub backend: StorageBackend,
    /// The `ffleet` binary the next `spawn` runs: this build's unless set (an older release,
    /// for upgrade tests).
    pub bin: PathBuf,
}

/// Settings every fault test runs with: real heartbeat timing (1 s interval, 3 s TTL, 3 s
/// lease), with the backstops shortened so restarts of the splitter and merger show within
/// seconds.
pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("FFLEET_ENCODER__SLOTS", "1"),
    ("FFLEET_STREAMS__ACK_WAIT_SECS", "6"),
    // Its old name (`ffmpeg.stall_timeout_secs` now): the upgrade test runs release 0.1.0
    // processes with these settings too, which refuse the new key; this build reads the old one.
    ("FFLEET_ENCODER__STALL_TIMEOUT_SECS", "3"),
    ("FFLEET_ENCODER__STOP_GRACE_SECS", "0"),
    ("FFLEET_SCHEDULER__RECONCILE_INTERVAL_SECS", "1"),
    ("FFLEET_LOG__LEVEL", "info"),
];

impl ProcFleet {
    /// A server and no services yet; `extra` settings override `DEFAULT_ENV`.
    pub async fn start(extra: &[(&str, &str)]) -> Result<ProcFleet> {
        let mut fleet = Self::prepare(Nats::Single(NatsServer::start_temp()?), extra)?;
        fleet.connect_client().await?;
        Ok(fleet)
    }

    /// Like `start`, on a secured server: TLS and one nkey per role for every process.
    pub async fn start_secure(extra: &[(&str, &str)]) -> Result<ProcFleet> {
        let (secure, server) = super::secure::SecureServer::start()?;
        let mut fleet = Self::prepare(Nats::Single(server), extra)?;
        fleet.url = secure.url();
        let s = &secure.secrets;
        for (k, v) in [
            ("FFLEET_NATS__TLS_REQUIRED", "true".to_owned()),
            ("FFLEET_NATS__TLS_CA_FILE", s.ca().display().to_string()),
            (
                "FFLEET_NATS__TLS_CERT_FILE",
                s.client_cert().display().to_string(),
            ),
            (
                "FFLEET_NATS__TLS_KEY_FILE",
                s.client_key().display().to_string(),
            ),
        ] {
            fleet.env.push((k.into(), v));
        }
        fleet.secure = Some(secure);
        fleet.connect_client().await?;
        Ok(fleet)
    }

    /// The fleet's directories and settings around `nats`, which need not be up yet: no
    /// services and no client connection (`connect_client`).
    pub fn prepare(nats: Nats, extra: &[(&str, &str)]) -> Result<ProcFleet> {
        let url = match &nats {
            Nats::Single(s) => s.url.clone(),
            Nats::Cluster(c) => c.url(),
        };
        let dir = tempfile::Builder::new().prefix("ffleet-procs-").tempdir()?;
        for d in ["media", "out", "scratch", "logs"] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        let mut env: Vec<(String, String)> = DEFAULT_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let root = |d: &str| dir.path().join(d).display().to_string();
        if !env.iter().any(|(k, _)| k == "FFLEET_STORAGE__BACKEND") {
            env.push((
                "FFLEET_STORAGE__BACKEND".into(),
                super::backend_name().into(),
            ));
        }
        let backend = match env.iter().find(|(k, _)| k == "FFLEET_STORAGE__BACKEND") {
            Some((_, v)) if v == "object-store" => StorageBackend::ObjectStore,
            _ => StorageBackend::SharedDir,
        };
        env.push(("FFLEET_STORAGE__SCRATCH".into(), root("scratch")));
        env.push((
            "FFLEET_STORAGE__INPUT_ROOTS".into(),
            format!("[{}]", root("media")),
        ));
        env.push((
            "FFLEET_STORAGE__OUTPUT_ROOTS".into(),
            format!("[{}]", root("out")),
        ));
        let out = dir.path().join("out");
        Ok(ProcFleet {
            nats,
            url,
            dir,
            services: Vec::new(),
            env,
            client: None,
            out,
            ok: false,
            secure: None,
            backend,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_ffleet")),
        })
    }

    /// Connects the test's own client (waiting for the server and for JetStream).
    pub async fn connect_client(&mut self) -> Result<()> {
        let mut cfg = Config::default();
        cfg.nats.url = self.url.clone();
        cfg.storage.backend = self.backend;
        cfg.storage.scratch = self.dir.path().join("scratch");
        cfg.storage.work_dir = self.dir.path().join("work").join("client");
        for (k, v) in &self.env {
            // The client only needs the settings that shape streams, buckets and retries.
            match k.as_str() {
                "FFLEET_STREAMS__ACK_WAIT_SECS" => cfg.streams.ack_wait_secs = v.parse()?,
                "FFLEET_STREAMS__REPLICAS" => cfg.streams.replicas = v.parse()?,
                "FFLEET_STREAMS__MAX_BYTES" => cfg.streams.max_bytes = v.parse()?,
                "FFLEET_STREAMS__EVENTS_MAX_BYTES" => cfg.streams.events_max_bytes = v.parse()?,
                "FFLEET_NATS__OP_RETRY_SECS" => cfg.nats.op_retry_secs = v.parse()?,
                "FFLEET_NATS__REQUEST_TIMEOUT_SECS" => cfg.nats.request_timeout_secs = v.parse()?,
                // The first to connect creates the media bucket: with the fleet's settings.
                "FFLEET_STORAGE__MAX_BYTES" => cfg.storage.max_bytes = v.parse()?,
                "FFLEET_STORAGE__CHUNK_SIZE" => cfg.storage.chunk_size = v.parse()?,
                _ => {}
            }
        }
        if let Some(s) = &self.secure {
            cfg.nats = s.secrets.nats_config(&cfg.nats, Role::Admin);
        }
        self.client = Some(Ctx::connect(Arc::new(cfg), "client", true).await?);
        Ok(())
    }

    /// The single server (panics on a cluster fleet).
    pub fn server(&mut self) -> &mut NatsServer {
        match &mut self.nats {
            Nats::Single(s) => s,
            Nats::Cluster(_) => panic!("a cluster fleet has no single server"),
        }
    }

    /// The cluster (panics on a single-server fleet).
    pub fn cluster(&mut self) -> &mut NatsCluster {
        match &mut self.nats {
            Nats::Cluster(c) => c,
            Nats::Single(_) => panic!("a single-server fleet has no cluster"),
        }
    }

    /// The usual shape: one splitter, scheduler and merger, and `encoders` encoders named
    /// `enc-1`, `enc-2`, ...
    pub async fn standard(encoders: usize, extra: &[(&str, &str)]) -> Result<ProcFleet> {
        let f = Self::start(extra).await?;
        f.with_services(encoders).await
    }

    /// `standard` on a server the test started itself (its own config or limits).
    pub async fn standard_on(
        server: NatsServer,
        encoders: usize,
        extra: &[(&str, &str)],
    ) -> Result<ProcFleet> {
        let mut f = Self::prepare(Nats::Single(server), extra)?;
        f.connect_client().await?;
        f.with_services(encoders).await
    }

    /// `standard` on a secured server (`start_secure`).
    pub async fn standard_secure(encoders: usize, extra: &[(&str, &str)]) -> Result<ProcFleet> {
        let f = Self::start_secure(extra).await?;
        f.with_services(encoders).await
    }

    async fn with_services(mut self, encoders: usize) -> Result<ProcFleet> {
        for svc in ["splitter", "scheduler", "merger"] {
            self.spawn(svc, &[])?;
        }
        for i in 1..=encoders {
            self.spawn_encoder(&format!("enc-{i}"))?;
        }
        self.wait_encoders(encoders, Duration::from_secs(30))
            .await?;
        Ok(self)
    }

    /// The test passed: no need to print the services' logs.
    pub fn passed(&mut self) {
        self.ok = true;
    }

    pub fn media(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// `ffleet -s URL` with the fleet's settings (what its services run with), for a command
    /// the test runs itself (`ffleet dashboard`).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["-s", &self.url])
            .env_remove("NATS_URL")
            .env_remove("FFLEET_CONFIG");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Starts `ffleet run <svc>`; returns its index in `services`.
    pub fn spawn(&mut self, svc: &str, env: &[(&str, &str)]) -> Result<usize> {
        let idx = self.services.len();
        let log = self
            .dir
            .path()
            .join("logs")
            .join(format!("{idx:02}-{svc}.log"));
        let file = std::fs::File::create(&log)?;
        let mut c = Command::new(&self.bin);
        c.args(["-s", &self.url, "run", svc])
            .env_remove("NATS_URL")
            .env_remove("FFLEET_CONFIG")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let (Some(s), Some(role)) = (&self.secure, Role::of_service(svc)) {
            c.env("FFLEET_NATS__NKEY_SEED_FILE", s.secrets.seed(role))
                .env("FFLEET_NATS__ROLE", role.name());
        }
        // Each service (each encoder node) has a private work dir that survives its restarts,
        // so a restarted node's cleanup of what its killed predecessor left can be checked.
        c.env("FFLEET_STORAGE__WORK_DIR", self.work_dir(svc, env));
        if self.backend == StorageBackend::ObjectStore && svc == "encoder" {
            // Over the object store an encoder needs nothing but NATS: no roots, no scratch.
            c.env("FFLEET_STORAGE__INPUT_ROOTS", "[]")
                .env("FFLEET_STORAGE__OUTPUT_ROOTS", "[]")
                .env(
                    "FFLEET_STORAGE__SCRATCH",
                    self.dir.path().join("no-such-dir"),
                );
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().with_context(|| format!("starting {svc}"))?;
        self.services.push(Service {
            name: svc.into(),
            child: Some(child),
            log,
        });
        Ok(idx)
    }

    /// The private work dir of service `svc` (of encoder node `NODE_ID` when `env` names one).
    pub fn work_dir(&self, svc: &str, env: &[(&str, &str)]) -> PathBuf {
        let tag = env
            .iter()
            .find(|(k, _)| *k == "FFLEET_ENCODER__NODE_ID")
            .map_or(svc.to_owned(), |(_, v)| format!("{svc}-{v}"));
        self.dir.path().join("work").join(tag)
    }

    /// The NATS URL the services use.
    pub fn url_of(&self) -> String {
        self.url.clone()
    }

    /// Indexes of the running services named `svc`.
    pub fn services_named(&self, svc: &str) -> Vec<usize> {
        self.services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == svc && s.child.is_some())
            .map(|(i, _)| i)
            .collect()
    }

    pub fn spawn_encoder(&mut self, node: &str) -> Result<usize> {
        self.spawn("encoder", &[("FFLEET_ENCODER__NODE_ID", node)])
    }

    /// Index of the running encoder named `node`.
    pub fn encoder(&self, node: &str) -> Result<usize> {
        let want = format!("FFLEET_ENCODER__NODE_ID={node}");
        self.services
            .iter()
            .enumerate()
            .rev()
            .find(|(_, s)| {
                s.child.is_some()
                    && s.name == "encoder"
                    && std::fs::read(format!("/proc/{}/environ", self.pid(s)))
                        .map(|e| e.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
                        .unwrap_or(false)
            })
            .map(|(i, _)| i)
            .with_context(|| format!("no running encoder {node}"))
    }

    fn pid(&self, s: &Service) -> u32 {
        s.child.as_ref().map_or(0, Child::id)
    }

    pub fn pid_of(&self, idx: usize) -> u32 {
        self.pid(&self.services[idx])
    }

    pub fn signal(&self, idx: usize, sig: &str) -> Result<()> {
        signal_pid(self.pid_of(idx), sig)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, idx: usize) {
        if let Some(mut c) = self.services[idx].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; the exit code once it exits (within `timeout`), else it is killed.
    pub fn terminate(&mut self, idx: usize, timeout: Duration) -> Option<i32> {
        let mut child = self.services[idx].child.take()?;
        stop(&mut child, timeout)
    }

    /// Whether the service is still running (not exited).
    pub fn running(&mut self, idx: usize) -> bool {
        match self.services[idx].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Direct children of a service (its ffmpeg processes).
    pub fn children(&self, idx: usize) -> Vec<u32> {
        let pid = self.pid_of(idx);
        let mut out = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
                }
            }
        }
        out
    }

    pub fn log_text(&self, idx: usize) -> String {
        std::fs::read_to_string(&self.services[idx].log).unwrap_or_default()
    }

    /// Waits until `n` encoders heartbeat.
    pub async fn wait_encoders(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let keys = self.ctx().workers.keys().await.unwrap_or_default();
            if keys.len() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} of {n} encoders came up", keys.len());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn job(&self, job: &str) -> Option<JobRecord> {
        self.ctx()
            .jobs
            .get(job)
            .await
            .ok()
            .flatten()
            .map(|(r, _)| r)
    }

    /// Every unit record of a job (needs its plan).
    pub async fn units(&self, job: &str) -> Vec<(String, SegmentRecord)> {
        let Some(rec) = self.job(job).await else {
            return Vec::new();
        };
        let Some(plan) = &rec.plan else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for u in plan.units() {
            let key = ffleet_runtime::subjects::segment_key(&rec.job_id, u);
            if let Ok(Some((r, _))) = self.ctx().segments.get(&key).await {
                out.push((key, r));
            }
        }
        out
    }

    /// Polls (every 20 ms) until `pick` finds something among the job's unit records.
    pub async fn wait_unit<T>(
        &self,
        job: &str,
        timeout: Duration,
        pick: impl Fn(&str, &SegmentRecord) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            for (k, r) in self.units(job).await {
                if let Some(t) = pick(&k, &r) {
                    return Ok(t);
                }
            }
            if Instant::now() > deadline {
                bail!("no unit of {job} matched within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl JobClient for ProcFleet {
    fn ctx(&self) -> &Ctx {
        self.client.as_ref().expect("client connected")
    }

    fn out_dir(&self) -> &Path {
        &self.out
    }
}

impl Drop for ProcFleet {
    fn drop(&mut self) {
        for s in &mut self.services {
            if let Some(c) = s.child.as_mut() {
                let _ = signal_pid(c.id(), "CONT");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !self.ok {
            for s in &self.services {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                eprintln!("----- {} ({}) -----", s.name, s.log.display());
                for l in log_digest(&text) {
                    eprintln!("{l}");
                }
            }
        }
        // Whole logs for a closer look, of a passed test too: FFLEET_TEST_KEEP_LOGS=<dir>.
        if let Some(keep) = std::env::var_os("FFLEET_TEST_KEEP_LOGS") {
            let to = PathBuf::from(keep).join(self.dir.path().file_name().unwrap_or_default());
            let _ = std::fs::create_dir_all(&to);
            for s in &self.services {
                if let Some(name) = s.log.file_name() {
                    let _ = std::fs::copy(&s.log, to.join(name));
                }
            }
            eprintln!("logs kept in {}", to.display());
        }
    }
}

/// What of a service's log a failed test prints: its warnings and errors and its last lines,
/// each JSON line shortened to `time level message field=value...`. CI keeps only the head and
/// the tail of its output, so the whole dump must stay small.
fn log_digest(text: &str) -> Vec<String> {
    const WARNINGS: usize = 25;
    const LAST: usize = 8;
    const WIDTH: usize = 300;
    let lines: Vec<&str> = text.lines().collect();
    let last_from = lines.len().saturating_sub(LAST);
    let picked: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(i, l)| *i >= last_from || l.contains("\"WARN\"") || l.contains("\"ERROR\""))
        .map(|(i, l)| (i, *l))
        .collect();
    let skip = picked.len().saturating_sub(WARNINGS + LAST);
    let mut out = Vec::new();
    if skip > 0 {
        out.push(format!("({skip} earlier warnings left out)"));
    }
    for (i, l) in picked.into_iter().skip(skip) {
        let mut short = shorten(l);
        if short.len() > WIDTH {
            let mut end = WIDTH;
            while !short.is_char_boundary(end) {
                end -= 1;
            }
            short.truncate(end);
            short.push_str("...");
        }
        out.push(format!("{i:>5} {short}"));
    }
    out
}

/// One JSON log line as `time level message field=value...` (other lines as they are).
fn shorten(line: &str) -> String {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let text = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let time = text("timestamp");
    let time = time.get(11..23).unwrap_or(&time).to_owned();
    let mut out = format!("{time} {} {}", text("level"), text("message"));
    for (k, v) in &m {
        if !matches!(
            k.as_str(),
            "timestamp" | "level" | "message" | "target" | "span"
        ) {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}

/// SIGTERM `child`; its exit code once it exits within `grace`, else it is killed (`None`).
/// A process that runs children of its own (`ffleet up` and its nats-server) stops them on
/// SIGTERM; a SIGKILL would leave them running.
pub fn stop(child: &mut std::process::Child, grace: Duration) -> Option<i32> {
    if let Ok(Some(s)) = child.try_wait() {
        return s.code();
    }
    let _ = signal_pid(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Stops a process that is not this one's child handle (a `tokio::process::Child`) the same
/// way when dropped: SIGTERM, then up to `grace` for it to go before its owner's kill.
pub struct TermOnDrop(pub u32, pub Duration);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        if signal_pid(self.0, "TERM").is_err() {
            return;
        }
        let deadline = Instant::now() + self.1;
        while Instant::now() < deadline {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0));
            // Gone, or exited and waiting to be reaped.
            if stat.map_or(true, |s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn signal_pid(pid: u32, sig: &str) -> Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if !st.success() {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}
