//! `ffleet health`: the container healthcheck. It reads the state the service in the same
//! container keeps in `nats.health_file` (`starting`, `waiting for jetstream: ...`, `ready`) and
//! succeeds only on `ready`: the service is connected, its streams and buckets are there and
//! JetStream answers it, which an open port alone would not tell.

use super::Cli;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Health file to read (default: the configuration's `nats.health_file`).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Exit code 0 when the service reports `ready`, 1 otherwise (the state is printed either way).
pub fn run(cli: &Cli, a: &HealthArgs) -> Result<i32> {
    let file = match &a.file {
        Some(f) => f.clone(),
        None => cli.load_config()?.nats.health_file.context(
            "no health file: set nats.health_file (FFLEET_NATS__HEALTH_FILE) for the service \
             and this check, or pass --file",
        )?,
    };
    let state = state_of(&file)?;
    println!("{state}");
    Ok(if state == "ready" { 0 } else { 1 })
}

/// The state in `file`; `not started` when the service has not written it yet.
fn state_of(file: &std::path::Path) -> Result<String> {
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("not started".to_owned()),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_is_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health");
        assert_eq!(state_of(&file).unwrap(), "not started");
        ffleet_runtime::health::init(Some(file.clone()));
        assert_eq!(state_of(&file).unwrap(), "starting");
        ffleet_runtime::health::ready();
        assert_eq!(state_of(&file).unwrap(), "ready");
        let wait = ffleet_runtime::health::waiting_for_jetstream("info stream FFLEET_JOBS");
        assert_eq!(
            state_of(&file).unwrap(),
            "waiting for jetstream: info stream FFLEET_JOBS"
        );
        drop(wait);
        assert_eq!(state_of(&file).unwrap(), "ready");
    }
}
