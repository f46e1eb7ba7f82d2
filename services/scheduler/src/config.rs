//! The scheduler's section of the configuration (`[scheduler]`), with its own rules. Read once
//! at start (`SchedulerConfig::of`); the heartbeat and lease TTLs, which other services and the
//! buckets depend on too, are fleet-wide (`[fleet]`).

use ffleet_runtime::config::{Config, ConfigError, Invalid, Section, positive};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How often the leader compares every active job's units with the live pool and the
    /// queues, re-issuing what went missing (the slow path behind heartbeat staleness).
    pub reconcile_interval_secs: f64,
    /// A unit queued this long whose queue holds no message is re-issued (a lost message).
    pub lost_task_secs: f64,
    /// A job still unfinished this long after it was accepted fails.
    pub job_deadline_secs: f64,
    /// Tasks released into a capability queue beyond the pool's free slots, so a node that
    /// frees a slot finds its next task waiting instead of a round trip away.
    pub release_buffer: u32,
    /// A GPU-preferring task spills to CPU (if its job allows it) once more than this many
    /// tasks wait for GPU capacity.
    pub spill_queue_depth: u32,
    /// A task whose allowed capabilities have no live node at all waits this long for one,
    /// then fails its job (`no_capable_node`).
    pub capability_wait_secs: f64,
    /// How long the records a finished job leaves (its unit records, its job record's older
    /// revisions) are kept before the leader purges them. Meanwhile `ffleet transcode` reads
    /// its summary from them and reports still in flight find them. Kept for the buckets' whole
    /// max age instead, they would fill the unit-record bucket's cap (`streams.max_msgs`) at a
    /// fraction of a fleet's rate.
    pub keep_finished_records_secs: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            reconcile_interval_secs: 5.0,
            lost_task_secs: 30.0,
            job_deadline_secs: 24.0 * 3600.0,
            release_buffer: 1,
            spill_queue_depth: 4,
            capability_wait_secs: 60.0,
            keep_finished_records_secs: 300.0,
        }
    }
}

impl SchedulerConfig {
    /// This section of `cfg`, checked.
    pub fn of(cfg: &Config) -> Result<Self, ConfigError> {
        cfg.section()
    }

    pub fn keep_finished_records(&self) -> Duration {
        Duration::from_secs_f64(self.keep_finished_records_secs)
    }
}

impl Section for SchedulerConfig {
    const KEY: &'static str = "scheduler";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "scheduler",
            &[
                ("reconcile_interval_secs", self.reconcile_interval_secs),
                ("lost_task_secs", self.lost_task_secs),
                ("job_deadline_secs", self.job_deadline_secs),
                ("capability_wait_secs", self.capability_wait_secs),
            ],
        )?;
        let keep = self.keep_finished_records_secs;
        if !(keep.is_finite() && (0.0..=7.0 * 24.0 * 3600.0).contains(&keep)) {
            return Err(Invalid(format!(
                "scheduler.keep_finished_records_secs must be between 0 and 604800 (7 days, the \
                 buckets' max age); got {keep}"
            )));
        }
        Ok(())
    }
}
