//! A nats-server child process with JetStream, on a free loopback port, with its own store
//! directory; killed when dropped. The binary comes from `FFLEET_NATS_SERVER`, else PATH.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Option<Child>,
    binary: PathBuf,
    store: PathBuf,
    ports_dir: tempfile::TempDir,
    /// Held so the store of a temporary server lives exactly as long as it.
    _temp_store: Option<tempfile::TempDir>,
    port: u16,
    /// More command-line arguments (cluster membership, monitoring, server name).
    args: Vec<String>,
    pub url: String,
}

impl NatsServer {
    /// The nats-server binary to run.
    pub fn binary() -> PathBuf {
        std::env::var_os("FFLEET_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("nats-server"))
    }

    /// Starts a server with a temporary store on a free port.
    pub fn start_temp() -> Result<Self> {
        let temp = tempfile::Builder::new().prefix("ffleet-nats-").tempdir()?;
        let store = temp.path().to_path_buf();
        let mut s = Self::start_at(&store, 0)?;
        s._temp_store = Some(temp);
        Ok(s)
    }

    /// Like `start_temp`, with more nats-server arguments (`-c` a config, `-l` a log file).
    pub fn start_temp_with(args: Vec<String>) -> Result<Self> {
        let temp = tempfile::Builder::new().prefix("ffleet-nats-").tempdir()?;
        let store = temp.path().to_path_buf();
        let mut s = Self::start_with(&store, 0, args)?;
        s._temp_store = Some(temp);
        Ok(s)
    }

    /// Starts a server on `port` (0: any free port) storing JetStream data in `store`.
    pub fn start_at(store: &Path, port: u16) -> Result<Self> {
        Self::start_with(store, port, Vec::new())
    }

    /// Like `start_at`, with more nats-server arguments (e.g. `--cluster` and `--routes` for a
    /// member of a cluster); they are passed again on `restart`.
    pub fn start_with(store: &Path, port: u16, args: Vec<String>) -> Result<Self> {
        let binary = Self::binary();
        let ports_dir = tempfile::Builder::new().prefix("ffleet-ports-").tempdir()?;
        let mut s = Self {
            child: None,
            binary,
            store: store.to_path_buf(),
            ports_dir,
            _temp_store: None,
            port,
            args,
            url: String::new(),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.store)?;
        for e in std::fs::read_dir(self.ports_dir.path())? {
            let _ = std::fs::remove_file(e?.path());
        }
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let child = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&self.store)
            .arg("--ports_file_dir")
            .arg(self.ports_dir.path())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (install nats-server or set FFLEET_NATS_SERVER)",
                    self.binary.display()
                )
            })?;
        let pid = child.id();
        self.child = Some(child);
        let ports_file = self.ports_dir.path().join(format!(
            "{}_{pid}.ports",
            self.binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "nats-server".into())
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(url) = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|t| parse_ports(&t))
            {
                self.port = url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(self.port);
                self.url = url;
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("nats-server exited at start ({status}); is the port free?");
            }
            if Instant::now() > deadline {
                bail!("nats-server did not report its port within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The ports file appears before the listener accepts: wait until it does.
        let addr = format!("127.0.0.1:{}", self.port);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server does not accept connections on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU seconds the server has used so far (from /proc), for overhead accounting.
    pub fn cpu_secs(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / 100.0)
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as an operator's restart would; waits up to `timeout` for the exit, then kills.
    pub fn terminate(&mut self, timeout: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store (after `kill`).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

fn parse_ports(text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.get("nats")?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_owned)
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
