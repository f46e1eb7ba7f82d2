//! Layered configuration: built-in defaults → `ffleet.toml` (or `--config FILE`) → `FFLEET_*`
//! environment (nested keys joined by `__`, e.g. `FFLEET_ENCODER__SLOTS=4`) → command-line flags
//! (applied by the binary), then `validate()` once. Only `FFLEET_*` variables that
//! name a configuration section are read, so `FFLEET_CONFIG` (the file) or `FFLEET_NATS_SERVER`
//! (the nats-server binary for local clusters) never trip the unknown-key check.
//!
//! Each section belongs to the crate that reads it. The services' own sections (`[splitter]`,
//! `[scheduler]`, `[encoder]`, `[merger]`) are carried here as written and read, typed and
//! checked, by their service (`Config::section`); what several services must agree on is
//! `[fleet]`. Keys moved by that split still load from their old names (`moved`).

mod fleet;
mod moved;

pub use ffleet_media::config::{FfmpegConfig, LimitsConfig};
pub use ffleet_nats::config::{NKEY_SEED_ENV, NatsConfig, StreamsConfig};
pub use ffleet_protocol::settings::positive;
pub use ffleet_protocol::settings::{Invalid, Section};
pub use ffleet_storage::config::{StorageBackend, StorageConfig};
pub use ffleet_telemetry::config::LogConfig;
pub use fleet::FleetConfig;

use ffleet_media::Tools;
use ffleet_nats::provision::Provisioning;
use ffleet_protocol::profiles::{self, Profile, ProfileError};
use ffleet_storage::Placement;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Tag, Value};
use serde::de::DeserializeOwned;
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
    pub fleet: FleetConfig,
    /// The services' sections as written; each service reads its own (`section`).
    pub splitter: Dict,
    pub scheduler: Dict,
    pub encoder: Dict,
    pub merger: Dict,
    pub log: LogConfig,
    /// Profile used when a job names none.
    pub default_profile: String,
    pub profiles: BTreeMap<String, Profile>,
    /// What loading had to say (keys read from their old names), for the log once it runs.
    #[serde(skip)]
    pub notices: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: NatsConfig::default(),
            storage: StorageConfig::default(),
            ffmpeg: FfmpegConfig::default(),
            limits: LimitsConfig::default(),
            streams: StreamsConfig::default(),
            fleet: FleetConfig::default(),
            splitter: Dict::new(),
            scheduler: Dict::new(),
            encoder: Dict::new(),
            merger: Dict::new(),
            log: LogConfig::default(),
            default_profile: "h264".into(),
            profiles: profiles::builtin(),
            notices: Vec::new(),
        }
    }
}

/// The sections the services own, carried as written.
pub const SERVICE_SECTIONS: [&str; 4] = ["splitter", "scheduler", "encoder", "merger"];

/// Top-level keys read from `FFLEET_*` variables; other `FFLEET_` variables (the config file,
/// the nats-server binary, benchmark knobs) are not configuration and are left alone.
const TOP_LEVEL_KEYS: &[&str] = &[
    NatsConfig::KEY,
    StorageConfig::KEY,
    FfmpegConfig::KEY,
    LimitsConfig::KEY,
    StreamsConfig::KEY,
    FleetConfig::KEY,
    SERVICE_SECTIONS[0],
    SERVICE_SECTIONS[1],
    SERVICE_SECTIONS[2],
    SERVICE_SECTIONS[3],
    LogConfig::KEY,
    "default_profile",
    "profiles",
];

impl Config {
    /// Loads defaults → TOML file → environment. `file` is `--config`; without it,
    /// `ffleet.toml` in the working directory is read when present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let in_file = match file {
            Some(f) if !f.exists() => return Err(ConfigError::MissingFile(f.to_path_buf())),
            Some(f) => Figment::from(Toml::file(f)),
            None => Figment::from(Toml::file("ffleet.toml")),
        };
        let in_env = Figment::from(
            Env::prefixed("FFLEET_")
                .filter(|k| {
                    let top = k.as_str().split("__").next().unwrap_or_default();
                    TOP_LEVEL_KEYS.iter().any(|t| top.eq_ignore_ascii_case(t))
                })
                .split("__"),
        );
        let fig = Figment::from(Serialized::defaults(Config::default()))
            .merge(in_file.clone())
            .merge(in_env.clone());
        let (fig, dropped, notices) = moved::apply(&[&in_file, &in_env], fig)?;
        let mut cfg: Config = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
        for m in dropped {
            let (section, key) = m.from.split_once('.').expect("a dotted key");
            if let Some(raw) = cfg.raw_mut(section) {
                raw.remove(key);
            }
        }
        cfg.notices = notices;
        if let Ok(seed) = std::env::var(NKEY_SEED_ENV)
            && !seed.trim().is_empty()
        {
            cfg.nats.nkey_seed = Some(seed.trim().to_owned());
        }
        Ok(cfg)
    }

    /// Logs what loading had to say (`notices`), once the log runs.
    pub fn log_notices(&self) {
        for notice in &self.notices {
            tracing::warn!(notice = %notice, "configuration");
        }
    }

    /// A service's section, read from what was written and checked by its own rules. Unknown
    /// keys are refused, naming the section.
    pub fn section<T: Section + DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let raw = self
            .raw(T::KEY)
            .ok_or_else(|| ConfigError::Invalid(format!("no service section [{}]", T::KEY)))?;
        let section: T = Value::Dict(Tag::Default, raw.clone())
            .deserialize()
            .map_err(|e| ConfigError::Invalid(format!("[{}]: {e}", T::KEY)))?;
        section.validate()?;
        Ok(section)
    }

    /// Replaces a service's section (in-process fleets and tests set one before starting it).
    pub fn set_section<T: Section + Serialize>(&mut self, section: &T) -> Result<(), ConfigError> {
        let value = Value::serialize(section)
            .map_err(|e| ConfigError::Invalid(format!("[{}]: {e}", T::KEY)))?;
        let Some(dict) = value.into_dict() else {
            return Err(ConfigError::Invalid(format!("[{}] is no table", T::KEY)));
        };
        match self.raw_mut(T::KEY) {
            Some(raw) => *raw = dict,
            None => {
                return Err(ConfigError::Invalid(format!(
                    "no service section [{}]",
                    T::KEY
                )));
            }
        }
        Ok(())
    }

    fn raw(&self, key: &str) -> Option<&Dict> {
        match key {
            "splitter" => Some(&self.splitter),
            "scheduler" => Some(&self.scheduler),
            "encoder" => Some(&self.encoder),
            "merger" => Some(&self.merger),
            _ => None,
        }
    }

    fn raw_mut(&mut self, key: &str) -> Option<&mut Dict> {
        match key {
            "splitter" => Some(&mut self.splitter),
            "scheduler" => Some(&mut self.scheduler),
            "encoder" => Some(&mut self.encoder),
            "merger" => Some(&mut self.merger),
            _ => None,
        }
    }

    /// Checks what no type can: each section this crate knows by its own rules, then the
    /// profiles. The services' sections are checked by their service (`section`); the binary
    /// checks them all at start.
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
        self.fleet.validate()?;
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
            heartbeat_ttl: self.fleet.heartbeat_ttl(),
            lease_ttl: self.fleet.lease_ttl(),
        }
    }

    /// Where the media and scratch buckets' streams live.
    pub fn media_placement(&self) -> Placement {
        Placement {
            replicas: self.streams.replicas_of(&self.storage.bucket),
            create: self.creates_streams(),
            purge: self.nats.role.is_none_or(|r| r.purges_media()),
            // A client's credentials (the submitter's `--upload`) reach the media bucket only.
            scratch: self.nats.role.is_none_or(|r| r.uses_scratch()),
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

    /// A service's section, as a service crate would declare it.
    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Enc {
        slots: Option<u32>,
        node_id: Option<String>,
    }

    impl Section for Enc {
        const KEY: &'static str = "encoder";

        fn validate(&self) -> Result<(), Invalid> {
            match self.slots {
                Some(0) => Err(Invalid("encoder.slots must be >= 1".into())),
                _ => Ok(()),
            }
        }
    }

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
            assert_eq!(c.section::<Enc>().unwrap().slots, Some(5));
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
    fn tenant_roots_lie_apart_from_every_other_root_and_each_other() {
        let base = tempfile::tempdir().unwrap();
        let mut c = Config::default();
        c.storage.input_roots = vec![base.path().join("in")];
        c.storage.output_roots = vec![base.path().join("out")];
        c.storage.tenant_roots = vec![base.path().join("tenants")];
        c.validate().unwrap();
        for overlapping in [
            vec![base.path().join("in/tenants")],
            vec![base.path().to_path_buf()],
            vec![
                base.path().join("tenants"),
                base.path().join("tenants/acme"),
            ],
            vec![base.path().join("t/../in")],
            vec!["relative".into()],
        ] {
            c.storage.tenant_roots = overlapping.clone();
            assert!(c.validate().is_err(), "{overlapping:?} accepted");
        }
        // Scratch inside a tenant root is as bad as inside any root.
        c.storage.tenant_roots = vec![base.path().join("tenants")];
        c.storage.scratch = base.path().join("tenants/scratch");
        assert!(c.validate().is_err());
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
        c.ffmpeg.stall_timeout_secs = 0.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("stall_timeout")
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("ffleet.toml", "[encoderz]\nslots = 3\n")?;
            assert!(Config::load(None).is_err());
            // A service's section is checked by the service's type: its keys and its rules.
            jail.create_file("ffleet.toml", "[encoder]\nslotz = 3\n")?;
            let e = Config::load(None).unwrap().section::<Enc>().unwrap_err();
            assert!(
                e.to_string().contains("[encoder]") && e.to_string().contains("slotz"),
                "{e}"
            );
            jail.create_file("ffleet.toml", "[encoder]\nslots = 0\n")?;
            let e = Config::load(None).unwrap().section::<Enc>().unwrap_err();
            assert!(e.to_string().contains("encoder.slots"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn a_service_section_set_in_process_reads_back() {
        let mut c = Config::default();
        assert_eq!(c.section::<Enc>().unwrap(), Enc::default());
        let mine = Enc {
            slots: Some(2),
            node_id: Some("007".into()),
        };
        c.set_section(&mine).unwrap();
        assert_eq!(c.section::<Enc>().unwrap(), mine);
        figment::Jail::expect_with(|jail| {
            jail.set_env("FFLEET_ENCODER__NODE_ID", "enc-7");
            let c = Config::load(None).expect("loads");
            assert_eq!(
                c.section::<Enc>().unwrap().node_id.as_deref(),
                Some("enc-7")
            );
            Ok(())
        });
    }

    #[test]
    fn moved_keys_load_from_their_old_names_with_a_notice() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ffleet.toml",
                "[scheduler]\nheartbeat_ttl_secs = 7\n[merger]\nkeep_failed_scratch = true\n",
            )?;
            jail.set_env("FFLEET_ENCODER__STALL_TIMEOUT_SECS", "4");
            jail.set_env("FFLEET_ENCODER__SLOTS", "2");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.fleet.heartbeat_ttl_secs, 7.0);
            assert!(c.storage.keep_failed_scratch);
            assert_eq!(c.ffmpeg.stall_timeout_secs, 4.0);
            assert_eq!(c.notices.len(), 3, "{:?}", c.notices);
            assert!(
                c.notices
                    .iter()
                    .any(|n| n.contains("fleet.heartbeat_ttl_secs"))
            );
            // Gone from the old sections, so the services' own types do not refuse them.
            assert!(!c.scheduler.contains_key("heartbeat_ttl_secs"));
            assert_eq!(c.section::<Enc>().unwrap().slots, Some(2));
            c.validate().expect("valid");
            // The new name in the environment overrides the old one in the file, as the
            // environment overrides the file for any key.
            jail.set_env("FFLEET_FLEET__HEARTBEAT_TTL_SECS", "5");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.fleet.heartbeat_ttl_secs, 5.0);
            assert!(!c.scheduler.contains_key("heartbeat_ttl_secs"));
            // Both names in one layer: refused, not guessed.
            jail.set_env("FFLEET_SCHEDULER__HEARTBEAT_TTL_SECS", "6");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(
                e.contains("fleet.heartbeat_ttl_secs")
                    && e.contains("scheduler.heartbeat_ttl_secs"),
                "{e}"
            );
            Ok(())
        });
        let c = Config::default();
        assert!(c.notices.is_empty());
    }
}
