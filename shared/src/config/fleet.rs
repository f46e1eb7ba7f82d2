//! The `[fleet]` section: what the services of one fleet must agree on, so no service owns it.
//! The heartbeat TTL decides when the scheduler calls a node dead, how the splitter counts live
//! slots and how long the workers bucket keeps a key; the lease TTL sizes the lease bucket; the
//! failure budget is spent by encoders and checked by the merger's re-issues.

use ffleet_protocol::settings::{Invalid, Section, positive};
use ffleet_protocol::unit_protocol::Budget;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// A heartbeat older than this marks its node as dead: its units are handed to others.
    pub heartbeat_ttl_secs: f64,
    /// The scheduler leader's lease: a follower takes over within this long of the leader dying.
    pub lease_ttl_secs: f64,
    /// A unit that failed on this many distinct nodes fails its job.
    pub retry_nodes: u32,
    /// Attempts after which a unit that keeps failing is failed for good, however few nodes
    /// it failed on (a fleet of one node never reaches `retry_nodes`).
    pub max_attempts: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            heartbeat_ttl_secs: 3.0,
            lease_ttl_secs: 3.0,
            retry_nodes: 3,
            max_attempts: 5,
        }
    }
}

impl FleetConfig {
    pub fn heartbeat_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_ttl_secs)
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_secs)
    }

    /// How much failing a unit may do before its job fails.
    pub fn budget(&self) -> Budget {
        Budget {
            retry_nodes: self.retry_nodes,
            max_attempts: self.max_attempts,
        }
    }
}

impl Section for FleetConfig {
    const KEY: &'static str = "fleet";

    fn validate(&self) -> Result<(), Invalid> {
        positive(
            "fleet",
            &[
                ("heartbeat_ttl_secs", self.heartbeat_ttl_secs),
                ("lease_ttl_secs", self.lease_ttl_secs),
            ],
        )?;
        if self.retry_nodes == 0 || self.max_attempts == 0 {
            return Err(Invalid(
                "fleet.retry_nodes and fleet.max_attempts must be >= 1".into(),
            ));
        }
        Ok(())
    }
}
