//! A tenant's quota of jobs in flight, held when its request arrives: admitted, or refused with
//! `quota_exceeded` before any record is made. A quota that looks full is checked against the
//! job records first (a service that ended a job may have died before letting it go), at most
//! once per `PRUNE_EVERY` per tenant, so a tenant at its quota cannot make every refused request
//! cost a read of each of its jobs.

use ffleet_runtime::nats::kv::KvError;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::tenants::{self, Admission};
use ffleet_runtime::{JobId, Tenant};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two prunes of one tenant's jobs in flight by one splitter.
const PRUNE_EVERY: Duration = Duration::from_secs(2);

/// When each tenant's jobs in flight were last pruned here, and what they were then.
#[derive(Default)]
pub struct Prunes(Mutex<HashMap<Tenant, Pruned>>);

/// One prune: when, and the jobs in flight it looked at (with when each was admitted).
type Pruned = (Instant, BTreeMap<String, u64>);

impl Prunes {
    /// Whether `tenant`'s jobs in flight, now `active`, may be pruned (and if so, notes that they
    /// are): a set not checked yet may, the same set again only after `PRUNE_EVERY`.
    fn due(&self, tenant: &Tenant, active: &BTreeMap<String, u64>) -> bool {
        let mut last = self.0.lock().expect("prunes lock");
        let now = Instant::now();
        match last.get(tenant) {
            Some((t, seen)) if seen == active && now.duration_since(*t) < PRUNE_EVERY => false,
            _ => {
                last.insert(tenant.clone(), (now, active.clone()));
                true
            }
        }
    }
}

/// Admits `job` of `tenant` against `max` jobs in flight (0: no limit). `Ok(Some(failure))`: the
/// request is refused.
pub async fn admit(
    ctx: &Ctx,
    prunes: &Prunes,
    tenant: &Tenant,
    job: &JobId,
    max: u32,
) -> Result<Option<Failure>, KvError> {
    let mut admission = tenants::admit(ctx, tenant, job, max).await?;
    if let Admission::Full { .. } = &admission
        && ctx.jobs.get(job.as_str()).await?.is_some()
    {
        // A request for a job that exists (a redelivery, a duplicate): it is not new work, and
        // the split goes on to resume it, repair its end, or answer `duplicate_job`.
        return Ok(None);
    }
    if let Admission::Full { active } = &admission
        && prunes.due(tenant, active)
    {
        // A prune that fails leaves the quota as it looked: full.
        match tenants::prune(ctx, tenant).await {
            Ok(0) => {}
            Ok(_) => admission = tenants::admit(ctx, tenant, job, max).await?,
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "tenant's jobs in flight not pruned");
            }
        }
    }
    Ok(match admission {
        Admission::Admitted => None,
        Admission::Full { active } => {
            let active = active.len();
            tracing::info!(tenant = %tenant, job = %job, active, max, "tenant at its quota of jobs in flight; request refused");
            Some(Failure::new(
                Reason::QuotaExceeded,
                format!(
                    "tenant {tenant} has {active} jobs in flight, its quota \
                     (splitter.tenants.{tenant}.max_active_jobs = {max}); submit again once one \
                     has ended"
                ),
            ))
        }
    })
}
