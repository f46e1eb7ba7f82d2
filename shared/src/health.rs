//! What a process reports about itself to operators and container healthchecks: `starting`,
//! `waiting for jetstream: <what>` (at start while the cluster forms, or while an operation
//! rides out an election or a lost quorum) or `ready`. Kept in the process and, when
//! `nats.health_file` is set, written to that file on every change (replaced atomically), so a
//! healthcheck is `grep -qx ready FILE`.

use std::path::PathBuf;
use std::sync::Mutex;

struct Health {
    file: Option<PathBuf>,
    state: String,
}

static HEALTH: Mutex<Health> = Mutex::new(Health {
    file: None,
    state: String::new(),
});

/// Where to write the state (`nats.health_file`); `None` keeps it in the process only.
pub fn init(file: Option<PathBuf>) {
    let mut h = HEALTH.lock().expect("health lock");
    h.file = file;
    let state = if h.state.is_empty() {
        "starting".to_owned()
    } else {
        h.state.clone()
    };
    store(&mut h, state);
}

/// The current state.
pub fn state() -> String {
    HEALTH.lock().expect("health lock").state.clone()
}

pub fn ready() {
    set("ready".to_owned());
}

/// JetStream is not answering: `what` is the operation and object waited for.
pub fn waiting_for_jetstream(what: &str) {
    set(format!("waiting for jetstream: {what}"));
}

fn set(state: String) {
    let mut h = HEALTH.lock().expect("health lock");
    if h.state != state {
        store(&mut h, state);
    }
}

fn store(h: &mut Health, state: String) {
    if let Some(file) = &h.file {
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let written =
            std::fs::write(&tmp, format!("{state}\n")).and_then(|_| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            tracing::warn!(file = %file.display(), error = %e, "cannot write health file");
        }
    }
    h.state = state;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health");
        init(Some(file.clone()));
        waiting_for_jetstream("create stream FFLEET_JOBS");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "waiting for jetstream: create stream FFLEET_JOBS\n"
        );
        ready();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "ready\n");
        assert_eq!(state(), "ready");
    }
}
