//! The scheduler's view of unfinished jobs, kept from a watch on the jobs bucket, so the
//! reconciler walks only live work instead of listing every job ever run.

use ffleet_runtime::JobId;
use ffleet_runtime::messages::{self, JobRecord};
use ffleet_runtime::nats::NatsError;
use ffleet_runtime::nats::kv::{self, Typed};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Default)]
pub struct JobsView {
    active: Arc<Mutex<HashMap<JobId, JobRecord>>>,
}

impl JobsView {
    pub async fn watch(
        jobs: Typed<JobRecord>,
        shutdown: CancellationToken,
    ) -> Result<JobsView, NatsError> {
        let view = JobsView::default();
        let v = view.clone();
        let policy = jobs.policy();
        kv::follow(jobs.store(), policy, shutdown, "jobs", None, move |e| {
            v.apply(e)
        })
        .await?;
        Ok(view)
    }

    fn apply(&self, e: &async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        let Ok(id) = JobId::new(e.key.as_str()) else {
            return;
        };
        let rec = match e.operation {
            Operation::Put => messages::decode::<JobRecord>("job record", &e.value).ok(),
            Operation::Delete | Operation::Purge => None,
        };
        self.record(id, rec);
    }

    /// The job's record as it now is (`None`: deleted or unreadable).
    pub fn record(&self, id: JobId, rec: Option<JobRecord>) {
        let mut map = self.active.lock().expect("jobs lock");
        match rec {
            Some(r) if !r.state.is_terminal() => {
                map.insert(id, r);
            }
            _ => {
                map.remove(&id);
            }
        }
    }

    /// Unfinished jobs as last seen.
    pub fn active(&self) -> Vec<JobRecord> {
        self.active
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, job: &JobId) -> Option<JobRecord> {
        self.active.lock().expect("jobs lock").get(job).cloned()
    }
}
