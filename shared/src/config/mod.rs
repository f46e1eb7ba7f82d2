//! Layered configuration: built-in defaults → `ffleet.toml` (or `--config FILE`) → `FFLEET_*`
//! environment (nested keys joined by `__`, e.g. `FFLEET_ENCODER__SLOTS=4`) → command-line flags
//! (applied by the binary), then `validate()` once. Only `FFLEET_*` variables that
//! name a configuration section are read, so `FFLEET_CONFIG` (the file) or `FFLEET_NATS_SERVER`
//! (the nats-server binary for local clusters) never trip the unknown-key check.

mod services;

pub use ffleet_media::config::{FfmpegConfig, LimitsConfig};
pub use ffleet_nats::config::{NKEY_SEED_ENV, NatsConfig, StreamsConfig};
pub use ffleet_protocol::settings::{Invalid, Section};
pub use ffleet_storage::config::{StorageBackend, StorageConfig};
pub use ffleet_telemetry::config::LogConfig;
pub use services::{EncoderConfig, MergerConfig, SchedulerConfig, SplitterConfig};

use ffleet_media::Tools;
use ffleet_nats::provision::Provisioning;
use ffleet_protocol::profiles::{self, Profile, ProfileError};
use ffleet_storage::Placement;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("configuration: {0}")]
    Profile(#[from] ProfileError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<Invalid> for ConfigError {
    fn from(e: Invalid) -> Self {
        ConfigError::Invalid(e.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub nats: NatsConfig,
    pub storage: StorageConfig,
    pub ffmpeg: FfmpegConfig,
    pub limits: LimitsConfig,
    pub streams: StreamsConfig,
    pub splitter: SplitterConfig,
    pub scheduler: SchedulerConfig,
    pub encoder: EncoderConfig,
    pub merger: MergerConfig,
    pub log: LogConfig,
    /// Profile used when a job names none.
    pub default_profile: String,
    pub profiles: BTreeMap<String, Profile>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: NatsConfig::default(),
            storage: StorageConfig::default(),
            ffmpeg: FfmpegConfig::default(),
            limits: LimitsConfig::default(),
            streams: StreamsConfig::default(),
            splitter: SplitterConfig::default(),
            scheduler: SchedulerConfig::default(),
            encoder: EncoderConfig::default(),
            merger: MergerConfig::default(),
            log: LogConfig::default(),
            default_profile: "h264".into(),
            profiles: profiles::builtin(),
        }
    }
}

/// Top-level keys read from `FFLEET_*` variables; other `FFLEET_` variables (the config file,
/// the nats-server binary, benchmark knobs) are not configuration and are left alone.
const TOP_LEVEL_KEYS: &[&str] = &[
    NatsConfig::KEY,
    StorageConfig::KEY,
    FfmpegConfig::KEY,
    LimitsConfig::KEY,
    StreamsConfig::KEY,
    SplitterConfig::KEY,
    SchedulerConfig::KEY,
    EncoderConfig::KEY,
    MergerConfig::KEY,
    LogConfig::KEY,
    "default_profile",
    "profiles",
];

impl Config {
    /// Loads defaults → TOML file → environment. `file` is `--config`; without it,
    /// `ffleet.toml` in the working directory is read when present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) if !f.exists() => return Err(ConfigError::MissingFile(f.to_path_buf())),
            Some(f) => fig = fig.merge(Toml::file(f)),
            None => fig = fig.merge(Toml::file("ffleet.toml")),
        }
        fig = fig.merge(
            Env::prefixed("FFLEET_")
                .filter(|k| {
                    let top = k.as_str().split("__").next().unwrap_or_default();
                    TOP_LEVEL_KEYS.iter().any(|t| top.eq_ignore_ascii_case(t))
                })
                .split("__"),
        );
        let mut cfg: Config = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        if let Ok(seed) = std::env::var(NKEY_SEED_ENV)
            && !seed.trim().is_empty()
        {
            cfg.nats.nkey_seed = Some(seed.trim().to_owned());
        }
        Ok(cfg)
    }

    /// Checks what no type can: each section by its own rules, then the profiles.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        for (name, p) in &self.profiles {
            ffleet_protocol::ids::Capability::new(name.replace('.', "_"))
                .map_err(|e| ConfigError::Invalid(format!("profile name {name:?}: {e}")))?;
            p.validate(name)?;
            for cap in p.variants.keys() {
                ffleet_protocol::ids::Capability::new(cap.as_str()).map_err(|e| {
                    ConfigError::Invalid(format!("profile {name:?} variant {cap:?}: {e}"))
                })?;
            }
        }
        if !self.profiles.contains_key(&self.default_profile) {
            return Err(ConfigError::Invalid(format!(
                "default_profile {:?} is not among the profiles ({})",
                self.default_profile,
                self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        self.nats.validate()?;
        self.streams.validate()?;
        self.ffmpeg.validate()?;
        self.limits.validate()?;
        self.storage.validate()?;
        self.splitter.validate()?;
        self.scheduler.validate()?;
        self.encoder.validate()?;
        self.merger.validate()?;
        Ok(())
    }

    /// Refuses a directory ffleet writes to (`what`) inside an input or output root, or
    /// containing one (`StorageConfig::roots_must_not_contain`).
    pub fn roots_must_not_contain(&self, dir: &Path, what: &str) -> Result<(), ConfigError> {
        Ok(self.storage.roots_must_not_contain(dir, what)?)
    }

    /// Whether these credentials may create streams and buckets: without a role (one trusted
    /// process, tests) yes; under per-role credentials only the admin's.
    pub fn creates_streams(&self) -> bool {
        self.nats.role.is_none_or(|r| r.provisions())
    }

    /// What provisioning the streams and buckets takes from this configuration.
    pub fn provisioning(&self) -> Provisioning<'_> {
        Provisioning {
            streams: &self.streams,
            create: self.creates_streams(),
            heartbeat_ttl: self.scheduler.heartbeat_ttl(),
            lease_ttl: self.scheduler.lease_ttl(),
        }
    }

    /// Where the media bucket's streams live.
    pub fn media_placement(&self) -> Placement {
        Placement {
            replicas: self.streams.replicas_of(&self.storage.bucket),
            create: self.creates_streams(),
        }
    }

    /// ffmpeg and ffprobe as this configuration runs them: their paths and child limits.
    pub fn tools(&self) -> Tools {
        Tools::from_config(&self.ffmpeg, &self.limits)
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }
}

#[cfg(test)]
// figment's test jail returns its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_layers_apply_in_order() {
        Config::default().validate().unwrap();
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ffleet.toml",
                r#"
                default_profile = "mine"
                [encoder]
                slots = 3
                [profiles.mine.cpu]
                args = ["-c:v", "libx264", "-qp", "20"]
                quality_flag = "-qp"
                "#,
            )?;
            jail.set_env("FFLEET_ENCODER__SLOTS", "5");
            jail.set_env("FFLEET_NATS_SERVER", "/usr/bin/nats-server");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.encoder.slots, Some(5));
            assert_eq!(c.default_profile, "mine");
            assert!(c.profiles.contains_key("h264"), "built-ins stay");
            assert_eq!(c.profiles["mine"].variants["cpu"].threads, 1);
            c.validate().expect("valid");
            Ok(())
        });
    }

    #[test]
    fn the_environment_reaches_every_section_by_its_key() {
        let json = serde_json::to_value(Config::default()).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut keys = TOP_LEVEL_KEYS.to_vec();
        fields.sort_unstable();
        keys.sort_unstable();
        assert_eq!(fields, keys);
    }

    #[test]
    fn scratch_or_data_inside_a_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.storage.input_roots = vec![root.path().to_path_buf()];
        c.storage.scratch = root.path().join("not-yet/scratch");
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("storage.scratch") && e.contains("input_roots"),
            "{e}"
        );
        // A root inside the data directory is as bad.
        c.storage.scratch = root.path().parent().unwrap().to_path_buf();
        assert!(c.validate().is_err());
        c.storage.scratch = tempfile::tempdir().unwrap().path().join("s");
        c.validate().unwrap();
        assert!(
            c.roots_must_not_contain(&root.path().join("data"), "--data")
                .is_err()
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_key_named() {
        let c = Config {
            default_profile: "nope".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("default_profile")
        );
        let mut c = Config::default();
        c.encoder.stall_timeout_secs = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("stall_timeout")
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("ffleet.toml", "[encoder]\nslotz = 3\n")?;
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }
}
