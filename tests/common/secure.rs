//! A secured nats-server for a test: secrets made in a temporary directory, TLS with verified
//! client certificates, one nkey user per role with its permissions, and the server's log kept
//! in a file, where every permission violation it saw can be read back.

use anyhow::{Context, Result};
use ffleet::local::NatsServer;
use ffleet::secrets::{Secrets, tls_url};
use ffleet_runtime::config::NatsConfig;
use ffleet_runtime::security::Role;
use std::path::PathBuf;

/// The secrets and log of a secured server (the `NatsServer` itself is returned beside it, so a
/// `TestFleet` can hold it like any other).
pub struct SecureServer {
    pub secrets: Secrets,
    url: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SecureServer {
    pub fn start() -> Result<(SecureServer, NatsServer)> {
        let dir = tempfile::Builder::new()
            .prefix("ffleet-secrets-")
            .tempdir()?;
        let secrets = ffleet::secrets::init(&dir.path().join("secrets"), &[])?;
        let log = dir.path().join("nats.log");
        let server = NatsServer::start_temp_with(vec![
            "-c".into(),
            secrets.server_conf().display().to_string(),
            "-l".into(),
            log.display().to_string(),
        ])
        .context("starting a secured nats-server")?;
        Ok((
            SecureServer {
                url: tls_url(&server.url),
                secrets,
                log,
                _dir: dir,
            },
            server,
        ))
    }

    /// The server's `tls://` URL.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A client configuration for `role` (short JetStream timeouts: refusals show quickly).
    pub fn config(&self, role: Role) -> NatsConfig {
        let base = NatsConfig {
            url: self.url(),
            request_timeout_secs: 3.0,
            op_retry_secs: 3.0,
            startup_wait_secs: 10.0,
            ..NatsConfig::default()
        };
        self.secrets.nats_config(&base, role)
    }

    pub async fn connect(&self, role: Role) -> Result<async_nats::Client> {
        Ok(ffleet_runtime::nats::connect(&self.config(role), role.name(), false).await?)
    }

    /// The server's log lines that report a permission violation.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Violation"))
            .map(str::to_owned)
            .collect()
    }
}
