//! A secured nats-server for a test: secrets made in a temporary directory, TLS with verified
//! client certificates, one nkey user per role with its permissions, and the server's log kept
//! in a file, where every permission violation it saw can be read back.

use anyhow::{Context, Result};
use ffleet::local::NatsServer;
use ffleet::secrets::{Secrets, tls_url};
use ffleet_runtime::Tenant;
use ffleet_runtime::config::NatsConfig;
use ffleet_runtime::security::Role;
use std::path::PathBuf;

/// The tenants every secured test server has credentials for.
pub const TENANTS: [&str; 2] = ["acme", "rival"];

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
        let tenants: Vec<Tenant> = TENANTS
            .iter()
            .map(|t| Tenant::new(*t))
            .collect::<Result<_, _>>()?;
        let secrets = ffleet::secrets::init_for(
            &dir.path().join("secrets"),
            &[],
            ffleet_runtime::subjects::BUCKET_MEDIA,
            &tenants,
        )?;
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

    fn base(&self) -> NatsConfig {
        NatsConfig {
            url: self.url(),
            request_timeout_secs: 3.0,
            op_retry_secs: 3.0,
            startup_wait_secs: 10.0,
            ..NatsConfig::default()
        }
    }

    /// A client configuration for `role` (short JetStream timeouts: refusals show quickly).
    pub fn config(&self, role: Role) -> NatsConfig {
        self.secrets.nats_config(&self.base(), role)
    }

    /// A client configuration for tenant `tenant` (one of `TENANTS`).
    pub fn tenant_config(&self, tenant: &str) -> NatsConfig {
        let t = Tenant::new(tenant).expect("a tenant name");
        self.secrets.tenant_config(&self.base(), &t)
    }

    pub async fn connect(&self, role: Role) -> Result<async_nats::Client> {
        Ok(ffleet_runtime::nats::connect(&self.config(role), role.name(), false).await?)
    }

    pub async fn connect_tenant(&self, tenant: &str) -> Result<async_nats::Client> {
        Ok(ffleet_runtime::nats::connect(&self.tenant_config(tenant), tenant, false).await?)
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
