//! `NatsCluster`: three (or more) nats-server processes with JetStream, clustered on loopback
//! (client, route and monitoring ports chosen free per test, a temporary store each), killed on
//! drop. Who leads what is read from the servers themselves: the JetStream meta leader from a
//! node's `/jsz` monitoring endpoint, a stream's leader from its stream info.

use anyhow::{Context, Result, bail};
use async_nats::jetstream;
use ffleet::local::NatsServer;
use ffleet_runtime::subjects;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const CLUSTER_NAME: &str = "ffleet-test";

pub struct Node {
    pub name: String,
    pub client_port: u16,
    route_port: u16,
    monitor_port: u16,
    store: PathBuf,
    /// `None` until started (and after `kill`).
    pub server: Option<NatsServer>,
}

pub struct NatsCluster {
    pub nodes: Vec<Node>,
    /// Small disks mounted on node stores (`small_disk`), unmounted on drop.
    mounts: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

/// `n` distinct free loopback ports (all held at once, so none is handed out twice).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

impl NatsCluster {
    /// Chooses ports and stores for `n` nodes without starting any.
    pub fn plan(n: usize) -> Result<NatsCluster> {
        let dir = tempfile::Builder::new()
            .prefix("ffleet-cluster-")
            .tempdir()?;
        let ports = free_ports(3 * n)?;
        let nodes = (0..n)
            .map(|i| Node {
                name: format!("n{}", i + 1),
                client_port: ports[3 * i],
                route_port: ports[3 * i + 1],
                monitor_port: ports[3 * i + 2],
                store: dir.path().join(format!("n{}", i + 1)),
                server: None,
            })
            .collect();
        Ok(NatsCluster {
            nodes,
            mounts: Vec::new(),
            _dir: dir,
        })
    }

    /// Every node's client URL, comma-separated (what services are given).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn args(&self, i: usize) -> Vec<String> {
        let me = &self.nodes[i];
        let routes = self
            .nodes
            .iter()
            .filter(|n| n.name != me.name)
            .map(|n| format!("nats://127.0.0.1:{}", n.route_port))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "--server_name".into(),
            me.name.clone(),
            "--cluster_name".into(),
            CLUSTER_NAME.into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{}", me.route_port),
            "--routes".into(),
            routes,
            "-m".into(),
            me.monitor_port.to_string(),
            "-l".into(),
            self.log(i).display().to_string(),
        ]
    }

    /// Starts node `i` (first start, or again on its store after a kill).
    pub fn start(&mut self, i: usize) -> Result<()> {
        let args = self.args(i);
        let node = &mut self.nodes[i];
        if node.server.is_some() {
            bail!("node {} is already running", node.name);
        }
        node.server = Some(
            NatsServer::start_with(&node.store, node.client_port, args)
                .with_context(|| format!("starting node {}", node.name))?,
        );
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        (0..self.nodes.len()).try_for_each(|i| self.start(i))
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].server.take() {
            s.kill();
        }
    }

    /// SIGTERM node `i` (a clean shutdown) and wait for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].server.take() {
            s.terminate(Duration::from_secs(20));
        }
    }

    /// Node `i`'s server log (beside the stores, appended to across restarts).
    pub fn log(&self, i: usize) -> PathBuf {
        self._dir.path().join(format!("{}.log", self.nodes[i].name))
    }

    /// Mounts a tmpfs of `size` (`512m`) on node `i`'s store, before the node starts: a small
    /// disk of its own to fill. Unmounted on drop, after the nodes are killed and before the
    /// stores are removed. `Ok(false)` where this process may not mount (not root); the reason
    /// is printed.
    pub fn small_disk(&mut self, i: usize, size: &str) -> Result<bool> {
        let dir = self.nodes[i].store.clone();
        std::fs::create_dir_all(&dir)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {
                self.mounts.push(dir);
                Ok(true)
            }
            Ok(o) => {
                println!(
                    "cannot mount a small disk: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                Ok(false)
            }
            Err(e) => {
                println!("cannot mount a small disk: {e}");
                Ok(false)
            }
        }
    }

    /// Node `i`'s JetStream store directory.
    pub fn store(&self, i: usize) -> &std::path::Path {
        &self.nodes[i].store
    }

    /// Whether JetStream runs on node `i` (its `/healthz?js-enabled-only=true`); `None` when
    /// the node does not answer.
    pub fn jetstream_enabled(&self, i: usize) -> Option<bool> {
        let body = http_get(self.nodes[i].monitor_port, "/healthz?js-enabled-only=true").ok()?;
        Some(body.contains("\"ok\""))
    }

    pub fn index(&self, name: &str) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no node named {name}"))
    }

    /// The JetStream meta leader, as a running node's `/jsz` reports it.
    pub fn meta_leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_some())
            .find_map(|n| {
                let body = http_get(n.monitor_port, "/jsz").ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                let leader = v.get("meta_cluster")?.get("leader")?.as_str()?;
                (!leader.is_empty()).then(|| leader.to_owned())
            })
    }

    /// Waits until every running node knows the meta leader and every ffleet stream has a leader
    /// and all its replicas on running nodes current: a restarted node has caught up.
    pub async fn wait_settled(&self, js: &jetstream::Context, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let running: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.server.is_some())
            .map(|n| n.name.as_str())
            .collect();
        loop {
            let mut missing = self.unsettled_meta();
            if missing.is_none() {
                missing = unsettled_streams(js, &running).await;
            }
            let Some(why) = missing else {
                return Ok(());
            };
            if Instant::now() > deadline {
                // Who leads what and which replicas lag: what a failed wait needs to be read.
                dump(js).await;
                bail!("cluster not settled within {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn unsettled_meta(&self) -> Option<String> {
        for n in self.nodes.iter().filter(|n| n.server.is_some()) {
            let leader = http_get(n.monitor_port, "/jsz").ok().and_then(|b| {
                let v: serde_json::Value = serde_json::from_str(&b).ok()?;
                let l = v.get("meta_cluster")?.get("leader")?.as_str()?.to_owned();
                (!l.is_empty()).then_some(l)
            });
            if leader.is_none() {
                return Some(format!("{} knows no meta leader", n.name));
            }
        }
        None
    }
}

/// The (major, minor) version of the nats-server binary the tests run (`--version`).
pub fn server_version() -> Option<(u32, u32)> {
    let out = std::process::Command::new(NatsServer::binary())
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// Every stream ffleet provisions, by its stream name (the media bucket only when this run's
/// fleets use the object store).
pub fn stream_names() -> Vec<String> {
    subjects::provisioned_streams(
        super::backend() == ffleet_runtime::config::StorageBackend::ObjectStore,
    )
}

/// The leader of `stream`, once it has one.
pub async fn stream_leader(
    js: &jetstream::Context,
    stream: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut s) = js.get_stream(stream).await
            && let Ok(info) = s.info().await
            && let Some(l) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return Ok(l);
        }
        if Instant::now() > deadline {
            bail!("stream {stream} has no leader after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Why some stream is not settled on the `running` nodes, or `None`.
async fn unsettled_streams(js: &jetstream::Context, running: &[&str]) -> Option<String> {
    for name in stream_names() {
        let info = match js.get_stream(&name).await {
            Ok(mut s) => match s.info().await {
                Ok(i) => i.clone(),
                Err(e) => return Some(format!("{name}: {e}")),
            },
            Err(e) => return Some(format!("{name}: {e}")),
        };
        let Some(cluster) = info.cluster else {
            return Some(format!("{name}: no cluster info"));
        };
        let Some(leader) = cluster.leader else {
            return Some(format!("{name}: no leader"));
        };
        for peer in running.iter().filter(|p| **p != leader) {
            let ok = cluster
                .replicas
                .iter()
                .any(|r| r.name == *peer && r.current && !r.offline);
            if !ok {
                return Some(format!("{name}: replica on {peer} not current"));
            }
        }
    }
    None
}

/// Prints who leads every ffleet stream and its consumers, and which replicas are current: what
/// a failed cluster test needs to be understood.
pub async fn dump(js: &jetstream::Context) {
    use futures::StreamExt;
    for name in stream_names() {
        let Ok(stream) = js.get_stream(&name).await else {
            eprintln!("stream {name}: unavailable");
            continue;
        };
        let c = stream.cached_info().cluster.clone();
        eprintln!("stream {name}: {}", describe(c.as_ref()));
        let mut consumers = stream.consumers();
        while let Ok(Some(Ok(info))) =
            tokio::time::timeout(Duration::from_secs(3), consumers.next()).await
        {
            eprintln!(
                "  consumer {}: {} pending {} ack-pending {} waiting {}",
                info.name,
                describe(info.cluster.as_ref()),
                info.num_pending,
                info.num_ack_pending,
                info.num_waiting
            );
        }
    }
}

fn describe(c: Option<&jetstream::stream::ClusterInfo>) -> String {
    let Some(c) = c else {
        return "no cluster info".into();
    };
    let peers: Vec<String> = c
        .replicas
        .iter()
        .map(|r| {
            format!(
                "{}{}{} (lag {}, seen {:.1} s ago)",
                r.name,
                if r.current { "" } else { " (behind)" },
                if r.offline { " (offline)" } else { "" },
                r.lag.unwrap_or(0),
                r.active.as_secs_f64()
            )
        })
        .collect();
    format!("leader {:?}, peers [{}]", c.leader, peers.join(", "))
}

/// A plain HTTP/1.0 GET on loopback (the monitoring endpoint), returning the body.
fn http_get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(body.to_owned())
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for dir in &self.mounts {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status();
        }
        // The servers' logs too, with the services' (FFLEET_TEST_KEEP_LOGS=<dir>).
        if let Some(keep) = std::env::var_os("FFLEET_TEST_KEEP_LOGS") {
            let dir = PathBuf::from(keep).join(
                self._dir
                    .path()
                    .file_name()
                    .map(|n| n.to_owned())
                    .unwrap_or_default(),
            );
            if std::fs::create_dir_all(&dir).is_ok() {
                for i in 0..self.nodes.len() {
                    let log = self.log(i);
                    if let Some(name) = log.file_name() {
                        let _ = std::fs::copy(&log, dir.join(name));
                    }
                }
            }
        }
    }
}
