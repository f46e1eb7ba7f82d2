//! Each tenant's jobs in flight (`TenantUsage` in bucket `ffleet-tenants`): the splitter admits
//! a tenant's job against its quota here, and the service that ends the job lets it go. Only
//! tenants' jobs are counted; a plain job passes through untouched.

use crate::messages::TenantUsage;
use crate::nats::kv::{Change, KvError};
use crate::runtime::Ctx;
use crate::{JobId, Tenant};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long an admitted job may go without a record before a prune takes it for gone: the
/// splitter writes the record right after admitting, retrying for minutes when JetStream is
/// unavailable.
pub const RECORD_GRACE: Duration = Duration::from_secs(900);

/// Job records a prune reads at once.
const PRUNE_READS: usize = 16;

/// Whether a job was admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The tenant has these jobs in flight already (with when each was admitted), its
    /// quota's worth.
    Full {
        active: BTreeMap<String, u64>,
    },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Admits `job` (a tenant's) when its tenant has fewer than `max` jobs in flight, or when it
/// is in flight already (a redelivered request). `max == 0`: no limit, nothing recorded.
pub async fn admit(
    ctx: &Ctx,
    tenant: &Tenant,
    job: &JobId,
    max: u32,
) -> Result<Admission, KvError> {
    if max == 0 {
        return Ok(Admission::Admitted);
    }
    let id = job.local().to_owned();
    let now = now_secs();
    ctx.tenants
        .modify(tenant.as_str(), |usage| {
            let mut u = usage.cloned().unwrap_or_else(TenantUsage::new);
            if u.active.contains_key(&id) {
                return Change::Keep(Admission::Admitted);
            }
            if u.active.len() >= max as usize {
                return Change::Keep(Admission::Full {
                    active: u.active.clone(),
                });
            }
            u.active.insert(id.clone(), now);
            Change::Write(u, Admission::Admitted)
        })
        .await
}

/// Removes from `tenant`'s jobs in flight those that have ended, and those with no record
/// `RECORD_GRACE` after they were admitted: what a service that ended a job, or a request that
/// never got its record, left behind (a crash in between). Reads one record per job listed;
/// returns how many were removed.
pub async fn prune(ctx: &Ctx, tenant: &Tenant) -> Result<usize, KvError> {
    let Some((usage, _)) = ctx.tenants.get(tenant.as_str()).await? else {
        return Ok(0);
    };
    let now = now_secs();
    // Owned per read: the futures outlive no borrow (the splitter's handler must stay `Send`
    // for any lifetime).
    let reads = usage.active.into_iter().map(|(id, admitted)| {
        let (jobs, tenant) = (ctx.jobs.clone(), tenant.clone());
        async move {
            let Ok(plain) = JobId::plain(id.as_str()) else {
                return Ok(Some((id, admitted)));
            };
            let job = JobId::scoped(&tenant, &plain);
            Ok(match jobs.get(job.as_str()).await? {
                Some((rec, _)) if !rec.state.is_terminal() => None,
                Some(_) => Some((id, admitted)),
                None if now.saturating_sub(admitted) >= RECORD_GRACE.as_secs() => {
                    Some((id, admitted))
                }
                None => None,
            })
        }
    });
    let verdicts: Vec<Result<Option<(String, u64)>, KvError>> = futures::stream::iter(reads)
        .buffer_unordered(PRUNE_READS)
        .collect()
        .await;
    let mut gone = Vec::new();
    for v in verdicts {
        gone.extend(v?);
    }
    if gone.is_empty() {
        return Ok(0);
    }
    let n = gone.len();
    // Only the admissions judged: a job admitted again meanwhile has another time, and stays.
    forget(ctx, tenant, |id, at| {
        gone.iter().any(|(g, t)| g == id && *t == at)
    })
    .await?;
    tracing::info!(tenant = %tenant, removed = n, "ended jobs pruned from a tenant's jobs in flight");
    Ok(n)
}

/// Lets `job` go from its tenant's jobs in flight once it has ended (a plain job: nothing to
/// do). A failure is logged, not returned: the job has ended either way, and the splitter
/// prunes what was left when the tenant's quota looks full.
pub async fn release(ctx: &Ctx, job: &JobId) {
    let Some(tenant) = job.tenant() else {
        return;
    };
    if let Err(e) = forget(ctx, &tenant, |id, _| id == job.local()).await {
        tracing::warn!(job = %job, error = %e, "ended job not removed from its tenant's jobs in flight; pruned later");
    }
}

/// Removes the jobs in flight `gone` picks (by id and admission time) in one revision-checked
/// write, judged again on each try: a job admitted again meanwhile is judged as it now is.
async fn forget(
    ctx: &Ctx,
    tenant: &Tenant,
    gone: impl Fn(&str, u64) -> bool,
) -> Result<(), KvError> {
    ctx.tenants
        .modify(tenant.as_str(), |usage| match usage {
            Some(u) if u.active.iter().any(|(id, at)| gone(id, *at)) => {
                let mut u = u.clone();
                u.active.retain(|id, at| !gone(id, *at));
                Change::Write(u, ())
            }
            _ => Change::Keep(()),
        })
        .await
}
