//! One release round's decisions, as a pure function of the backlog, the room and the time:
//! which held tasks go out into which capability, and which jobs fail because no live node has
//! offered any capability they may use for `capability_wait`. The backlog (`backlog.rs`) does
//! the I/O around it: pulling plan messages, measuring the room, releasing, acking.

use crate::room::Room;
use crate::route::{self, Decision};
use ffleet_runtime::messages::Task;
use ffleet_runtime::messages::heartbeat::GpuClass;
use ffleet_runtime::profiles::Profile;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::{Capability, JobId, cost};
use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A held task as the round sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub task: Task,
    /// Since when no live node offers any capability the task may use.
    pub no_node_since: Option<Instant>,
}

impl Entry {
    pub fn new(task: Task) -> Entry {
        Entry {
            task,
            no_node_since: None,
        }
    }
}

impl AsRef<Entry> for Entry {
    fn as_ref(&self) -> &Entry {
        self
    }
}

impl AsMut<Entry> for Entry {
    fn as_mut(&mut self) -> &mut Entry {
        self
    }
}

/// What the round needs of the configuration.
pub struct Settings<'a> {
    pub profile: &'a (dyn Fn(&str) -> Option<&'a Profile> + Sync),
    pub spill_queue_depth: u32,
    pub capability_wait: Duration,
}

/// A task to release: its segment key, the capability, the slots it takes there, and the GPU
/// classes of the nodes that offer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    pub key: String,
    pub cap: Capability,
    pub slots: u32,
    pub classes: Vec<GpuClass>,
}

/// The round's decisions.
#[derive(Debug, Default)]
pub struct Round {
    pub releases: Vec<Release>,
    /// Jobs that cannot be placed, each once.
    pub failed: Vec<(JobId, Failure)>,
}

/// The held tasks' keys in the order they may go out: priority, then re-issued attempts (on
/// their job's critical path), then older jobs, the tracks unit, and longer units first.
pub fn release_order<'a>(
    held: impl Iterator<Item = (&'a String, &'a Entry)>,
    job_seq: &HashMap<JobId, u64>,
) -> Vec<String> {
    let mut order: Vec<(i32, bool, u64, bool, i64, &String)> = held
        .map(|(k, h)| {
            let t = &h.task;
            (
                t.priority,
                t.attempt > 1,
                job_seq.get(&t.job_id).copied().unwrap_or(u64::MAX),
                t.unit.is_audio(),
                (t.work * 1000.0) as i64,
                k,
            )
        })
        .collect();
    order.sort_by_key(|&(p, retry, seq, audio, work, k)| {
        (Reverse(p), !retry, seq, !audio, Reverse(work), k)
    });
    order.into_iter().map(|(.., k)| k.clone()).collect()
}

/// Decides one round at `now`: walks the backlog in release order, releasing what `room` has
/// space for (counting each release and hold against it, so later tasks see the room earlier
/// ones took) and noting since when each task has had no live node.
pub fn plan<H: AsRef<Entry> + AsMut<Entry>>(
    held: &mut HashMap<String, H>,
    job_seq: &HashMap<JobId, u64>,
    room: &mut Room,
    settings: &Settings,
    now: Instant,
) -> Round {
    let order = release_order(held.iter().map(|(k, h)| (k, h.as_ref())), job_seq);
    let mut round = Round::default();
    for key in order {
        let Some(h) = held.get_mut(&key) else {
            continue;
        };
        let h = h.as_mut();
        if round.failed.iter().any(|(j, _)| *j == h.task.job_id) {
            continue;
        }
        let Some(profile) = (settings.profile)(&h.task.profile) else {
            // The splitter validated the profile against its own config; ours differs.
            tracing::error!(job = %h.task.job_id, profile = %h.task.profile, "profile unknown to this scheduler");
            continue;
        };
        match route::decide(profile, &h.task, room, settings.spill_queue_depth) {
            Decision::Release(cap) => {
                let variant = &profile.variants[cap.as_str()];
                let slots = cost::slots(&cap, variant);
                let classes = room.classes(&cap);
                // Counted as released now, so the rest of the round sees the room it takes.
                room.released(&cap);
                round.releases.push(Release {
                    key,
                    cap,
                    slots,
                    classes,
                });
            }
            Decision::Hold { wants, no_node } => {
                room.held(&wants);
                if !no_node {
                    h.no_node_since = None;
                    continue;
                }
                let since = *h.no_node_since.get_or_insert(now);
                let wait = settings.capability_wait;
                if now.saturating_duration_since(since) >= wait {
                    let names: Vec<&str> = wants.iter().map(Capability::as_str).collect();
                    let msg = format!(
                        "job {} requires {} encoders ({}) and no live node offered one for {:.0} s (scheduler.capability_wait_secs)",
                        h.task.job_id,
                        h.task.prefer.token(),
                        names.join(", "),
                        wait.as_secs_f64()
                    );
                    round.failed.push((
                        h.task.job_id.clone(),
                        Failure::new(Reason::NoCapableNode, msg),
                    ));
                }
            }
            Decision::Impossible(why) => {
                let f = Failure::new(Reason::UnknownProfile, why);
                round.failed.push((h.task.job_id.clone(), f));
            }
        }
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::messages::Heartbeat;
    use ffleet_runtime::profiles::builtin;

    fn task(job: &str, unit: &str, priority: i32, attempt: u32, work: f64) -> Task {
        serde_json::from_value(
            serde_json::json!({"version": 1, "job_id": job, "unit": unit,
            "attempt": attempt, "profile": "h264", "input": {"kind": "scratch", "key": "k"},
            "duration_secs": 1.0, "result_ext": "nut", "priority": priority, "work": work,
            "prefer": "any", "require": false}),
        )
        .unwrap()
    }

    /// A live CPU node with `free` of its 8 slots free.
    fn node(name: &str, free: u32) -> Heartbeat {
        serde_json::from_value(
            serde_json::json!({"version": 1, "node_id": name, "host": name,
            "capabilities": ["cpu"], "slots_total": 8, "slots_busy": 8 - free,
            "at": "2026-12-05T00:00:00Z"}),
        )
        .unwrap()
    }

    fn backlog(tasks: Vec<Task>) -> (HashMap<String, Entry>, HashMap<JobId, u64>) {
        let mut seq = HashMap::new();
        let mut held = HashMap::new();
        for t in tasks {
            let n = seq.len() as u64 + 1;
            seq.entry(t.job_id.clone()).or_insert(n);
            held.insert(
                ffleet_runtime::subjects::segment_key(&t.job_id, t.unit),
                Entry::new(t),
            );
        }
        (held, seq)
    }

    fn decide(
        held: &mut HashMap<String, Entry>,
        seq: &HashMap<JobId, u64>,
        live: Vec<Heartbeat>,
        queued: i64,
        now: Instant,
    ) -> Round {
        let profiles = builtin();
        let profile = |name: &str| profiles.get(name);
        let settings = Settings {
            profile: &profile,
            spill_queue_depth: 2,
            capability_wait: Duration::from_secs(30),
        };
        let queued = HashMap::from([(Capability::cpu(), queued)]);
        let mut room = Room::of(live, queued, 0);
        plan(held, seq, &mut room, &settings, now)
    }

    fn keys(r: &Round) -> Vec<&str> {
        r.releases.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn releases_only_what_the_pool_has_room_for_in_priority_order() {
        let (mut held, seq) = backlog(vec![
            task("old", "v00000", 0, 1, 5.0),
            task("old", "v00001", 0, 1, 9.0),
            task("urgent", "v00000", 10, 1, 1.0),
            task("old", "v00002", 0, 2, 1.0),
        ]);
        // Three free slots, one task already queued: two go out.
        let now = Instant::now();
        let r = decide(&mut held, &seq, vec![node("a", 2), node("b", 1)], 1, now);
        assert_eq!(keys(&r), ["urgent.v00000", "old.v00002"]);
        assert!(r.failed.is_empty());
        // With room for all: the rest in order, the longer unit first.
        let r = decide(&mut held, &seq, vec![node("a", 8)], 0, now);
        assert_eq!(
            keys(&r),
            ["urgent.v00000", "old.v00002", "old.v00001", "old.v00000"]
        );
        // Draining nodes and full ones have no room.
        let mut draining = node("a", 8);
        draining.draining = true;
        let r = decide(&mut held, &seq, vec![draining, node("b", 0)], 0, now);
        assert!(r.releases.is_empty());
    }

    #[test]
    fn a_job_fails_only_after_no_node_offered_its_capability_for_the_whole_wait() {
        let (mut held, seq) = backlog(vec![
            task("j", "v00000", 0, 1, 1.0),
            task("j", "v00001", 0, 1, 1.0),
        ]);
        let t0 = Instant::now();
        let r = decide(&mut held, &seq, Vec::new(), 0, t0);
        assert!(r.releases.is_empty() && r.failed.is_empty());
        let r = decide(&mut held, &seq, Vec::new(), 0, t0 + Duration::from_secs(29));
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        // A node shows up, full: the wait starts again.
        let r = decide(
            &mut held,
            &seq,
            vec![node("a", 0)],
            0,
            t0 + Duration::from_secs(29),
        );
        assert!(r.failed.is_empty());
        assert!(held.values().all(|e| e.no_node_since.is_none()));
        let t1 = t0 + Duration::from_secs(40);
        let r = decide(&mut held, &seq, Vec::new(), 0, t1);
        assert!(r.failed.is_empty());
        // A drained node is out of rotation, not gone: the job waits for it.
        let mut drained = node("a", 8);
        drained.draining = true;
        let r = decide(
            &mut held,
            &seq,
            vec![drained],
            0,
            t1 + Duration::from_secs(30),
        );
        assert!(r.failed.is_empty() && r.releases.is_empty());
        let t1 = t1 + Duration::from_secs(40);
        let r = decide(&mut held, &seq, Vec::new(), 0, t1);
        assert!(r.failed.is_empty());
        let r = decide(&mut held, &seq, Vec::new(), 0, t1 + Duration::from_secs(30));
        // Once per job, whatever the number of its units waiting.
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0.as_str(), "j");
        assert_eq!(r.failed[0].1.reason, Reason::NoCapableNode);
    }

    #[test]
    fn a_task_of_a_profile_this_scheduler_does_not_know_is_held_not_released() {
        let mut t = task("j", "v00000", 0, 1, 1.0);
        t.profile = "not-here".into();
        let (mut held, seq) = backlog(vec![t]);
        let r = decide(&mut held, &seq, vec![node("a", 8)], 0, Instant::now());
        assert!(r.releases.is_empty() && r.failed.is_empty());
    }
}
