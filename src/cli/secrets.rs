//! `ffleet secrets init DIR`: everything a secured deployment needs (see `crate::secrets`), and
//! `ffleet provision`: creating the streams and buckets with admin credentials, so that the
//! services, which may only look them up, find them.

use super::Cli;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ffleet_runtime::Tenant;
use std::path::PathBuf;

#[derive(Debug, Clone, Subcommand)]
pub enum SecretsCommand {
    /// Make a CA, server and client TLS certificates, one nkey per role and the server's
    /// authorization config in DIR.
    Init(InitArgs),
    /// Print what each role may publish and subscribe to, as the server enforces it.
    Permissions,
    /// Write DIR's `auth.conf` again with this release's permissions (after an upgrade),
    /// first adding what this release makes and DIR lacks (the dashboard's `viewer.nk` and
    /// `dashboard.token`); reload the servers afterwards (`nats-server --signal reload`, or
    /// SIGHUP).
    Auth(AuthArgs),
    /// Add a tenant to DIR: its own submitter credentials (`tenant-NAME.nk`), and `auth.conf`
    /// written again with them; reload the servers afterwards.
    Tenant(TenantArgs),
}

#[derive(Debug, Clone, Args)]
pub struct TenantArgs {
    /// The directory `secrets init` made.
    pub dir: PathBuf,
    /// The tenant's name: 1 to 32 ASCII letters, digits, '-' or '_'.
    pub name: Tenant,
}

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The directory `secrets init` made.
    pub dir: PathBuf,
    /// Also grant what an earlier release's processes need, for the length of a rolling
    /// upgrade; run again without it once none runs.
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Directory to create (mode 0700; seeds and keys mode 0600).
    pub dir: PathBuf,
    /// Another name the server certificate is valid for (besides localhost and 127.0.0.1);
    /// repeat for each, e.g. nats-1 nats-2 nats-3 for compose.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// A tenant: a client system with submitter credentials of its own (`tenant-NAME.nk`),
    /// whose jobs, events and status no other client can see; repeat for each.
    #[arg(long = "tenant")]
    pub tenants: Vec<Tenant>,
}

pub fn run(cli: &Cli, cmd: &SecretsCommand) -> Result<i32> {
    // The object store bucket the roles may use is the configured one.
    let media = cli.load_config()?.storage.bucket;
    match cmd {
        SecretsCommand::Init(a) => {
            let s = crate::secrets::init_for(&a.dir, &a.hosts, &media, &a.tenants)?;
            println!("secrets written to {}", s.dir().display());
            for t in &a.tenants {
                println!(
                    "tenant {t}: nats.nkey_seed_file = \"{}\", nats.tenant = \"{t}\"",
                    s.tenant_seed(t).display()
                );
            }
            println!("server: nats-server -js -c {}", s.server_conf().display());
            println!(
                "clients: nats.url = \"tls://HOST:4222\", nats.tls_ca_file = {:?}, \
                 nats.tls_cert_file = {:?}, nats.tls_key_file = {:?}, \
                 nats.nkey_seed_file = \"{}/<role>.nk\", nats.role = \"<role>\"",
                s.ca(),
                s.client_cert(),
                s.client_key(),
                s.dir().display()
            );
            Ok(0)
        }
        SecretsCommand::Tenant(a) => {
            let path = crate::secrets::add_tenant(&a.dir, &media, &a.name)?;
            let s = crate::secrets::Secrets::open(&a.dir)?;
            println!(
                "tenant {}: nats.nkey_seed_file = \"{}\", nats.tenant = \"{}\"",
                a.name,
                s.tenant_seed(&a.name).display(),
                a.name
            );
            println!(
                "{} written; reload every nats-server to apply it",
                path.display()
            );
            Ok(0)
        }
        SecretsCommand::Auth(a) => {
            let (made, path) = crate::secrets::upgrade_dir(&a.dir, &media, a.upgrade)?;
            for f in &made {
                println!("{} added", f.display());
            }
            println!(
                "{} written; reload every nats-server to apply it",
                path.display()
            );
            if a.upgrade {
                println!(
                    "it grants an earlier release's processes what they need: run `ffleet secrets auth {}` again once none runs",
                    a.dir.display()
                );
            }
            Ok(0)
        }
        SecretsCommand::Permissions => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) ends the listing quietly.
            let _ = (|| -> std::io::Result<()> {
                // Every tenant's are its template's, its name in place of NAME.
                let template = Tenant::new("NAME").expect("a tenant name");
                let tenant = ffleet_runtime::security::roles::tenant_permissions(&template);
                let roles = ffleet_runtime::security::auth_conf::matrix(&media)
                    .into_iter()
                    .map(|(role, p)| (role.to_string(), p));
                for (who, p) in roles.chain([("tenant NAME".to_owned(), tenant)]) {
                    writeln!(out, "{who}")?;
                    for s in &p.publish {
                        writeln!(out, "  publish    {s}")?;
                    }
                    for s in &p.publish_deny {
                        writeln!(out, "  deny       {s}")?;
                    }
                    for s in &p.subscribe {
                        writeln!(out, "  subscribe  {s}")?;
                    }
                    if p.responses {
                        writeln!(out, "  respond    one reply per request received")?;
                    }
                }
                Ok(())
            })();
            Ok(0)
        }
    }
}

/// Creates (or checks) every stream and bucket; needs credentials that may create them.
pub async fn provision(cli: &Cli, raise_guards: bool) -> Result<i32> {
    let ctx = super::client(cli).await?;
    println!(
        "streams and buckets are in place on {}",
        ctx.config.nats.url
    );
    if !raise_guards {
        return Ok(0);
    }
    // Streams an earlier release created get this release's guards; its processes must be gone
    // by now (they wrote object metadata with a roll-up).
    let media = (ctx.config.storage.backend == ffleet_runtime::config::StorageBackend::ObjectStore)
        .then_some(ctx.config.storage.bucket.as_str());
    let raised = ffleet_runtime::nats::provision::raise_guards(&ctx.js, media)
        .await
        .context("raising the guards of existing streams")?;
    for name in raised {
        println!("{name}: roll-ups now refused (purges too, where no service purges)");
    }
    Ok(0)
}
