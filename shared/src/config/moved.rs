//! Keys that moved to another section when the services came to own their sections: a file or
//! environment written for an earlier release still loads, each old key read at its new place
//! with a notice (`Config::notices`), and one set at both places is refused rather than guessed.

use super::ConfigError;
use figment::Figment;
use figment::providers::Serialized;

/// One moved key: where it was, where it is now (dotted paths).
pub(super) struct Moved {
    pub from: &'static str,
    pub to: &'static str,
}

pub(super) const MOVED: &[Moved] = &[
    Moved {
        from: "scheduler.heartbeat_ttl_secs",
        to: "fleet.heartbeat_ttl_secs",
    },
    Moved {
        from: "scheduler.lease_ttl_secs",
        to: "fleet.lease_ttl_secs",
    },
    Moved {
        from: "encoder.retry_nodes",
        to: "fleet.retry_nodes",
    },
    Moved {
        from: "encoder.max_attempts",
        to: "fleet.max_attempts",
    },
    Moved {
        from: "encoder.stall_timeout_secs",
        to: "ffmpeg.stall_timeout_secs",
    },
    Moved {
        from: "merger.keep_failed_scratch",
        to: "storage.keep_failed_scratch",
    },
];

/// Reads each old key at its new place in `fig`. `layers`: what was written, lowest first (the
/// file, then the environment), without defaults: the highest layer that names a key, by
/// either name, decides its value, as with any key; one layer naming it twice is refused.
/// Returns the merged figment, the old keys to drop from their sections, and one notice per key
/// read from its old name.
pub(super) fn apply(
    layers: &[&Figment],
    mut fig: Figment,
) -> Result<(Figment, Vec<&'static Moved>, Vec<String>), ConfigError> {
    let mut dropped = Vec::new();
    let mut notices = Vec::new();
    for m in MOVED {
        let mut decided = None;
        let mut old_seen = false;
        for layer in layers {
            let old = layer.find_value(m.from).ok();
            let new = layer.find_value(m.to).is_ok();
            if old.is_some() && new {
                return Err(ConfigError::Invalid(format!(
                    "{} is set, and so is its old name {}: keep only {}",
                    m.to, m.from, m.to
                )));
            }
            old_seen |= old.is_some();
            if let Some(v) = old {
                decided = Some(Some(v));
            } else if new {
                decided = Some(None);
            }
        }
        if !old_seen {
            continue;
        }
        dropped.push(m);
        if let Some(Some(value)) = decided {
            fig = fig.merge(Serialized::default(m.to, value));
            notices.push(format!(
                "configuration key {} is now {}: read from its old name (rename it)",
                m.from, m.to
            ));
        }
    }
    Ok((fig, dropped, notices))
}
