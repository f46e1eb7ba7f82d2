//! Choosing the capability queue for a task: among the profile's variants, prefer an
//! accelerator that has a live node, then CPU; with no live node at all, queue for CPU (or the
//! profile's first variant) so the task runs as soon as an encoder appears.

use ffleet_shared::Capability;
use ffleet_shared::profiles::Profile;

/// `live(cap)` tells whether a live node offers `cap`.
pub fn route(profile: &Profile, live: impl Fn(&Capability) -> bool) -> Option<Capability> {
    let caps: Vec<Capability> = profile
        .variants
        .keys()
        .filter_map(|k| Capability::new(k.as_str()).ok())
        .collect();
    let cpu = Capability::cpu();
    caps.iter()
        .filter(|c| **c != cpu)
        .find(|c| live(c))
        .or_else(|| caps.iter().find(|c| **c == cpu))
        .or_else(|| caps.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_shared::profiles::{Variant, builtin};

    #[test]
    fn prefers_live_accelerators_then_cpu() {
        let mut p = builtin()["h264"].clone();
        let nvenc = Capability::new("nvenc").unwrap();
        p.variants.insert(
            "nvenc".into(),
            Variant {
                args: vec![],
                quality_flag: None,
                threads: 1,
            },
        );
        assert_eq!(route(&p, |_| false), Some(Capability::cpu()));
        assert_eq!(route(&p, |c| *c == nvenc), Some(nvenc.clone()));
        p.variants.remove("cpu");
        assert_eq!(route(&p, |_| false), Some(nvenc));
    }
}
