//! A tenant's usage record (bucket `ffleet-tenants`, one key per tenant): the jobs it has in
//! flight, as the splitter admitted them, so that its quota (`splitter.tenants.<name>
//! .max_active_jobs`) is held without walking the jobs bucket. Ids are the tenant's own (plain).
//!
//! The set is kept by revision-checked updates: the splitter adds a job when it admits it, and
//! the service that ends the job removes it. A removal that never happened (a crash in between)
//! only makes the set look fuller than it is, and the splitter prunes it against the job
//! records when it finds it full.

use super::{CURRENT, Versioned};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUsage {
    pub version: u32,
    /// Jobs admitted and not known to have ended, by the tenant's own ids, each with when it
    /// was admitted (seconds since the Unix epoch): a job is admitted before its record is
    /// made, so a job without a record is only taken for gone once it is old.
    pub active: BTreeMap<String, u64>,
}

impl TenantUsage {
    pub fn new() -> Self {
        Self {
            version: CURRENT,
            active: BTreeMap::new(),
        }
    }
}

impl Versioned for TenantUsage {
    fn version(&self) -> u32 {
        self.version
    }
}
