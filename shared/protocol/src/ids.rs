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
    #[error("job_id {0:?} is reserved (it is a token of the fleet's own subjects)")]
    Reserved(String),
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

/// A job's id. Other systems choose it; it is the `Nats-Msg-Id` of the submit event, a token
/// of every subject about the job, and a KV key. A tenant's job is `<tenant>=<id>` inside the
/// fleet ([`JobId::scoped`]): ids are unique per tenant, and a client never names another
/// tenant's job, since ids a client sends are plain ([`JobId::is_plain`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

/// Ids no client may give a job (`JobId::plain`).
const RESERVED: [&str; 2] = [TENANTS_TOKEN, UNNAMED_JOB];

/// The subject token under which tenants' subjects lie (`ffleet.events.t.<tenant>...`): no
/// plain job may be named it (`subjects` uses it).
pub const TENANTS_TOKEN: &str = "t";

/// Stands in for a job id when a request was too broken to name its job (`subjects` uses it).
pub const UNNAMED_JOB: &str = "_unnamed";

/// Between a tenant's name and its job's own id in a scoped job id: a character that subjects,
/// KV keys, object names and file names take, and that no plain id holds.
pub const TENANT_SEPARATOR: char = '=';

impl JobId {
    /// Longest plain id (a client's); a scoped one adds its tenant's name and the separator.
    pub const MAX_LEN: usize = 64;

    /// A plain id, or a scoped one (`<tenant>=<id>`), as records and subjects hold them.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        match value.split_once(TENANT_SEPARATOR) {
            Some((tenant, id)) => {
                Tenant::new(tenant)?;
                check_token("job_id", id, Self::MAX_LEN)?;
            }
            None => check_token("job_id", &value, Self::MAX_LEN)?,
        }
        Ok(Self(value))
    }

    /// A plain id only: what a client may name a job (a scoped id is the fleet's). `t` and
    /// `_unnamed` are taken: `ffleet.events.t.>` holds the tenants' events, and
    /// `ffleet.events._unnamed.>` refusals that name no job.
    pub fn plain(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        check_token("job_id", &value, Self::MAX_LEN)?;
        if RESERVED.contains(&value.as_str()) {
            return Err(IdError::Reserved(value));
        }
        Ok(Self(value))
    }

    /// `tenant`'s job `id` (a plain id).
    pub fn scoped(tenant: &Tenant, id: &JobId) -> Self {
        Self(format!("{tenant}{TENANT_SEPARATOR}{}", id.local()))
    }

    /// Where `tenant`'s requests that named no usable job are spoken of (`<tenant>=_unnamed`).
    pub fn unnamed_of(tenant: &Tenant) -> Self {
        Self(format!("{tenant}{TENANT_SEPARATOR}{}", UNNAMED_JOB))
    }

    /// Whether this id names no tenant: the only form a client may send.
    pub fn is_plain(&self) -> bool {
        self.tenant_name().is_none()
    }

    /// The tenant this job belongs to, if any.
    pub fn tenant(&self) -> Option<Tenant> {
        self.tenant_name().map(|t| Tenant(t.to_owned()))
    }

    fn tenant_name(&self) -> Option<&str> {
        self.0.split_once(TENANT_SEPARATOR).map(|(t, _)| t)
    }

    /// The id as its submitter named it (without the tenant).
    pub fn local(&self) -> &str {
        self.0
            .split_once(TENANT_SEPARATOR)
            .map_or(self.0.as_str(), |(_, id)| id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for JobId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

token_id!(
    /// A tenant: one client system with a submitter identity of its own (`ffleet secrets init
    /// --tenant`), whose jobs, events and status nobody else can see. A token of its subjects.
    Tenant,
    "tenant",
    32
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
    fn scoped_job_ids_carry_their_tenant_and_plain_ones_none() {
        let t = Tenant::new("acme").unwrap();
        let plain = JobId::new("j1").unwrap();
        let scoped = JobId::scoped(&t, &plain);
        assert_eq!(scoped.as_str(), "acme=j1");
        assert_eq!(scoped.tenant(), Some(t));
        assert_eq!(scoped.local(), "j1");
        assert!(!scoped.is_plain());
        assert!(plain.is_plain() && plain.tenant().is_none());
        assert_eq!(JobId::new("acme=j1").unwrap(), scoped);
        for bad in ["=j", "a=", "a=b=c", "a.b=c", "a=b.c", "a*=b"] {
            assert!(JobId::new(bad).is_err(), "{bad:?} accepted");
        }
        // What a client may send: no tenant, and none of the fleet's own subject tokens.
        for taken in ["acme=j1", "t", "_unnamed"] {
            assert!(JobId::plain(taken).is_err(), "{taken:?} accepted");
        }
        assert!(JobId::plain("tt").is_ok());
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
