//! Validated identifiers that end up inside NATS subjects, KV keys and file names.
//!
//! Each one is checked once at the boundary, so the rest of the code can splice them into a subject
//! or a path without re-checking: no dots, wildcards, whitespace or path separators get through.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} characters long")]
    Length { what: &'static str, max: usize },
    #[error("{what} may contain only ASCII letters, digits, '-' and '_' (got {value:?})")]
    Charset { what: &'static str, value: String },
    #[error("unit must be \"audio\" or \"v\" followed by five digits (got {0:?})")]
    Unit(String),
}

fn check_token(what: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() || value.len() > max {
        return Err(IdError::Length { what, max });
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(IdError::Charset {
            what,
            value: value.chars().take(80).collect(),
        });
    }
    Ok(())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_token($what, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

token_id!(
    /// A job's id. Other systems choose it; it is the `Nats-Msg-Id` of the submit event, a token
    /// of every subject about the job, and a KV key.
    JobId,
    "job_id",
    64
);
token_id!(
    /// An encoder node's id, unique in the fleet.
    NodeId,
    "node_id",
    64
);
token_id!(
    /// An encode capability (`cpu`, `nvenc`, ...): the last token of `ffleet.tasks.encode.<cap>`.
    Capability,
    "capability",
    32
);

impl Capability {
    pub fn cpu() -> Self {
        Self("cpu".to_owned())
    }

    /// Every capability but `cpu` is an accelerator (`nvenc`, `qsv`, `vaapi`...): its tasks
    /// take GPU sessions, not cores, and a job's `prefer = "gpu"` means these.
    pub fn is_gpu(&self) -> bool {
        self.0 != "cpu"
    }
}

impl NodeId {
    /// `<host>-<8 random hex>`: readable in `ffleet workers`, unique across restarts.
    pub fn generate() -> Self {
        let host: String = hostname()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let host = if host.is_empty() { "node".into() } else { host };
        Self(format!("{host}-{suffix}"))
    }
}

/// The machine's host name, best effort.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
}

/// One unit of encode work inside a job: a video segment or the job's single audio track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Video(u32),
    Audio,
}

impl Unit {
    pub fn is_audio(self) -> bool {
        matches!(self, Unit::Audio)
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unit::Video(i) => write!(f, "v{i:05}"),
            Unit::Audio => f.write_str("audio"),
        }
    }
}

impl FromStr for Unit {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "audio" {
            return Ok(Unit::Audio);
        }
        match s.strip_prefix('v') {
            Some(d) if d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit()) => d
                .parse()
                .map(Unit::Video)
                .map_err(|_| IdError::Unit(s.into())),
            _ => Err(IdError::Unit(s.into())),
        }
    }
}

impl Serialize for Unit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Unit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_refuse_subject_and_path_metacharacters() {
        for bad in ["", "a.b", "a*", "a>", "a b", "../x", "a/b", "é"] {
            assert!(JobId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(JobId::new("x".repeat(65)).is_err());
        assert_eq!(JobId::new("Job_1-a").unwrap().as_str(), "Job_1-a");
    }

    #[test]
    fn units_round_trip_through_their_key_form() {
        for u in [Unit::Audio, Unit::Video(0), Unit::Video(12345)] {
            assert_eq!(u.to_string().parse::<Unit>().unwrap(), u);
        }
        assert!("v1".parse::<Unit>().is_err());
        assert!("v0000a".parse::<Unit>().is_err());
    }
}
