//! The compose deployment (`compose.yaml`) as a real multi-host fleet: every service in its own
//! container on its own address, a three-node JetStream cluster, TLS and per-role credentials.
//! Jobs are submitted from the host through the published NATS ports with the submitter's
//! credentials (`ffleet submit --upload --wait`, as a user would), and faults are real Docker
//! operations: scaling, `docker kill`, `docker network disconnect`, rolling restarts and
//! `docker compose down`/`up`. Every job's output must equal, byte for byte, a fault-free
//! reference made on the host by `ffleet transcode` (itself checked frame-exact against the
//! source), and every job must have exactly one terminal event, `completed`.
//!
//! One compose project serves every scenario in order (bringing up a cluster costs more than
//! any scenario). Needs docker with `docker compose` or `docker-compose`, and the images
//! `scripts/images.sh` builds; without docker it prints why and passes. Run alone with
//! `cargo nextest run --test compose --no-capture` (it prints each scenario's time and each
//! fault's recovery time). scripts/test.sh runs it once, as its own step.

mod common;

use anyhow::{Context, Result, bail, ensure};
use ffleet_runtime::config::{Config, NatsConfig, StorageBackend};
use ffleet_runtime::messages::JobEvent;
use ffleet_runtime::security::Role;
use ffleet_runtime::storage::ObjectStore;
use ffleet_runtime::subjects;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROJECT: &str = "ffleet-compose-test";
/// Host ports of the three NATS nodes (off the defaults, so a user's own fleet is left alone).
const PORTS: [u16; 3] = [14222, 14223, 14224];
/// Where the project publishes its dashboard.
const DASHBOARD_PORT: u16 = 18080;
const JOB_TIMEOUT: Duration = Duration::from_secs(240);
/// Short enough that the suite's stops and faults stay quick; the encoder's drain and the
/// container's stop grace period keep the ratio compose.yaml has (drain + 10 s).
const ENV: &[(&str, &str)] = &[
    ("FFLEET_HEARTBEAT_INTERVAL_SECS", "1"),
    ("FFLEET_HEARTBEAT_TTL_SECS", "3"),
    ("FFLEET_LEASE_TTL_SECS", "3"),
    ("FFLEET_ACK_WAIT_SECS", "10"),
    ("FFLEET_ENCODER_DRAIN_SECS", "3"),
    ("FFLEET_ENCODER_STOP_GRACE_PERIOD", "13s"),
    ("FFLEET_ENCODER_SLOTS", "1"),
    ("FFLEET_HEALTH_INTERVAL", "2s"),
];

/// The docker compose command this machine has: the plugin (`docker compose`, with `--wait`)
/// or the standalone 1.x tool (`docker-compose`, whose `up` cannot wait: healthchecks are
/// polled instead).
#[derive(Clone, Copy)]
enum Tool {
    Plugin,
    Standalone,
}

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn find_tool() -> Option<Tool> {
    if ok(Command::new("docker").args(["compose", "version"])) {
        Some(Tool::Plugin)
    } else if ok(Command::new("docker-compose").arg("version")) {
        Some(Tool::Standalone)
    } else {
        None
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ffleet_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ffleet")
}

fn image(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Runs a command and returns its stdout; fails with its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn docker(args: &[&str]) -> Result<String> {
    run(Command::new("docker").args(args))
}

/// Which NATS node a node-loss round kills.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The leader of the unit records' stream (`KV_ffleet-segments`).
    RecordsLeader,
    /// The JetStream meta leader.
    MetaLeader,
    /// A node that leads neither.
    Follower,
}

/// One node-loss round's figures.
struct Kill {
    victim: String,
    /// Raft groups (meta, streams, consumers) the killed node led.
    led: usize,
    /// The job's wall time, accepted to completed, as its `completed` event says.
    wall: f64,
    /// Submit to checked output, as the submitting client and the test saw it (reconnects and
    /// the output's download included).
    client: Duration,
    /// When the records' stream had a leader other than the killed node again.
    election: Option<Duration>,
    retried: usize,
    longest_retry_ms: u64,
    caught_up: Duration,
}

/// A compose container's service name (`<project>_nats-2_1` or `<project>-nats-2-1`).
fn name_of(container: &str) -> String {
    ["nats-1", "nats-2", "nats-3"]
        .into_iter()
        .find(|n| container.contains(n))
        .unwrap_or(container)
        .to_owned()
}

/// One scenario's figures, for the table printed at the end.
struct Timing {
    scenario: &'static str,
    wall: Duration,
    recovery: String,
}

struct Fleet {
    tool: Tool,
    dir: tempfile::TempDir,
    secrets: ffleet::secrets::Secrets,
    /// The admin's JetStream context over the published ports, once the cluster is up.
    admin: Option<async_nats::jetstream::Context>,
    /// The media bucket as the submitter sees it, for outputs of jobs not followed by the CLI.
    media: Option<ObjectStore>,
    /// The image the ffleet services (provision included) are created from: compose.yaml's
    /// `FFLEET_IMAGE`. Changing it and running `up` for one service is how an upgrade rolls.
    ffleet_image: String,
    /// The `ffleet` the host submits jobs with (the previous release's, in the upgrade).
    cli: PathBuf,
    timings: Vec<Timing>,
}

impl Fleet {
    fn admin(&self) -> &async_nats::jetstream::Context {
        self.admin
            .as_ref()
            .expect("connected once the cluster is up")
    }

    fn secrets_dir(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    fn compose_cmd(&self) -> Command {
        let mut cmd = match self.tool {
            Tool::Plugin => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
            Tool::Standalone => Command::new("docker-compose"),
        };
        cmd.current_dir(repo())
            .args(["-p", PROJECT, "-f"])
            .arg(repo().join("compose.yaml"))
            .envs(ENV.iter().copied())
            .env("FFLEET_SECRETS_DIR", self.secrets_dir())
            .env("FFLEET_IMAGE", &self.ffleet_image)
            .env(
                "FFLEET_NATS_IMAGE",
                image("FFLEET_NATS_IMAGE", "ffleet-nats:2.15.1"),
            );
        for (i, p) in PORTS.iter().enumerate() {
            cmd.env(format!("FFLEET_NATS_PORT_{}", i + 1), p.to_string());
        }
        cmd.env("FFLEET_DASHBOARD_PORT", DASHBOARD_PORT.to_string())
            .env("COMPOSE_PROFILES", "dashboard");
        cmd
    }

    fn compose(&self, args: &[&str]) -> Result<String> {
        run(self.compose_cmd().args(args))
    }

    /// `compose` with `tests/fixtures/<overlay>` merged over compose.yaml.
    fn compose_over(&self, overlay: &str, args: &[&str]) -> Result<String> {
        let file = repo().join("tests/fixtures").join(overlay);
        run(self.compose_cmd().arg("-f").arg(file).args(args))
    }

    /// Recreates nats-2 with its store on a 512 MiB tmpfs (`small`), or back on its volume;
    /// returns its container once healthy and level with the others. On the tmpfs it starts
    /// empty and catches up from the other two, as a node whose disk was replaced does.
    async fn nats_2_store(&self, small: bool) -> Result<(String, Duration)> {
        let args = ["up", "-d", "--no-deps", "--force-recreate", "nats-2"];
        let t = Instant::now();
        if small {
            self.compose_over("compose-small-disk.yaml", &args)?;
        } else {
            self.compose(&args)?;
        }
        let c = self
            .service("nats-2")?
            .pop()
            .context("nats-2's container")?;
        let level = self.level_again(&c, t).await?;
        Ok((c, level))
    }

    /// How full the filesystem under `path` in `container` is, in percent (`df`).
    fn disk_use(&self, container: &str, path: &str) -> Result<u32> {
        let out = docker(&["exec", container, "df", "-P", path])?;
        let line = out.lines().nth(1).context("df printed no filesystem")?;
        let pct = line
            .split_whitespace()
            .nth(4)
            .and_then(|f| f.trim_end_matches('%').parse().ok())
            .with_context(|| format!("df: {line}"))?;
        Ok(pct)
    }

    /// `up -d` with `args`, then every container of the project running and healthy (the
    /// one-shot provision having exited 0): `--wait` with the plugin, polled with 1.x.
    async fn up_wait(&self, args: &[&str]) -> Result<Duration> {
        let started = Instant::now();
        let mut all = vec!["up", "-d"];
        all.extend_from_slice(args);
        if matches!(self.tool, Tool::Plugin) {
            all.push("--wait");
        }
        self.compose(&all)?;
        self.wait_healthy(Duration::from_secs(180)).await?;
        Ok(started.elapsed())
    }

    /// Every container of the project (stopped ones too): (name, state, health).
    fn containers(&self) -> Result<Vec<(String, String, String)>> {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
        ])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args = vec![
            "inspect",
            "-f",
            "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}",
        ];
        args.extend(ids);
        Ok(docker(&args)?
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4).then(|| {
                    let state = if f[1] == "exited" {
                        format!("exited({})", f[3])
                    } else {
                        f[1].to_owned()
                    };
                    (
                        f[0].trim_start_matches('/').to_owned(),
                        state,
                        f[2].to_owned(),
                    )
                })
            })
            .collect())
    }

    async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let cs = self.containers()?;
            let pending: Vec<_> = cs
                .iter()
                .filter(|(name, state, health)| {
                    if name.contains("provision") {
                        state != "exited(0)"
                    } else {
                        state != "running" || health != "healthy"
                    }
                })
                .collect();
            if !cs.is_empty() && pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containers not healthy after {timeout:?}: {pending:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Names of the running containers of `service`, in replica order.
    fn service(&self, service: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = docker(&[
            "ps",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Names}}",
        ])?
        .lines()
        .map(str::to_owned)
        .collect();
        names.sort();
        Ok(names)
    }

    /// The container an encoder node id belongs to (node ids start with the host name, which
    /// Docker sets to the container's short id).
    fn container_of_node(&self, node: &str) -> Result<String> {
        let short = node.rsplit_once('-').map_or(node, |(h, _)| h);
        Ok(docker(&["inspect", "-f", "{{.Name}}", short])?
            .trim()
            .trim_start_matches('/')
            .to_owned())
    }

    /// One more encoder, started with `compose run` on the service's settings, whose wall clock
    /// is `offset` seconds off (libfaketime: the host's Debian build, mounted and preloaded);
    /// returns its container once healthy.
    async fn skewed_encoder(&self, offset: &str) -> Result<String> {
        let dir = faketime_dir()?;
        let out = self.compose(&[
            "run",
            "-d",
            "--no-deps",
            "-e",
            "LD_PRELOAD=/faketime/libfaketimeMT.so.1",
            "-e",
            &format!("FAKETIME={offset}"),
            "-v",
            &format!("{}:/faketime:ro", dir.display()),
            "encoder",
        ])?;
        let id = out
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .context("compose run named no container")?
            .to_owned();
        // A name (docker-compose 1.x) or an id: the name, as `container_of_node` gives it.
        let name = docker(&["inspect", "-f", "{{.Name}}", &id])?
            .trim()
            .trim_start_matches('/')
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let health = docker(&["inspect", "-f", "{{.State.Health.Status}}", &name])?;
            if health.trim() == "healthy" {
                return Ok(name);
            }
            ensure!(
                Instant::now() < deadline,
                "{name} not healthy after 90 s ({})",
                health.trim()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// How far ahead of the server's time of the write encoder `node` stamps its heartbeat,
    /// in seconds.
    async fn written_ahead(&self, node: &str) -> Result<f64> {
        let workers = self
            .admin()
            .get_key_value(subjects::BUCKET_WORKERS)
            .await
            .context("workers bucket")?;
        let entry = workers
            .entry(node)
            .await?
            .with_context(|| format!("no heartbeat of {node}"))?;
        let hb: serde_json::Value = serde_json::from_slice(&entry.value)?;
        let at = hb
            .get("at")
            .and_then(|v| v.as_str())
            .context("heartbeat without `at`")?;
        let at = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)?;
        Ok((at - entry.created).as_seconds_f64())
    }

    /// How far `container`'s wall clock is ahead of this host's, in seconds.
    fn clock_offset(&self, container: &str) -> Result<f64> {
        let host = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
        };
        let before = host()?;
        let theirs: f64 = docker(&["exec", container, "date", "+%s.%N"])?
            .trim()
            .parse()
            .context("date in the container")?;
        let after = host()?;
        Ok(theirs - (before + after) / 2.0)
    }

    /// `compose down` with `args`. Docker sometimes keeps an endpoint of a killed container in
    /// the project's network (seen here after many `docker kill`s): removing the network then
    /// fails with "has active endpoints" although every container is gone. That is not the
    /// fleet's doing and the next `up` reuses the network, so it is told, not failed on.
    fn down(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["down"];
        all.extend_from_slice(args);
        match self.compose(&all) {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("has active endpoints") => {
                let left = docker(&[
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=com.docker.compose.project={PROJECT}"),
                ])?;
                ensure!(left.trim().is_empty(), "containers left after down: {left}");
                println!("compose: down left the project's network (a stale endpoint in Docker)");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the project down, volumes included, and checks none is left: a run that came up
    /// on an earlier run's stores found its jobs already done. `down` stops at a network it
    /// cannot remove (Docker kept a killed container's endpoint: "has active endpoints", seen
    /// here) before it removes the volumes, so they go one by one after it.
    fn clear(&self, grace: &str) -> Result<()> {
        let _ = self.down(&["-v", "--remove-orphans", "-t", grace]);
        let label = format!("label=com.docker.compose.project={PROJECT}");
        let left = || -> Result<Vec<String>> {
            Ok(docker(&["volume", "ls", "-q", "--filter", &label])?
                .lines()
                .map(str::to_owned)
                .collect())
        };
        let volumes = left()?;
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            let _ = docker(&args);
        }
        let volumes = left()?;
        ensure!(
            volumes.is_empty(),
            "volumes of an earlier run cannot be removed: {volumes:?}"
        );
        Ok(())
    }

    fn network(&self) -> String {
        format!("{}_default", PROJECT)
    }

    fn submitter_env(&self) -> Vec<(String, String)> {
        let s = &self.secrets;
        vec![
            ("FFLEET_NATS__ROLE".into(), "submitter".into()),
            (
                "FFLEET_NATS__NKEY_SEED_FILE".into(),
                s.seed(Role::Submitter).display().to_string(),
            ),
            (
                "FFLEET_NATS__TLS_CA_FILE".into(),
                s.ca().display().to_string(),
            ),
            (
                "FFLEET_NATS__TLS_CERT_FILE".into(),
                s.client_cert().display().to_string(),
            ),
            (
                "FFLEET_NATS__TLS_KEY_FILE".into(),
                s.client_key().display().to_string(),
            ),
            // A job waits through a whole `down`/`up`: the CLI keeps reconnecting meanwhile.
            ("FFLEET_NATS__STARTUP_WAIT_SECS".into(), "120".into()),
        ]
    }

    /// `ffleet submit --upload --wait` from the host as the submitter, in the background.
    fn submit_wait(&self, job: &str, clip: &Clip) -> Result<Submitted> {
        self.submit_with(job, clip, true)
    }

    /// `ffleet submit --upload` from the host as the submitter: the command returns once the
    /// job is submitted; the test follows it through the events stream (as the admin, which
    /// sees every stored event even across a reconnect) and fetches the output from the media
    /// bucket as the submitter.
    fn submit(&self, job: &str, clip: &Clip) -> Result<Submitted> {
        self.submit_with(job, clip, false)
    }

    fn submit_with(&self, job: &str, clip: &Clip, wait: bool) -> Result<Submitted> {
        let out = self.dir.path().join(format!("{job}.mp4"));
        let log = self.dir.path().join(format!("{job}.log"));
        let child = Command::new(&self.cli)
            .current_dir(self.dir.path())
            .env_remove("FFLEET_CONFIG")
            .envs(self.submitter_env())
            .args(["-s", &host_url(), "submit", "--upload", "--job-id", job])
            .args(wait.then_some("--wait"))
            .args(["--segment-seconds", &clip.segment_seconds.to_string()])
            .arg(&clip.path)
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(log.with_extension("err"))?)
            .spawn()
            .context("starting ffleet submit")?;
        Ok(Submitted {
            job: job.to_owned(),
            wait,
            child,
            out,
            log,
            reference: clip.reference.clone(),
        })
    }

    /// Every event stored for `job`, oldest first, read as the admin from the events stream
    /// (so a duplicate terminal event would show). Retried through elections.
    async fn events(&self, job: &str) -> Result<Vec<JobEvent>> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match events_once(self.admin(), job).await {
                Ok(e) => return Ok(e),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// The job's command exited 0, its output equals the reference byte for byte, and it has
    /// exactly one terminal event, `completed`.
    async fn check(&self, s: &mut Submitted) -> Result<()> {
        let status = wait_child(&mut s.child, JOB_TIMEOUT).await?;
        let said = std::fs::read_to_string(&s.log).unwrap_or_default()
            + &std::fs::read_to_string(s.log.with_extension("err")).unwrap_or_default();
        ensure!(status.success(), "job {} exited {status}: {said}", s.job);
        if !s.wait {
            self.wait_terminal(&s.job).await?;
            if let Some(JobEvent::Failed(f)) = self
                .events(&s.job)
                .await?
                .into_iter()
                .find(JobEvent::is_terminal)
            {
                bail!("job {} failed: {}: {}", s.job, f.reason, f.message);
            }
            let key = format!("outputs/{}/{}.mp4", s.job, s.job);
            let media = self.media.as_ref().expect("opened with the cluster");
            // Checked against the digest the completed event names, as `submit --wait` does;
            // the submitter may not remove it (the merger does, after `keep_outputs_secs`).
            let digest = self
                .events(&s.job)
                .await?
                .into_iter()
                .find_map(|e| match e {
                    JobEvent::Completed(c) => c.digest,
                    _ => None,
                })
                .with_context(|| format!("the completed event of {} names no digest", s.job))?;
            media
                .download(&key, Some(&digest), &s.out)
                .await
                .with_context(|| format!("fetching the output of {}", s.job))?;
            ensure!(!media.may_delete(), "a submitter's media store may delete");
        }
        let out = std::fs::read(&s.out).with_context(|| format!("output of {}", s.job))?;
        ensure!(
            out == s.reference.bytes,
            "output of {} ({} bytes) differs from the fault-free reference ({} bytes)",
            s.job,
            out.len(),
            s.reference.bytes.len()
        );
        let events = self.events(&s.job).await?;
        let terminal: Vec<&JobEvent> = events.iter().filter(|e| e.is_terminal()).collect();
        ensure!(
            terminal.len() == 1 && matches!(terminal[0], JobEvent::Completed(_)),
            "job {} must have exactly one terminal event, completed; it has {terminal:?}",
            s.job
        );
        Ok(())
    }

    /// Waits for the job's first terminal event in the events stream.
    async fn wait_terminal(&self, job: &str) -> Result<()> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            if let Ok(evs) = events_once(self.admin(), job).await
                && evs.iter().any(JobEvent::is_terminal)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("job {job} did not end within {JOB_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The media bucket with the submitter's credentials.
    async fn open_media(&self) -> Result<ObjectStore> {
        let mut cfg = Config {
            nats: self.secrets.nats_config(
                &NatsConfig {
                    url: host_url(),
                    discover_servers: false,
                    ..NatsConfig::default()
                },
                Role::Submitter,
            ),
            ..Config::default()
        };
        cfg.storage.backend = StorageBackend::ObjectStore;
        cfg.storage.work_dir = self.dir.path().join("work");
        common::objects::open(&cfg, Duration::from_secs(60)).await
    }

    /// Waits until every `ffleet submit` (without --wait) has exited 0: its input is in the
    /// media bucket and its job submitted.
    async fn submitted(&self, jobs: &mut [Submitted]) -> Result<()> {
        for s in jobs.iter_mut().filter(|s| !s.wait) {
            let status = wait_child(&mut s.child, JOB_TIMEOUT).await?;
            let said = std::fs::read_to_string(s.log.with_extension("err")).unwrap_or_default();
            ensure!(
                status.success(),
                "submitting {} exited {status}: {said}",
                s.job
            );
        }
        Ok(())
    }

    async fn check_all(&self, jobs: &mut [Submitted]) -> Result<()> {
        for s in jobs.iter_mut() {
            self.check(s).await?;
        }
        Ok(())
    }

    /// segment_done events of `job` so far: (unit, attempt, node).
    async fn segments_done(&self, job: &str) -> Result<Vec<(String, u32, String)>> {
        Ok(self
            .events(job)
            .await?
            .into_iter()
            .filter_map(|e| match e {
                JobEvent::SegmentDone(d) => {
                    Some((format!("{:?}", d.unit), d.attempt, d.node.to_string()))
                }
                _ => None,
            })
            .collect())
    }

    /// The segment records of `job` (admin may read the bucket): unit key → (state, attempt,
    /// owner).
    async fn units(&self, job: &str) -> Result<BTreeMap<String, (String, u32, Option<String>)>> {
        let kv = self
            .admin()
            .get_key_value(subjects::BUCKET_SEGMENTS)
            .await
            .context("segments bucket")?;
        let mut keys = kv.keys().await?;
        let mut out = BTreeMap::new();
        while let Some(k) = keys.next().await {
            let k = k?;
            if !k.starts_with(&format!("{job}.")) {
                continue;
            }
            if let Some(v) = kv.get(&k).await? {
                let r: ffleet_runtime::messages::SegmentRecord = serde_json::from_slice(&v)?;
                out.insert(
                    k,
                    (
                        format!("{:?}", r.state),
                        r.attempt,
                        r.owner.map(|o| o.to_string()),
                    ),
                );
            }
        }
        Ok(out)
    }

    /// Waits until some unit of `job` is running on an encoder; returns (unit key, attempt,
    /// node).
    async fn running_unit(&self, job: &str, timeout: Duration) -> Result<(String, u32, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(units) = self.units(job).await {
                let running = units.into_iter().find_map(|(k, (state, attempt, owner))| {
                    (state.to_lowercase().contains("running"))
                        .then_some(())
                        .and(owner.map(|o| (k, attempt, o)))
                });
                if let Some(r) = running {
                    return Ok(r);
                }
            }
            if Instant::now() > deadline {
                bail!("no unit of {job} ran on an encoder within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `unit` of `job` has moved past `attempt` (re-issued for another node).
    async fn moved_on(&self, job: &str, unit: &str, attempt: u32) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(units) = self.units(job).await
                && units.get(unit).is_some_and(|(_, a, _)| *a > attempt)
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{unit} of {job} still at attempt {attempt} after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The wall time a completed job's `completed` event reports (accepted to completed).
    async fn job_wall(&self, job: &str) -> Result<f64> {
        self.events(job)
            .await?
            .into_iter()
            .find_map(|e| match e {
                JobEvent::Completed(c) => Some(c.wall_secs),
                _ => None,
            })
            .with_context(|| format!("no completed event of {job}"))
    }

    /// The meta leader and the leader (server name) of each stream and of each consumer
    /// (`<stream>/<consumer>`), as a live node reports them.
    fn leaders(&self) -> Result<(String, BTreeMap<String, String>)> {
        for node in ["nats-1", "nats-2", "nats-3"] {
            let Some(c) = self.service(node)?.pop() else {
                continue;
            };
            let path = "/jsz?accounts=true&streams=true&consumers=true";
            let Ok(text) = self.nats_monitor(&c, path) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let meta = v["meta_cluster"]["leader"].as_str().unwrap_or_default();
            let mut streams = BTreeMap::new();
            for acc in v["account_details"].as_array().into_iter().flatten() {
                for s in acc["stream_detail"].as_array().into_iter().flatten() {
                    let Some(name) = s["name"].as_str() else {
                        continue;
                    };
                    if let Some(leader) = s["cluster"]["leader"].as_str() {
                        streams.insert(name.to_owned(), leader.to_owned());
                    }
                    for c in s["consumer_detail"].as_array().into_iter().flatten() {
                        if let (Some(cn), Some(leader)) =
                            (c["name"].as_str(), c["cluster"]["leader"].as_str())
                        {
                            streams.insert(format!("{name}/{cn}"), leader.to_owned());
                        }
                    }
                }
            }
            if !meta.is_empty() {
                return Ok((meta.to_owned(), streams));
            }
        }
        bail!("no NATS node reported its cluster's leaders")
    }

    /// One node-loss round: `job` of `clip` submitted, the node chosen by `target` killed while
    /// a unit runs, the job checked, the node started again and waited for until its streams
    /// are level with a survivor's.
    async fn nats_kill_round(&self, job: &str, clip: &Clip, target: Target) -> Result<Kill> {
        let started = Instant::now();
        let mut s = self.submit(job, clip)?;
        self.running_unit(job, Duration::from_secs(60)).await?;
        let records = subjects::kv_stream(subjects::BUCKET_SEGMENTS);
        let (meta, streams) = self.leaders()?;
        let records_leader = streams.get(&records).cloned().unwrap_or_default();
        let name = match target {
            Target::RecordsLeader => records_leader.clone(),
            Target::MetaLeader => meta.clone(),
            // The node leading the fewest groups, none if one leads nothing.
            Target::Follower => ["nats-1", "nats-2", "nats-3"]
                .into_iter()
                .filter(|n| *n != meta)
                .min_by_key(|n| streams.values().filter(|l| l == n).count())
                .unwrap_or("nats-3")
                .to_owned(),
        };
        let led = streams.values().filter(|l| **l == name).count() + usize::from(meta == name);
        let victim = self
            .service(&name)?
            .pop()
            .with_context(|| format!("container of {name}"))?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            .saturating_sub(1)
            .to_string();
        docker(&["kill", &victim])?;
        let killed = Instant::now();
        let admin = self.admin().clone();
        let election = tokio::spawn(async move {
            // Until the records' stream reports a leader other than the killed node.
            while killed.elapsed() < Duration::from_secs(60) {
                let info = tokio::time::timeout(Duration::from_secs(2), async {
                    let mut stream = admin.get_stream(&records).await.ok()?;
                    stream.info().await.ok().cloned()
                })
                .await;
                if let Ok(Some(i)) = info
                    && let Some(l) = i.cluster.and_then(|c| c.leader)
                    && l != name
                {
                    return Some(killed.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None
        });
        self.check(&mut s).await?;
        let client = started.elapsed();
        let wall = self.job_wall(job).await?;
        let election = election.await.ok().flatten();
        let (retried, longest_retry_ms) = self.retries_since(&since)?;
        self.keep_logs(job, &since)?;
        // `restart: unless-stopped` brings it back; start it if the engine did not.
        let _ = docker(&["start", &victim]);
        let caught_up = self.level_again(&victim, killed).await?;
        Ok(Kill {
            led,
            victim: name_of(&victim),
            wall,
            client,
            election,
            retried,
            longest_retry_ms,
            caught_up,
        })
    }

    /// With `FFLEET_COMPOSE_KEEP_LOGS=<dir>`: every ffleet container's log since `since` (unix
    /// seconds), into `<dir>/<label>-<container>.log`, for a closer look at a fault's cost.
    fn keep_logs(&self, label: &str, since: &str) -> Result<()> {
        let Some(dir) = std::env::var_os("FFLEET_COMPOSE_KEEP_LOGS") else {
            return Ok(());
        };
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        for service in ["splitter", "scheduler", "merger", "encoder"] {
            for c in self.service(service)? {
                let out = Command::new("docker")
                    .args(["logs", "--since", since, &c])
                    .output()?;
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                std::fs::write(dir.join(format!("{label}-{c}.log")), text)?;
            }
        }
        Ok(())
    }

    /// JetStream operations the ffleet services retried since `since` (unix seconds): how many
    /// succeeded after retrying, and the longest wait among them.
    fn retries_since(&self, since: &str) -> Result<(usize, u64)> {
        let (mut n, mut longest) = (0, 0);
        for service in ["splitter", "scheduler", "merger", "encoder"] {
            for c in self.service(service)? {
                let out = Command::new("docker")
                    .args(["logs", "--since", since, &c])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                for line in text
                    .lines()
                    .filter(|l| l.contains("succeeded after retrying"))
                {
                    n += 1;
                    let waited = line
                        .split("\"waited_ms\":")
                        .nth(1)
                        .and_then(|r| r.split([',', '}']).next())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    longest = longest.max(waited);
                }
            }
        }
        Ok((n, longest))
    }

    /// Waits until `victim` (started again) is healthy and its streams are level with a
    /// survivor's; how long after `killed` that was.
    async fn level_again(&self, victim: &str, killed: Instant) -> Result<Duration> {
        let survivor = ["nats-1", "nats-2", "nats-3"]
            .into_iter()
            .filter_map(|n| self.service(n).ok()?.pop())
            .find(|c| c != victim)
            .context("a surviving NATS container")?;
        loop {
            let healthy = self
                .containers()?
                .iter()
                .any(|(n, s, h)| n == victim && s == "running" && h == "healthy");
            if healthy
                && let (Ok(a), Ok(b)) = (self.node_streams(victim), self.node_streams(&survivor))
                && !a.is_empty()
                && a == b
            {
                return Ok(killed.elapsed());
            }
            ensure!(
                killed.elapsed() < Duration::from_secs(120),
                "{victim} did not catch up within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The monitoring endpoint of a NATS node, read inside its container.
    fn nats_monitor(&self, container: &str, path: &str) -> Result<String> {
        docker(&[
            "exec",
            container,
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://127.0.0.1:8222{path}"),
        ])
    }

    /// What a node's monitoring endpoint answers, whatever its status: the body (GNU wget,
    /// in the image scripts/images.sh builds), or the status line (busybox wget, in the
    /// official alpine image, which prints no body of an error).
    fn nats_monitor_body(&self, container: &str, path: &str) -> Result<String> {
        let url = format!("http://127.0.0.1:8222{path}");
        docker(&[
            "exec",
            container,
            "sh",
            "-c",
            &format!(
                "wget -q -O - --content-on-error '{url}' 2>&1 || wget -q -S -O - '{url}' 2>&1; true"
            ),
        ])
    }

    /// last_seq of every ffleet stream on one node, from its own view (`/jsz`).
    fn node_streams(&self, container: &str) -> Result<BTreeMap<String, u64>> {
        let text = self.nats_monitor(container, "/jsz?accounts=true&streams=true")?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let mut out = BTreeMap::new();
        for acc in v["account_details"].as_array().into_iter().flatten() {
            for s in acc["stream_detail"].as_array().into_iter().flatten() {
                if let (Some(name), Some(last)) =
                    (s["name"].as_str(), s["state"]["last_seq"].as_u64())
                {
                    out.insert(name.to_owned(), last);
                }
            }
        }
        Ok(out)
    }

    /// Every stream and bucket this build provisions (the media object store and its index
    /// included) exists at 3 replicas.
    async fn replicated(&self) -> Result<()> {
        for name in subjects::provisioned_streams(true) {
            let mut stream = self
                .admin()
                .get_stream(&name)
                .await
                .with_context(|| format!("stream {name}"))?;
            let info = stream.info().await?;
            ensure!(
                info.config.num_replicas == 3,
                "{name} has {} replicas",
                info.config.num_replicas
            );
        }
        Ok(())
    }

    /// Every scenario's figures, as a markdown table.
    fn table(&self) {
        println!("| scenario | wall | recovery |\n| --- | --- | --- |");
        for t in self.timings.iter().filter(|t| t.scenario != "done") {
            println!(
                "| {} | {:.1} s | {} |",
                t.scenario,
                t.wall.as_secs_f64(),
                t.recovery
            );
        }
    }

    fn record(&mut self, scenario: &'static str, wall: Duration, recovery: String) {
        println!(
            "compose: {scenario}: {:.1} s; {recovery}",
            wall.as_secs_f64()
        );
        self.timings.push(Timing {
            scenario,
            wall,
            recovery,
        });
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::env::var_os("FFLEET_COMPOSE_KEEP").is_some() {
            return;
        }
        // Logs of a failed run first, then everything goes, volumes included.
        if (std::thread::panicking() || !self.timings.iter().any(|t| t.scenario == "done"))
            && let Ok(logs) = self.compose(&["logs", "--no-color", "--tail", "40"])
        {
            let keep = self.dir.path().with_extension("log");
            let _ = std::fs::write(&keep, &logs);
            // The tail of every container's log goes to the test's output too: on a CI machine
            // the kept file is gone with the run.
            let tail: Vec<&str> = logs.lines().rev().take(120).collect();
            eprintln!("compose logs (last 120 lines):");
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
            eprintln!("compose logs kept in {}", keep.display());
        }
        let _ = self.clear("5");
    }
}

/// GET `path` of the project's dashboard (with `token`): the status and the body.
fn dashboard_get(path: &str, token: Option<&str>) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", DASHBOARD_PORT))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    Ok((status, raw))
}

fn host_url() -> String {
    PORTS
        .iter()
        .map(|p| format!("tls://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

async fn events_once(js: &async_nats::jetstream::Context, job: &str) -> Result<Vec<JobEvent>> {
    common::client::stored_events(js, Some(job)).await
}

async fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("ffleet submit still running after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A source clip and its fault-free reference output.
struct Clip {
    path: PathBuf,
    segment_seconds: f64,
    reference: std::sync::Arc<Reference>,
}

struct Reference {
    bytes: Vec<u8>,
}

struct Submitted {
    job: String,
    /// Followed to its end by `ffleet submit --wait`, which fetched the output.
    wait: bool,
    child: Child,
    out: PathBuf,
    log: PathBuf,
    reference: std::sync::Arc<Reference>,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clip made with ffmpeg, and its reference: `ffleet transcode` on the host with the same
/// segment length, checked frame-exact against the source.
fn clip(dir: &Path, name: &str, secs: u32, size: &str, segment_seconds: f64) -> Result<Clip> {
    let path = common::media::ntsc_source(dir, &format!("{name}.mp4"), secs, size)?;
    let reference = dir.join(format!("{name}-reference.mp4"));
    run(Command::new(ffleet_bin())
        .current_dir(dir)
        .env_remove("FFLEET_CONFIG")
        .env_remove("NATS_URL")
        .args(["transcode", "-q", "--segment-seconds"])
        .arg(segment_seconds.to_string())
        .arg(&path)
        .arg("-o")
        .arg(&reference))?;
    let sv = common::media::span(&path, "v:0")?.context("source video")?;
    let rv = common::media::span(&reference, "v:0")?.context("reference video")?;
    let frame = 1.0 / common::media::frame_rate(&path)?;
    ensure!(
        rv.count == sv.count,
        "reference frame count {} != source {}",
        rv.count,
        sv.count
    );
    ensure!(
        (rv.duration() - sv.duration()).abs() <= frame + 1e-3,
        "reference duration {} != source {}",
        rv.duration(),
        sv.duration()
    );
    Ok(Clip {
        path,
        segment_seconds,
        reference: std::sync::Arc::new(Reference {
            bytes: std::fs::read(&reference)?,
        }),
    })
}

/// Where the host's libfaketime lives (Debian's `libfaketime`, installed by scripts/setup.sh),
/// mounted into an encoder container to skew its clock.
fn faketime_dir() -> Result<PathBuf> {
    let found = std::fs::read_dir("/usr/lib")?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("faketime"))
        .find(|d| d.join("libfaketimeMT.so.1").exists());
    found.context("libfaketimeMT.so.1 is missing: scripts/setup.sh installs libfaketime")
}

fn images_present(images: &[String]) -> Result<()> {
    for name in images {
        if !ok(Command::new("docker").args(["image", "inspect", name])) {
            bail!(
                "image {name} is missing: build it with scripts/images.sh (scripts/setup.sh does)"
            );
        }
    }
    Ok(())
}

/// Says why the compose tests cannot run: they skip, loudly, or fail where Docker is expected
/// (`FFLEET_COMPOSE_REQUIRED=1`, set by scripts/test.sh where Docker is installed), so a
/// machine that should run them never passes without.
fn skipped<T>(why: &str) -> Result<Option<T>> {
    if std::env::var("FFLEET_COMPOSE_REQUIRED").as_deref() == Ok("1") {
        bail!("compose tests required (FFLEET_COMPOSE_REQUIRED=1) but cannot run: {why}");
    }
    println!("SKIPPED compose tests: {why}");
    Ok(None)
}

/// The fleet up and healthy from nothing, with the clips the scenarios submit: `None` (after
/// saying why) where this machine has no docker or no compose tool. `ffleet_image` runs the
/// ffleet services; `cli` is the `ffleet` the host submits with.
async fn bring_up(ffleet_image: String, cli: PathBuf) -> Result<Option<(Fleet, Clip, Clip)>> {
    if !ok(Command::new("docker").arg("info")) {
        return skipped("docker is not available (docker info failed)");
    }
    let Some(tool) = find_tool() else {
        return skipped("neither `docker compose` nor `docker-compose` is installed");
    };
    images_present(&[
        ffleet_image.clone(),
        image("FFLEET_NATS_IMAGE", "ffleet-nats:2.15.1"),
    ])?;
    // Checked before the fleet comes up: the clock scenario needs it.
    faketime_dir()?;

    let dir = tempfile::Builder::new()
        .prefix("ffleet-compose-")
        .tempdir()?;
    let secrets_dir = dir.path().join("secrets");
    run(Command::new(ffleet_bin())
        .args(["secrets", "init"])
        .arg(&secrets_dir)
        .args(["--host", "nats-1", "--host", "nats-2", "--host", "nats-3"]))?;
    let secrets = ffleet::secrets::Secrets::open(&secrets_dir)?;

    // The clips and their references, made while nothing else runs.
    let started = Instant::now();
    let tiny = clip(dir.path(), "tiny", 4, "320x240", 1.0)?;
    // Segments that take a second or more each, so a fault lands in the middle of one. Both
    // clips ask for 1 s segments, the pool rule's floor: whatever the pool's size (2 slots on the
    // host, more in the fleet, changing as it scales), the plan and so the bytes are the
    // reference's. A longer cap would let the plan follow the pool, and segments that start
    // between keyframes follow their target exactly.
    let slow = clip(dir.path(), "slow", 8, "1280x720", 1.0)?;
    println!(
        "compose: clips and references made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let admin_cfg = secrets.nats_config(
        &NatsConfig {
            url: host_url(),
            discover_servers: false,
            ..NatsConfig::default()
        },
        Role::Admin,
    );
    let mut fleet = Fleet {
        tool,
        secrets,
        admin: None,
        media: None,
        dir,
        ffleet_image,
        cli,
        timings: Vec::new(),
    };
    // Leftovers of an interrupted run of this suite would hold the ports and volumes.
    fleet.clear("1")?;
    let took = fleet.up_wait(&[]).await?;
    let client = ffleet_runtime::nats::connect(&admin_cfg, "compose-test", false).await?;
    fleet.admin = Some(ffleet_runtime::nats::connect::jetstream(client, &admin_cfg));
    fleet.media = Some(fleet.open_media().await?);
    fleet.record("up from nothing (healthy)", took, String::new());

    Ok(Some((fleet, tiny, slow)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_fleet_survives_scaling_node_loss_partitions_restarts_and_down() -> Result<()> {
    let suite = Instant::now();
    let image = image("FFLEET_IMAGE", "ffleet:local");
    let Some((mut fleet, tiny, slow)) = bring_up(image, ffleet_bin().into()).await? else {
        return Ok(());
    };
    fleet.replicated().await?;

    // 1. Five jobs at once.
    let started = Instant::now();
    let mut jobs = (0..5)
        .map(|i| fleet.submit_wait(&format!("five-{i}"), &tiny))
        .collect::<Result<Vec<_>>>()?;
    fleet.check_all(&mut jobs).await?;
    fleet.record("five jobs at once", started.elapsed(), String::new());

    // The dashboard container serves the fleet and its jobs, only with its token.
    let token = std::fs::read_to_string(fleet.secrets.dashboard_token())?;
    let (status, _) = dashboard_get("/", None)?;
    ensure!(
        status == 303,
        "the dashboard answered {status} without its token"
    );
    let (status, page) = dashboard_get("/", Some(token.trim()))?;
    ensure!(
        status == 200,
        "the dashboard answered {status} with its token"
    );
    ensure!(
        page.contains("data-job=\"five-0\"") && page.contains("data-node="),
        "the dashboard does not show the fleet and its jobs"
    );

    // 2. Scale encoders 1 -> 4 while a job runs: the new ones take segments of it.
    fleet.up_wait(&["--scale", "encoder=1"]).await?;
    let before: BTreeSet<String> = fleet.service("encoder")?.into_iter().collect();
    let started = Instant::now();
    let mut job = fleet.submit("scale", &slow)?;
    fleet.running_unit("scale", Duration::from_secs(60)).await?;
    let scaled = Instant::now();
    fleet.up_wait(&["--scale", "encoder=4"]).await?;
    let healthy = scaled.elapsed();
    fleet.check(&mut job).await?;
    let mut new_nodes = BTreeSet::new();
    for (_, _, node) in fleet.segments_done("scale").await? {
        let c = fleet.container_of_node(&node)?;
        if !before.contains(&c) {
            new_nodes.insert(c);
        }
    }
    ensure!(
        !new_nodes.is_empty(),
        "no new encoder took a segment of the running job (before: {before:?})"
    );
    fleet.record(
        "scale encoders 1 -> 4 mid-job",
        started.elapsed(),
        format!(
            "3 new encoders healthy {:.1} s after the scale; {} of them encoded segments of the running job",
            healthy.as_secs_f64(),
            new_nodes.len()
        ),
    );

    // 3. NATS node loss. Fault-free jobs of the clip first, the baseline on this fleet; then
    // rounds that each kill one NATS node mid-job, in turn the leader of the unit records'
    // stream, the meta leader and a node leading neither (FFLEET_COMPOSE_NODE_KILLS rounds, 3
    // by default). Each job must complete byte-identical; the node comes back and catches up.
    // The baseline is the median of three fault-free runs, one after another: a single one is
    // as noisy as the machine.
    let started = Instant::now();
    let mut walls = Vec::new();
    for i in 0..3 {
        let job = format!("nats-base-{i}");
        let mut base = fleet.submit(&job, &slow)?;
        fleet.check(&mut base).await?;
        walls.push(fleet.job_wall(&job).await?);
    }
    walls.sort_by(f64::total_cmp);
    let baseline = walls[1];
    let rounds: usize = std::env::var("FFLEET_COMPOSE_NODE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut kills = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let target = [Target::RecordsLeader, Target::MetaLeader, Target::Follower][round % 3];
        let k = fleet
            .nats_kill_round(&format!("nats-kill-{round}"), &slow, target)
            .await?;
        println!(
            "compose: node loss round {round}: killed {} ({target:?}, leader of {} groups); job {:.1} s against {:.1} s fault-free (+{:.1} s; {:.1} s as the submitting client saw it); records' stream leader again after {}; {} operation(s) retried (longest wait {} ms); node level again {:.1} s after the kill",
            k.victim,
            k.led,
            k.wall,
            baseline,
            k.wall - baseline,
            k.client.as_secs_f64(),
            k.election
                .map_or("-".to_owned(), |e| format!("{:.1} s", e.as_secs_f64())),
            k.retried,
            k.longest_retry_ms,
            k.caught_up.as_secs_f64()
        );
        kills.push(k);
    }
    let mut added: Vec<f64> = kills.iter().map(|k| k.wall - baseline).collect();
    added.sort_by(f64::total_cmp);
    fleet.record(
        "docker kill a NATS node mid-job",
        started.elapsed(),
        format!(
            "{rounds} kill(s), every job completed; added to the job's {:.1} s: median {:.1} s, range {:.1} to {:.1} s",
            baseline,
            added.get(added.len() / 2).copied().unwrap_or(0.0),
            added.first().copied().unwrap_or(0.0),
            added.last().copied().unwrap_or(0.0),
        ),
    );

    // FFLEET_COMPOSE_ONLY=node-loss: the suite up to here, for repeated runs of the node-loss
    // rounds (`scripts/node-loss-runs.sh`).
    if std::env::var("FFLEET_COMPOSE_ONLY").as_deref() == Ok("node-loss") {
        fleet.record("done", suite.elapsed(), "up to node loss".into());
        return Ok(());
    }

    // 4. An encoder whose wall clock runs a minute ahead (libfaketime from the host, preloaded
    // into its container) beside one on true time: it takes segments, no unit is handed on
    // early (every unit done at its first attempt), the output is byte-identical.
    let started = Instant::now();
    let skewed = fleet.skewed_encoder("+60").await?;
    let skew = fleet.clock_offset(&skewed)?;
    ensure!(
        (50.0..70.0).contains(&skew),
        "{skewed}'s clock is {skew:.0} s off, not a minute ahead"
    );
    fleet.up_wait(&["--scale", "encoder=1"]).await?;
    let mut job = fleet.submit("clock-ahead", &slow)?;
    fleet.check(&mut job).await?;
    let mut on_skewed = Vec::new();
    for (_, _, node) in fleet.segments_done("clock-ahead").await? {
        if fleet.container_of_node(&node)? == skewed {
            on_skewed.push(node);
        }
    }
    let node = on_skewed
        .first()
        .context("the encoder a minute ahead took no segment")?;
    // Its own clock is the one off: the heartbeat it writes is stamped a minute ahead of the
    // server's time of the write.
    let ahead = fleet.written_ahead(node).await?;
    ensure!(
        (50.0..70.0).contains(&ahead),
        "{node}'s heartbeat is stamped {ahead:.0} s from the server's time, not a minute ahead"
    );
    let again: Vec<_> = fleet
        .units("clock-ahead")
        .await?
        .into_iter()
        .filter(|(_, (_, attempt, _))| *attempt != 1)
        .collect();
    ensure!(
        again.is_empty(),
        "units handed on with clocks apart: {again:?}"
    );
    // Stopped, not killed: it drains and takes its heartbeat away before the next scenario.
    docker(&["stop", "-t", "10", &skewed])?;
    docker(&["rm", &skewed])?;
    fleet.up_wait(&["--scale", "encoder=4"]).await?;
    fleet.record(
        "an encoder's clock a minute ahead",
        started.elapsed(),
        format!(
            "clock {skew:.0} s ahead, heartbeats stamped {ahead:.0} s ahead; it encoded {} segment(s); every unit done at its first attempt",
            on_skewed.len()
        ),
    );

    // 5. Kill an encoder mid-segment: its segment moves on.
    let started = Instant::now();
    let mut job = fleet.submit("encoder-kill", &slow)?;
    let (unit, attempt, node) = fleet
        .running_unit("encoder-kill", Duration::from_secs(60))
        .await?;
    let victim = fleet.container_of_node(&node)?;
    docker(&["kill", &victim])?;
    let moved = fleet.moved_on("encoder-kill", &unit, attempt).await?;
    fleet.check(&mut job).await?;
    let _ = docker(&["start", &victim]);
    fleet.record(
        "docker kill an encoder mid-segment",
        started.elapsed(),
        format!(
            "its segment re-issued {:.1} s after the kill",
            moved.as_secs_f64()
        ),
    );
    fleet.wait_healthy(Duration::from_secs(120)).await?;

    // 6. Cut an encoder off the network past the heartbeat TTL, then reconnect it.
    let started = Instant::now();
    let mut job = fleet.submit("partition", &slow)?;
    let (unit, attempt, node) = fleet
        .running_unit("partition", Duration::from_secs(60))
        .await?;
    let victim = fleet.container_of_node(&node)?;
    let net = fleet.network();
    docker(&["network", "disconnect", &net, &victim])?;
    let cut = Instant::now();
    let moved = fleet.moved_on("partition", &unit, attempt).await?;
    // Past the TTL (3 s) with room to spare, then back.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(cut.elapsed())).await;
    docker(&["network", "connect", &net, &victim])?;
    fleet.check(&mut job).await?;
    let units = fleet.units("partition").await?;
    let (_, final_attempt, owner) = units.get(&unit).context("the cut-off unit's record")?;
    // The re-issued attempt may land on any encoder, the cut-off one too once it is back: what
    // matters is that the attempt it held was superseded, so its result of that one is refused.
    ensure!(
        *final_attempt > attempt,
        "{unit} was finished by attempt {final_attempt} of {owner:?}; the cut-off node held attempt {attempt}"
    );
    let finisher = if owner.as_deref() == Some(node.as_str()) {
        "the cut-off node itself, back on the network"
    } else {
        "another node"
    };
    // Whatever the cut-off node reports late is refused: the merged result is the new attempt's
    // (checked above through the record and the byte-identical output).
    let late: Vec<_> = fleet
        .segments_done("partition")
        .await?
        .into_iter()
        .filter(|(_, a, n)| *a == attempt && n == &node)
        .collect();
    fleet.wait_healthy(Duration::from_secs(120)).await?;
    fleet.record(
        "docker network disconnect an encoder past the TTL, reconnect",
        started.elapsed(),
        format!(
            "its segment re-issued {:.1} s after the cut, attempt {final_attempt} finished by {finisher}; {} late report(s) of the old attempt, none merged",
            moved.as_secs_f64(),
            late.len()
        ),
    );

    // 7. Rolling restart of every container, one at a time, while 20 jobs flow. Ten are
    // uploaded before the first restart; the others are submitted (their inputs uploaded from
    // the host) as each NATS node restarts, so uploads are in flight through the restarts too.
    let started = Instant::now();
    let mut jobs = (0..10)
        .map(|i| fleet.submit(&format!("rolling-{i:02}"), &tiny))
        .collect::<Result<Vec<_>>>()?;
    fleet.submitted(&mut jobs).await?;
    let mut next = 10;
    let mut slowest = (String::new(), Duration::ZERO);
    for service in [
        "nats-1",
        "nats-2",
        "nats-3",
        "splitter",
        "scheduler",
        "merger",
        "encoder",
    ] {
        for c in fleet.service(service)? {
            let t = Instant::now();
            let uploads = if service.starts_with("nats") { 3 } else { 0 };
            for _ in 0..uploads.min(20 - next) {
                jobs.push(fleet.submit(&format!("rolling-{next:02}"), &tiny)?);
                next += 1;
            }
            docker(&["restart", "-t", "15", &c])?;
            fleet.wait_healthy(Duration::from_secs(120)).await?;
            if t.elapsed() > slowest.1 {
                slowest = (c.clone(), t.elapsed());
            }
        }
    }
    while next < 20 {
        jobs.push(fleet.submit(&format!("rolling-{next:02}"), &tiny)?);
        next += 1;
    }
    fleet.check_all(&mut jobs).await?;
    fleet.record(
        "rolling restart of every container while 20 jobs flow",
        started.elapsed(),
        format!(
            "20 of 20 completed; slowest container back healthy in {:.1} s ({})",
            slowest.1.as_secs_f64(),
            slowest.0
        ),
    );

    // 8. One NATS node's disk fills mid-job: nats-2 on a 512 MiB tmpfs, filled with a file
    // while a job runs. The node turns its JetStream off; the job completes on the other two,
    // and so does one submitted while the disk is full. Then the node is restarted: Docker
    // empties a tmpfs when its container stops, so it comes back on an empty store and resyncs
    // from the other two, as a node whose disk was replaced does (a node that keeps its own
    // store through the restart is tests/disk.rs's). Last, it goes back on its volume.
    let started = Instant::now();
    let (node, onto_tmpfs) = fleet.nats_2_store(true).await?;
    let before = fleet.disk_use(&node, "/data")?;
    let mut job = fleet.submit("disk-full", &slow)?;
    fleet
        .running_unit("disk-full", Duration::from_secs(60))
        .await?;
    let filled = Instant::now();
    // dd stops at ENOSPC, with an error: the point.
    let _ = docker(&[
        "exec",
        &node,
        "dd",
        "if=/dev/zero",
        "of=/data/fill",
        "bs=1M",
    ]);
    let full = fleet.disk_use(&node, "/data")?;
    ensure!(full >= 99, "nats-2's store is only {full}% full");
    fleet.check(&mut job).await?;
    let through = filled.elapsed();
    // The fault happened: nats-server says its JetStream is off (`/healthz` with
    // `js-enabled-only` answers 503, "JetStream not enabled"; anything else, an error of the
    // probe included, is not taken for it).
    let checked = Instant::now();
    let js_off = |said: &str| said.contains("JetStream not enabled") || said.contains(" 503");
    while !js_off(&fleet.nats_monitor_body(&node, "/healthz?js-enabled-only=true")?) {
        ensure!(
            checked.elapsed() < Duration::from_secs(30),
            "JetStream still runs on nats-2, whose disk is full"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut during = fleet.submit("disk-full-after", &tiny)?;
    fleet.check(&mut during).await?;
    let restarted = Instant::now();
    docker(&["restart", "-t", "15", &node])?;
    let level = fleet.level_again(&node, restarted).await?;
    let (_, back) = fleet.nats_2_store(false).await?;
    fleet.wait_healthy(Duration::from_secs(120)).await?;
    fleet.record(
        "a NATS node's disk fills mid-job",
        started.elapsed(),
        format!(
            "node on a tmpfs level {:.1} s after its start (store {before}% of it); disk filled ({full}%) mid-job, JetStream off there: job completed {:.1} s after, another one too; restarted on an emptied store, level {:.1} s after; back on its volume, level in {:.1} s",
            onto_tmpfs.as_secs_f64(),
            through.as_secs_f64(),
            level.as_secs_f64(),
            back.as_secs_f64()
        ),
    );

    // 9. `down` (volumes kept) in the middle of jobs, then `up`: the jobs complete.
    let started = Instant::now();
    let mut jobs = vec![fleet.submit("down-slow", &slow)?];
    for i in 0..3 {
        jobs.push(fleet.submit(&format!("down-{i}"), &tiny)?);
    }
    fleet.submitted(&mut jobs).await?;
    fleet
        .running_unit("down-slow", Duration::from_secs(60))
        .await?;
    fleet.down(&["-t", "15"])?;
    let down = Instant::now();
    fleet.up_wait(&["--scale", "encoder=2"]).await?;
    let up = down.elapsed();
    fleet.check_all(&mut jobs).await?;
    fleet.record(
        "docker compose down mid-jobs, then up",
        started.elapsed(),
        format!(
            "fleet healthy again {:.1} s after the down; all 4 jobs completed {:.1} s after it",
            up.as_secs_f64(),
            down.elapsed().as_secs_f64()
        ),
    );

    // Also tells Drop the run passed (no logs to keep).
    fleet.record("done", suite.elapsed(), "whole suite".into());
    fleet.table();
    Ok(())
}

/// The image id a container runs, or an image name resolves to.
fn image_id(kind: &str, name: &str) -> Result<String> {
    let format = if kind == "container" {
        "{{.Image}}"
    } else {
        "{{.Id}}"
    };
    Ok(docker(&[kind, "inspect", "-f", format, name])?
        .trim()
        .to_owned())
}

/// A rolling upgrade across images, as an operator runs one with compose: the fleet comes up
/// on the previous release's image (`FFLEET_PREVIOUS_IMAGE`) and takes jobs from that
/// release's CLI (`FFLEET_PREVIOUS_BIN`), as other systems keep their own versions. Then, while
/// jobs flow, the provisioning runs again from this build's image (what it adds to the
/// streams and buckets), and every service's containers are replaced one at a time: a new
/// container from this build's image started and healthy first, then the old one stopped
/// (SIGTERM; an encoder drains) and removed. Jobs are submitted before the first replacement,
/// one before each (a 720p job with a segment running before each encoder's), and with this
/// build's CLI once all are done. Every job completes exactly once, its output byte-identical
/// to the host's fault-free reference; the previous release's
/// outputs are checked against it first. `scripts/upgrade-check.sh --compose` builds the
/// release's binary and image and runs this; it is not in scripts/test.sh (building a release
/// does not fit CI's time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the previous release's image and binary: scripts/upgrade-check.sh --compose"]
async fn compose_fleet_upgraded_across_images_one_container_at_a_time_loses_no_job() -> Result<()> {
    let previous_image =
        std::env::var("FFLEET_PREVIOUS_IMAGE").context("FFLEET_PREVIOUS_IMAGE (an image)")?;
    let previous_bin = PathBuf::from(
        std::env::var("FFLEET_PREVIOUS_BIN").context("FFLEET_PREVIOUS_BIN (an ffleet binary)")?,
    );
    let current_image = image("FFLEET_IMAGE", "ffleet:local");
    let suite = Instant::now();
    let Some((mut fleet, tiny, slow)) = bring_up(previous_image.clone(), previous_bin).await?
    else {
        return Ok(());
    };
    let previous_id = image_id("image", &previous_image)?;
    let current_id = image_id("image", &current_image)?;
    ensure!(
        previous_id != current_id,
        "{previous_image} and {current_image} are the same image"
    );
    // Readers of the fleet's media before its writers (docs/operations.md): this release keeps
    // cuts and encoded units in a scratch bucket an earlier one does not read, and reads the
    // earlier one's where it wrote them.
    let ffleet_services = ["merger", "encoder", "scheduler", "splitter"];
    let on_image = |fleet: &Fleet, id: &str| -> Result<Vec<String>> {
        let mut off = Vec::new();
        for service in ffleet_services {
            for c in fleet.service(service)? {
                if image_id("container", &c)? != id {
                    off.push(c);
                }
            }
        }
        Ok(off)
    };
    let off = on_image(&fleet, &previous_id)?;
    ensure!(off.is_empty(), "not on {previous_image}: {off:?}");

    // The previous release's fleet, fault-free, makes the reference's bytes.
    let started = Instant::now();
    let mut first = vec![
        fleet.submit("previous-tiny", &tiny)?,
        fleet.submit("previous-slow", &slow)?,
    ];
    fleet.check_all(&mut first).await?;
    fleet.record(
        "previous release's fleet",
        started.elapsed(),
        "its outputs byte-identical to this build's `transcode`".into(),
    );

    let started = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..3 {
        jobs.push(fleet.submit(&format!("before-{i}"), &tiny)?);
    }
    jobs.push(fleet.submit("before-slow", &slow)?);
    fleet.submitted(&mut jobs).await?;

    // What the new release provisions first, beside the running fleet.
    fleet.ffleet_image = current_image.clone();
    fleet.compose(&["up", "-d", "--no-deps", "provision"])?;
    fleet.wait_healthy(Duration::from_secs(120)).await?;
    fleet.replicated().await?;

    let mut slowest = (String::new(), Duration::ZERO);
    let mut replaced = 0;
    for service in ffleet_services {
        for old in fleet.service(service)? {
            // A job in flight through each replacement: where an encoder goes, the 720p clip,
            // whose segments take seconds, so the one stopped may be mid-encode and hand back.
            let job = format!("during-{replaced}");
            if service == "encoder" {
                jobs.push(fleet.submit(&job, &slow)?);
                fleet.running_unit(&job, Duration::from_secs(60)).await?;
            } else {
                jobs.push(fleet.submit(&job, &tiny)?);
            }
            let t = Instant::now();
            let scale = format!("{service}={}", fleet.service(service)?.len() + 1);
            fleet.compose(&[
                "up",
                "-d",
                "--no-deps",
                "--no-recreate",
                "--scale",
                &scale,
                service,
            ])?;
            fleet.wait_healthy(Duration::from_secs(120)).await?;
            docker(&["stop", "-t", "15", &old])?;
            let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &old])?;
            ensure!(
                code.trim() == "0",
                "the previous release's {old} exited {} on SIGTERM",
                code.trim()
            );
            docker(&["rm", &old])?;
            if t.elapsed() > slowest.1 {
                slowest = (old.clone(), t.elapsed());
            }
            replaced += 1;
        }
    }
    let off = on_image(&fleet, &current_id)?;
    ensure!(off.is_empty(), "not on {current_image}: {off:?}");

    // Clients upgrade too, at their own pace.
    fleet.cli = ffleet_bin().into();
    jobs.push(fleet.submit("after-tiny", &tiny)?);
    jobs.push(fleet.submit_wait("after-slow", &slow)?);
    fleet.check_all(&mut jobs).await?;
    fleet.record(
        "rolling upgrade across images while jobs flow",
        started.elapsed(),
        format!(
            "{replaced} containers replaced one at a time, the slowest in {:.1} s ({}); {} of {} jobs completed once, byte-identical",
            slowest.1.as_secs_f64(),
            slowest.0,
            jobs.len(),
            jobs.len()
        ),
    );
    fleet.record("done", suite.elapsed(), "upgrade".into());
    fleet.table();
    Ok(())
}
