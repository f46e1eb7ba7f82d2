//! Choosing the capability queue for a task, at release time: among the profile's variants,
//! the job's preferred kind first (`gpu`: accelerators, `cpu`: software, `any`: accelerators
//! then CPU, whichever has room); the other kind only when the job allows it and either the
//! preferred kind has no live node or more than `spill_queue_depth` tasks already wait for it.
//! Audio goes to CPU, and to an accelerator node only when no CPU node lives: NVENC encodes no
//! audio, so audio on a GPU node would hold a GPU session for CPU work.

use ffleet_runtime::Capability;
use ffleet_runtime::messages::{Preference, Task};
use ffleet_runtime::profiles::Profile;

/// What the pool looks like to one decision.
pub trait View {
    /// Tasks that may still be released into `cap`'s queue now (free slots + buffer − queued).
    fn budget(&self, cap: &Capability) -> i64;
    /// Whether a live, non-draining node offers `cap`.
    fn live(&self, cap: &Capability) -> bool;
    /// Whether a live node offers `cap`, draining or not: a drained node is taken out of
    /// rotation for a while (`ffleet drain`), so work that requires its capability waits for it
    /// instead of failing as if no such node existed.
    fn present(&self, cap: &Capability) -> bool {
        self.live(cap)
    }
    /// Tasks waiting for `cap`: in its queue, or held ahead of this one.
    fn waiting(&self, cap: &Capability) -> u32;
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Release(Capability),
    /// Keep the task in the backlog; `no_node`: no live node offers any allowed capability.
    Hold {
        wants: Vec<Capability>,
        no_node: bool,
    },
    /// The profile has no variant the job may use.
    Impossible(String),
}

pub fn decide(profile: &Profile, task: &Task, view: &impl View, spill_depth: u32) -> Decision {
    let caps: Vec<Capability> = profile
        .variants
        .keys()
        .filter_map(|k| Capability::new(k.as_str()).ok())
        .collect();
    let (gpu, cpu): (Vec<_>, Vec<_>) = caps.iter().cloned().partition(Capability::is_gpu);
    let audio = task.unit.is_audio();
    let (primary, secondary) = if audio {
        (cpu, gpu)
    } else {
        match (task.prefer, task.require) {
            (Preference::Gpu, true) => (gpu, Vec::new()),
            (Preference::Gpu, false) => (gpu, cpu),
            (Preference::Cpu, true) => (cpu, Vec::new()),
            (Preference::Cpu, false) => (cpu, gpu),
            (Preference::Any, _) => (gpu.into_iter().chain(cpu).collect::<Vec<_>>(), Vec::new()),
        }
    };
    if primary.is_empty() && secondary.is_empty() {
        return Decision::Impossible(format!(
            "profile {:?} has no {} variant (it has: {})",
            task.profile,
            task.prefer.token(),
            profile
                .variants
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(c) = primary.iter().find(|c| view.budget(c) > 0) {
        return Decision::Release(c.clone());
    }
    let primary_live = primary.iter().any(|c| view.live(c));
    let queued: u32 = primary.iter().map(|c| view.waiting(c)).sum();
    if (!primary_live || (!audio && queued >= spill_depth))
        && let Some(c) = secondary.iter().find(|c| view.budget(c) > 0)
    {
        return Decision::Release(c.clone());
    }
    let no_node =
        !primary.iter().any(|c| view.present(c)) && !secondary.iter().any(|c| view.present(c));
    let wants = if primary.is_empty() {
        secondary
    } else {
        primary
    };
    Decision::Hold { wants, no_node }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::profiles::{Variant, builtin};
    use std::collections::HashMap;

    struct Fake(HashMap<&'static str, (i64, bool, u32)>);

    impl View for Fake {
        fn budget(&self, c: &Capability) -> i64 {
            self.0.get(c.as_str()).map_or(0, |v| v.0)
        }
        fn live(&self, c: &Capability) -> bool {
            self.0.get(c.as_str()).is_some_and(|v| v.1)
        }
        fn waiting(&self, c: &Capability) -> u32 {
            self.0.get(c.as_str()).map_or(0, |v| v.2)
        }
    }

    fn profile() -> Profile {
        let mut p = builtin()["h264"].clone();
        let v = Variant {
            args: vec![],
            quality_flag: None,
            threads: 1,
        };
        p.variants.insert("nvenc".into(), v);
        p
    }

    fn task(prefer: Preference, require: bool) -> Task {
        serde_json::from_value(
            serde_json::json!({"version": 1, "job_id": "j", "unit": "v00001",
            "attempt": 1, "profile": "h264", "input": {"kind": "scratch", "key": "k"},
            "duration_secs": 1.0, "result_ext": "nut", "priority": 0,
            "prefer": prefer, "require": require}),
        )
        .unwrap()
    }

    fn cap(s: &str) -> Capability {
        Capability::new(s).unwrap()
    }

    #[test]
    fn gpu_work_goes_to_free_gpus_then_spills_past_the_depth() {
        let p = profile();
        let t = task(Preference::Gpu, false);
        let free = Fake([("nvenc", (1, true, 0)), ("cpu", (1, true, 0))].into());
        assert_eq!(decide(&p, &t, &free, 2), Decision::Release(cap("nvenc")));
        let shallow = Fake([("nvenc", (0, true, 1)), ("cpu", (1, true, 0))].into());
        assert!(matches!(
            decide(&p, &t, &shallow, 2),
            Decision::Hold { no_node: false, .. }
        ));
        let deep = Fake([("nvenc", (0, true, 2)), ("cpu", (1, true, 0))].into());
        assert_eq!(decide(&p, &t, &deep, 2), Decision::Release(cap("cpu")));
        // Required: never spills, whatever the depth.
        let t = task(Preference::Gpu, true);
        assert!(matches!(decide(&p, &t, &deep, 2), Decision::Hold { .. }));
        let none = Fake([("cpu", (1, true, 0))].into());
        assert_eq!(
            decide(&p, &t, &none, 2),
            Decision::Hold {
                wants: vec![cap("nvenc")],
                no_node: true
            }
        );
    }

    #[test]
    fn cpu_required_never_goes_to_a_gpu_and_any_takes_what_is_free() {
        let p = profile();
        let gpu_only = Fake([("nvenc", (3, true, 0))].into());
        let t = task(Preference::Cpu, true);
        assert!(matches!(
            decide(&p, &t, &gpu_only, 0),
            Decision::Hold { no_node: true, .. }
        ));
        let t = task(Preference::Any, false);
        assert_eq!(
            decide(&p, &t, &gpu_only, 0),
            Decision::Release(cap("nvenc"))
        );
        let cpu_only = Fake([("cpu", (1, true, 0))].into());
        assert_eq!(decide(&p, &t, &cpu_only, 0), Decision::Release(cap("cpu")));
        let mut p = builtin()["h264"].clone();
        p.variants.remove("nvenc");
        let t = task(Preference::Gpu, true);
        assert!(matches!(
            decide(&p, &t, &cpu_only, 0),
            Decision::Impossible(_)
        ));
    }
}
