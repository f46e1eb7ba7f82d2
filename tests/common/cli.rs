//! Running the `ffleet` binary as its users do: with none of the caller's NATS settings, or on
//! one identity's credentials of a secrets directory (a role's, or a tenant's), to its end.

use anyhow::{Context, Result};
use ffleet::secrets::Secrets;
use ffleet_runtime::Tenant;
use ffleet_runtime::security::Role;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `ffleet`, with nothing of this process's NATS or configuration settings.
pub fn ffleet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ffleet"));
    c.env_remove("NATS_URL")
        .env_remove("FFLEET_CONFIG")
        .env_remove(ffleet_runtime::config::NKEY_SEED_ENV)
        .env("RUST_LOG", "warn");
    c
}

/// `ffleet` on `seed` of `secrets` (the seed given in the environment), with its TLS files.
fn ffleet_with(secrets: &Secrets, seed: &Path) -> Result<Command> {
    let mut c = ffleet();
    c.env(
        ffleet_runtime::config::NKEY_SEED_ENV,
        std::fs::read_to_string(seed)?.trim(),
    )
    .env("FFLEET_NATS__TLS_CA_FILE", secrets.ca())
    .env("FFLEET_NATS__TLS_CERT_FILE", secrets.client_cert())
    .env("FFLEET_NATS__TLS_KEY_FILE", secrets.client_key());
    Ok(c)
}

/// `ffleet` as `role` of `secrets`.
pub fn ffleet_as(secrets: &Secrets, role: Role) -> Result<Command> {
    let mut c = ffleet_with(secrets, &secrets.seed(role))?;
    c.env("FFLEET_NATS__ROLE", role.name());
    Ok(c)
}

/// `ffleet` as tenant `tenant` of `secrets`.
pub fn ffleet_as_tenant(secrets: &Secrets, tenant: &Tenant) -> Result<Command> {
    let mut c = ffleet_with(secrets, &secrets.tenant_seed(tenant))?;
    c.env("FFLEET_NATS__TENANT", tenant.as_str());
    Ok(c)
}

/// Runs `c` to its end (killed after two minutes: a hang fails the test instead of holding it)
/// and prints what it said.
pub fn output(c: &mut Command) -> Result<Output> {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ffleet")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    println!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}
