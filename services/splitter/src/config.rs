//! The splitter's section of the configuration (`[splitter]`), with its own rules. Read once at
//! start (`SplitterConfig::of`); the runtime only carries the section as written.

use ffleet_runtime::Tenant;
use ffleet_runtime::config::{Config, ConfigError, Invalid, Section, positive};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitterConfig {
    /// Jobs split at the same time by one splitter.
    pub concurrency: usize,
    /// Longest segment when the job does not ask for one (a request's `segment_seconds` takes
    /// its place). Below it the length follows the pool: about two segments per live slot.
    pub default_segment_secs: f64,
    /// Shortest segment the pool rule cuts, against per-segment start-up cost (a request's own
    /// shorter `segment_seconds` is still honoured).
    pub min_segment_secs: f64,
    /// Whether a segment may start between the source's keyframes (its encoder decodes from the
    /// keyframe before it and drops the lead-in), so that sources with keyframes far apart are cut
    /// as finely as any. Off: segments start on keyframes only, as earlier releases cut them
    /// (for a fleet whose encoders are not all upgraded yet: an earlier encoder fails such a
    /// segment).
    pub cut_anywhere: bool,
    /// Whether segments start on scene changes near the length asked for: one downscaled decode
    /// of the source's video before cutting (a few percent of the job's CPU) finds them. Off, or
    /// with `cut_anywhere` off, cuts ignore the picture.
    pub scene_cuts: bool,
    /// Scene score (0 to 1, ffmpeg's `select` `scene`) above which a frame starts a new shot.
    pub scene_threshold: f64,
    /// Highest priority a request on `ffleet.jobs.submit` may ask for; requests above it are
    /// refused (`priority_not_allowed`). Requests on `ffleet.jobs.submit-privileged` (clients
    /// allowed to publish there) are not capped.
    pub max_submitter_priority: i32,
    /// Each tenant's limits, by tenant name (`[splitter.tenants.<name>]`); what a tenant's
    /// entry leaves out, and every tenant not named, takes `tenant_defaults`.
    pub tenants: BTreeMap<String, TenantLimits>,
    /// The limits of every tenant, unless its own entry says otherwise.
    pub tenant_defaults: TenantLimits,
}

/// What one tenant may ask of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Highest priority its requests may ask for (`priority_not_allowed` above it); unset:
    /// `max_submitter_priority`.
    pub max_priority: Option<i32>,
    /// Jobs it may have in flight (accepted and not yet ended); a request beyond them is
    /// refused (`quota_exceeded`). 0: no limit; unset: `DEFAULT_TENANT_ACTIVE_JOBS`.
    pub max_active_jobs: Option<u32>,
}

/// A shot change scores well above this; motion within a shot (a pan, a flash) mostly below.
pub const DEFAULT_SCENE_THRESHOLD: f64 = 0.3;

/// Lowest scene threshold accepted.
pub const MIN_SCENE_THRESHOLD: f64 = 0.05;

/// Jobs in flight a tenant may have when nothing sets its limit.
pub const DEFAULT_TENANT_ACTIVE_JOBS: u32 = 100;

/// The most jobs in flight a tenant may be given: its usage record lists each, and must stay
/// well within one KV value (`streams.max_msg_bytes`, 1 MiB by default).
pub const MAX_TENANT_ACTIVE_JOBS: u32 = 5000;

impl Default for SplitterConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            default_segment_secs: 10.0,
            min_segment_secs: 1.0,
            cut_anywhere: true,
            scene_cuts: true,
            scene_threshold: DEFAULT_SCENE_THRESHOLD,
            max_submitter_priority: 0,
            tenants: BTreeMap::new(),
            tenant_defaults: TenantLimits::default(),
        }
    }
}

impl SplitterConfig {
    /// This section of `cfg`, checked.
    pub fn of(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.section()
    }

    /// The highest priority a request may ask for: a tenant's own cap, else the defaults',
    /// else the plain submitters'.
    pub fn max_priority(&self, tenant: Option<&Tenant>) -> i32 {
        tenant
            .and_then(|t| {
                self.own(t)
                    .and_then(|l| l.max_priority)
                    .or(self.tenant_defaults.max_priority)
            })
            .unwrap_or(self.max_submitter_priority)
    }

    /// The jobs `tenant` may have in flight (0: no limit).
    pub fn max_active_jobs(&self, tenant: &Tenant) -> u32 {
        self.own(tenant)
            .and_then(|l| l.max_active_jobs)
            .or(self.tenant_defaults.max_active_jobs)
            .unwrap_or(DEFAULT_TENANT_ACTIVE_JOBS)
    }

    fn own(&self, tenant: &Tenant) -> Option<&TenantLimits> {
        self.tenants.get(tenant.as_str())
    }
}

impl Section for SplitterConfig {
    const KEY: &'static str = "splitter";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "splitter",
            &[
                ("default_segment_secs", self.default_segment_secs),
                ("min_segment_secs", self.min_segment_secs),
            ],
        )?;
        if let Some(bad) = self
            .tenants
            .keys()
            .find(|t| Tenant::new(t.as_str()).is_err())
        {
            return Err(Invalid(format!(
                "splitter.tenants names {bad:?}, which is no tenant name \
                 (1 to 32 ASCII letters, digits, '-' or '_')"
            )));
        }
        let limits = self
            .tenants
            .iter()
            .map(|(n, l)| (format!("splitter.tenants.{n}"), l))
            .chain([("splitter.tenant_defaults".to_owned(), &self.tenant_defaults)]);
        for (key, l) in limits {
            // 0 is "no limit", whose record still lists nothing.
            if l.max_active_jobs
                .is_some_and(|m| m > MAX_TENANT_ACTIVE_JOBS)
            {
                return Err(Invalid(format!(
                    "{key}.max_active_jobs must be at most {MAX_TENANT_ACTIVE_JOBS} (0: no limit)"
                )));
            }
        }
        // Below the floor ordinary motion scores as a new shot, and every frame is printed.
        if !(MIN_SCENE_THRESHOLD..1.0).contains(&self.scene_threshold) {
            return Err(Invalid(format!(
                "splitter.scene_threshold must be at least {MIN_SCENE_THRESHOLD} and below 1"
            )));
        }
        if self.concurrency == 0 {
            return Err(Invalid("splitter.concurrency must be >= 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_own_limits_come_first_then_the_defaults_then_the_plain_cap() {
        let mut c = SplitterConfig {
            max_submitter_priority: 3,
            ..Default::default()
        };
        c.tenants.insert(
            "acme".into(),
            TenantLimits {
                max_priority: Some(7),
                max_active_jobs: None,
            },
        );
        let (acme, other) = (Tenant::new("acme").unwrap(), Tenant::new("other").unwrap());
        assert_eq!(c.max_priority(Some(&acme)), 7);
        assert_eq!(c.max_priority(Some(&other)), 3);
        assert_eq!(c.max_priority(None), 3);
        assert_eq!(c.max_active_jobs(&acme), DEFAULT_TENANT_ACTIVE_JOBS);
        c.tenant_defaults.max_priority = Some(1);
        c.tenant_defaults.max_active_jobs = Some(0);
        assert_eq!(c.max_priority(Some(&other)), 1);
        assert_eq!(c.max_priority(None), 3);
        assert_eq!(c.max_active_jobs(&other), 0);
        for bad in [0.0, 0.01, 1.0, f64::NAN, -0.2] {
            let c = SplitterConfig {
                scene_threshold: bad,
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
        c.tenants
            .insert("not a tenant".into(), TenantLimits::default());
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_partial_defaults_table_keeps_the_default_quota() {
        let c: SplitterConfig =
            serde_json::from_value(serde_json::json!({"tenant_defaults": {"max_priority": 2}}))
                .unwrap();
        let t = Tenant::new("any").unwrap();
        assert_eq!(c.max_active_jobs(&t), DEFAULT_TENANT_ACTIVE_JOBS);
        assert_eq!(c.max_priority(Some(&t)), 2);
        let c: SplitterConfig = serde_json::from_value(
            serde_json::json!({"tenants": {"any": {"max_active_jobs": MAX_TENANT_ACTIVE_JOBS + 1}}}),
        )
        .unwrap();
        assert!(c.validate().is_err());
    }
}
