//! Checks a whole configuration at start: the runtime's sections, then each service's own
//! (`[splitter]`, `[scheduler]`, `[encoder]`, `[merger]`), read by the service's type. Every
//! command checks them all, so a mistake in any section is reported before anything connects,
//! whichever service this process runs.

use ffleet_runtime::config::{Config, ConfigError};

/// Every section of `cfg`, by its owner's rules.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    cfg.validate()?;
    ffleet_splitter::SplitterConfig::of(cfg)?;
    ffleet_scheduler::SchedulerConfig::of(cfg)?;
    ffleet_encoder::EncoderConfig::of(cfg)?;
    ffleet_merger::MergerConfig::of(cfg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_section_is_checked_by_its_owner() {
        validate(&Config::default()).expect("defaults are valid");
        for (section, key, value, named) in [
            (
                "splitter",
                "concurrency",
                0u32.into(),
                "splitter.concurrency",
            ),
            (
                "scheduler",
                "lost_task_secs",
                0u32.into(),
                "scheduler.lost_task_secs",
            ),
            ("encoder", "slots", 0u32.into(), "encoder.slots"),
            ("merger", "concurrency", 0u32.into(), "merger.concurrency"),
            ("encoder", "slotz", 3u32.into(), "slotz"),
        ] {
            let mut cfg = Config::default();
            let raw = match section {
                "splitter" => &mut cfg.splitter,
                "scheduler" => &mut cfg.scheduler,
                "encoder" => &mut cfg.encoder,
                _ => &mut cfg.merger,
            };
            raw.insert(key.into(), value);
            let e = validate(&cfg).unwrap_err().to_string();
            assert!(e.contains(named), "{section}.{key}: {e}");
        }
    }
}
