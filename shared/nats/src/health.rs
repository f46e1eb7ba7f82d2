//! What a process reports about itself to operators and container healthchecks: `starting`,
//! `waiting for jetstream: <what>` (at start while the cluster forms, or while an operation
//! rides out an election or a lost quorum) or `ready`. Kept in the process and, when
//! `nats.health_file` is set, written to that file on every change (replaced atomically), so a
//! healthcheck is `grep -qx ready FILE`.
//!
//! Waiting is held by a guard per operation, not set and cleared by hand: an operation that
//! gives up, is refused or is cancelled while waiting must not leave the process reported as
//! waiting for ever (a healthy scheduler once stayed `unhealthy` after one lease renewal gave up
//! in an election), and one operation that recovers must not hide another that still waits.

use std::path::PathBuf;
use std::sync::Mutex;

struct Health {
    file: Option<PathBuf>,
    /// Start-up finished (`ready` was called once).
    started: bool,
    /// Operations waiting now, oldest first, with the id of the guard that holds each.
    waiting: Vec<(u64, String)>,
    next_id: u64,
    /// The state last stored.
    state: String,
}

static HEALTH: Mutex<Health> = Mutex::new(Health {
    file: None,
    started: false,
    waiting: Vec::new(),
    next_id: 0,
    state: String::new(),
});

/// Where to write the state (`nats.health_file`); `None` keeps it in the process only.
pub fn init(file: Option<PathBuf>) {
    let mut h = HEALTH.lock().expect("health lock");
    h.file = file;
    let state = current(&h);
    store(&mut h, state);
}

/// The current state.
pub fn state() -> String {
    let h = HEALTH.lock().expect("health lock");
    current(&h)
}

/// Start-up is done: the process is `ready` whenever no operation waits.
pub fn ready() {
    let mut h = HEALTH.lock().expect("health lock");
    h.started = true;
    refresh(&mut h);
}

/// JetStream is not answering `what` (operation and object): the process reports waiting until
/// the returned guard is dropped (and no other operation waits).
#[must_use = "the wait ends when the guard is dropped"]
pub fn waiting_for_jetstream(what: &str) -> Waiting {
    let mut h = HEALTH.lock().expect("health lock");
    let id = h.next_id;
    h.next_id += 1;
    h.waiting.push((id, what.to_owned()));
    refresh(&mut h);
    Waiting { id }
}

/// One operation's wait; see `waiting_for_jetstream`.
#[derive(Debug)]
pub struct Waiting {
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut h = HEALTH.lock().expect("health lock");
        h.waiting.retain(|(id, _)| *id != self.id);
        refresh(&mut h);
    }
}

fn current(h: &Health) -> String {
    match (h.waiting.first(), h.started) {
        (Some((_, what)), _) => format!("waiting for jetstream: {what}"),
        (None, true) => "ready".to_owned(),
        (None, false) => "starting".to_owned(),
    }
}

fn refresh(h: &mut Health) {
    let state = current(h);
    if h.state != state {
        store(h, state);
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

    /// One test only: the state is process-wide.
    #[test]
    fn waits_come_and_go_with_their_guards() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("health");
        init(Some(file.clone()));
        let read = || std::fs::read_to_string(&file).unwrap();
        assert_eq!(read(), "starting\n");
        let first = waiting_for_jetstream("create stream FFLEET_JOBS");
        assert_eq!(read(), "waiting for jetstream: create stream FFLEET_JOBS\n");
        drop(first);
        assert_eq!(read(), "starting\n");
        ready();
        assert_eq!(read(), "ready\n");
        assert_eq!(state(), "ready");

        // Two waits at once: the process is ready only when both have ended, in any order.
        let a = waiting_for_jetstream("kv update scheduler");
        let b = waiting_for_jetstream("kv watch workers");
        drop(a);
        assert_eq!(read(), "waiting for jetstream: kv watch workers\n");
        drop(b);
        assert_eq!(read(), "ready\n");
    }
}
