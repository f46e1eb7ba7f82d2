//! A secured deployment's files in one directory: the CA, the server's and the clients' TLS
//! certificates, one nkey seed per role, the server's authorization include (`auth.conf`) and a
//! server config that uses them (`server.conf`). `ffleet secrets init` makes them
//! (`generate`), `ffleet up --secure` and the tests use them through `Secrets`.

mod generate;

use anyhow::{Context, Result, bail};
use ffleet_runtime::config::NatsConfig;
use ffleet_runtime::security::Role;
use ffleet_runtime::{Tenant, subjects};
use std::path::{Path, PathBuf};

pub use generate::{add_tenant, init, init_for, rewrite_auth, upgrade_dir};

/// Names every certificate carries besides the `--host`s given.
pub const DEFAULT_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// A directory made by `init`.
#[derive(Debug, Clone)]
pub struct Secrets {
    dir: PathBuf,
}

impl Secrets {
    /// Opens a directory `init` made; fails when a file is missing.
    pub fn open(dir: &Path) -> Result<Secrets> {
        let dir = std::fs::canonicalize(dir)
            .with_context(|| format!("secrets directory {}", dir.display()))?;
        let s = Secrets { dir };
        let mut needed = vec![
            s.ca(),
            s.server_cert(),
            s.server_key(),
            s.client_cert(),
            s.client_key(),
            s.auth_conf(),
            s.server_conf(),
        ];
        // A directory made before a role existed lacks it (the viewer came with the
        // dashboard): `ffleet secrets auth` adds it.
        needed.extend(
            Role::ALL
                .into_iter()
                .filter(|r| !r.added_later())
                .map(|r| s.seed(r)),
        );
        for f in needed {
            if !f.is_file() {
                bail!("{} is missing: run `ffleet secrets init`", f.display());
            }
        }
        Ok(s)
    }

    /// Opens `dir`, making it first (granting `media` as the object store bucket) when it holds
    /// no secrets yet. One made by an earlier release gets what this one adds, and this
    /// release's `auth.conf` (`ffleet up` starts its server after this: every process is of
    /// this release).
    pub fn open_or_init(dir: &Path, hosts: &[String], media: &str) -> Result<Secrets> {
        if dir.join(CA).is_file() {
            let (made, _) = upgrade_dir(dir, media, false)?;
            for f in made {
                tracing::info!(file = %f.display(), "secrets: added what this release makes");
            }
            Secrets::open(dir)
        } else {
            init_for(dir, hosts, media, &[])
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join(CA)
    }

    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client-key.pem")
    }

    /// The nkey seed of `role` (mode 0600).
    pub fn seed(&self, role: Role) -> PathBuf {
        self.seed_of(role.name())
    }

    /// The token `ffleet dashboard --token-file` asks of every request (mode 0600).
    pub fn dashboard_token(&self) -> PathBuf {
        self.dir.join("dashboard.token")
    }

    /// The nkey seed of tenant `tenant`'s submitter identity (mode 0600).
    pub fn tenant_seed(&self, tenant: &Tenant) -> PathBuf {
        self.seed_of(&subjects::tenant_identity(tenant))
    }

    fn seed_of(&self, identity: &str) -> PathBuf {
        self.dir.join(format!("{identity}.nk"))
    }

    /// The tenants this directory holds credentials for (a `tenant-<name>.pub` each).
    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(t) = name
                .strip_suffix(".pub")
                .and_then(|n| n.strip_prefix("tenant-"))
                .and_then(|n| Tenant::new(n).ok())
            {
                out.push(t);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn auth_conf(&self) -> PathBuf {
        self.dir.join("auth.conf")
    }

    /// A nats-server config with TLS (client certificates verified) and the authorization
    /// include; listen address, JetStream and store come from the command line or a config
    /// that includes this one.
    pub fn server_conf(&self) -> PathBuf {
        self.dir.join("server.conf")
    }

    /// `base` connecting as `role`: its seed, the CA, the client certificate, TLS required.
    pub fn nats_config(&self, base: &NatsConfig, role: Role) -> NatsConfig {
        NatsConfig {
            nkey_seed_file: Some(self.seed(role)),
            nkey_seed: None,
            role: Some(role),
            tls_required: true,
            tls_ca_file: Some(self.ca()),
            tls_cert_file: Some(self.client_cert()),
            tls_key_file: Some(self.client_key()),
            url: tls_url(&base.url),
            ..base.clone()
        }
    }

    /// `base` connecting as tenant `tenant`'s submitter.
    pub fn tenant_config(&self, base: &NatsConfig, tenant: &Tenant) -> NatsConfig {
        NatsConfig {
            nkey_seed_file: Some(self.tenant_seed(tenant)),
            tenant: Some(tenant.clone()),
            ..self.nats_config(base, Role::Submitter)
        }
    }
}

const CA: &str = "ca.pem";

/// `url` (one or several, comma-separated) with every `nats://` scheme turned into `tls://`.
pub fn tls_url(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            match u.strip_prefix("nats://") {
                Some(rest) => format!("tls://{rest}"),
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_credentials_at_init_and_later() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        let acme = Tenant::new("acme")?;
        let s = init_for(
            &path,
            &[],
            subjects::BUCKET_MEDIA,
            std::slice::from_ref(&acme),
        )?;
        assert_eq!(s.tenants()?, vec![acme.clone()]);
        assert!(s.tenant_seed(&acme).is_file());
        let later = Tenant::new("later")?;
        add_tenant(&path, subjects::BUCKET_MEDIA, &later)?;
        assert_eq!(s.tenants()?, vec![acme.clone(), later.clone()]);
        let auth = std::fs::read_to_string(s.auth_conf())?;
        for t in [&acme, &later] {
            assert!(auth.contains(&format!("# tenant {t}")), "{auth}");
        }
        assert!(add_tenant(&path, subjects::BUCKET_MEDIA, &later).is_err());
        // Rewritten for an upgrade, the tenants stay.
        rewrite_auth(&path, subjects::BUCKET_MEDIA, true)?;
        let auth = std::fs::read_to_string(s.auth_conf())?;
        assert!(auth.contains("# tenant later"), "{auth}");
        Ok(())
    }

    /// A directory made before the dashboard (no viewer, no token) works as it is, and
    /// `secrets auth` adds what it lacks, with the viewer in `auth.conf`, touching nothing else.
    #[test]
    fn an_earlier_releases_directory_gains_the_viewer_and_the_token() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s");
        let s = init(&path, &[])?;
        let admin = std::fs::read_to_string(s.seed(Role::Admin))?;
        for f in [
            s.seed(Role::Viewer),
            path.join("viewer.pub"),
            s.dashboard_token(),
        ] {
            std::fs::remove_file(f)?;
        }
        rewrite_auth(&path, subjects::BUCKET_MEDIA, false)?;
        let auth = std::fs::read_to_string(s.auth_conf())?;
        assert!(!auth.contains("# viewer"), "{auth}");
        Secrets::open(&path)?;

        let (made, _) = upgrade_dir(&path, subjects::BUCKET_MEDIA, false)?;
        assert_eq!(made.len(), 3, "{made:?}");
        assert!(s.seed(Role::Viewer).is_file() && s.dashboard_token().is_file());
        let auth = std::fs::read_to_string(s.auth_conf())?;
        let viewer = std::fs::read_to_string(path.join("viewer.pub"))?;
        assert!(auth.contains(viewer.trim()), "{auth}");
        assert_eq!(std::fs::read_to_string(s.seed(Role::Admin))?, admin);
        // Again: nothing more to add.
        let (made, _) = upgrade_dir(&path, subjects::BUCKET_MEDIA, false)?;
        assert!(made.is_empty(), "{made:?}");
        // Half a user is not guessed at.
        std::fs::remove_file(path.join("viewer.pub"))?;
        assert!(upgrade_dir(&path, subjects::BUCKET_MEDIA, false).is_err());
        Ok(())
    }

    #[test]
    fn tls_urls_keep_their_hosts() {
        assert_eq!(
            tls_url("nats://a:4222, nats://b:4222"),
            "tls://a:4222,tls://b:4222"
        );
        assert_eq!(tls_url("tls://a:1"), "tls://a:1");
    }
}
