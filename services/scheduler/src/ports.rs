//! What the failover paths (the sweep, the reconciler, re-issue) and the purge of finished jobs
//! need of the world outside the scheduler, as narrow ports: unit records, job records, node
//! heartbeats as read now, messages sent, whether a queue is idle, and purging a finished job's
//! records. The service's `Ctx` is the real implementation (NATS KV and
//! JetStream); the tests use an in-memory one (`mem`) under tokio's paused clock, the way raft-rs
//! tests its log through `Storage`/`MemStorage`. Time is tokio's clock throughout (`Pool`,
//! `Ages`, the loops' intervals), so `tokio::time::pause` drives every age and deadline.

use crate::Error;
use ffleet_runtime::messages::{Heartbeat, JobEvent, JobRecord, SegmentRecord, Task};
use ffleet_runtime::nats::kv::Change;
use ffleet_runtime::nats::ops::{self, Op};
use ffleet_runtime::nats::publish;
use ffleet_runtime::reason::Failure;
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::time::now_rfc3339;
use ffleet_runtime::unit_protocol::{self, Step};
use ffleet_runtime::{JobId, NodeId, jobs, messages, subjects};
use std::future::Future;

/// Unit records (`ffleet-segments`).
pub trait Units: Send + Sync {
    /// The record at `key` and its revision.
    fn unit(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(SegmentRecord, u64)>, Error>> + Send;

    /// Takes `step` through the unit protocol in one revision-checked update: the new record,
    /// or `None` when the protocol refused it (the record had moved on).
    fn step(
        &self,
        key: &str,
        step: &Step<'_>,
    ) -> impl Future<Output = Result<Option<SegmentRecord>, Error>> + Send;
}

/// Job records (`ffleet-jobs`) and their terminal transition.
pub trait Jobs: Send + Sync {
    fn job(&self, id: &JobId) -> impl Future<Output = Result<Option<JobRecord>, Error>> + Send;

    /// Fails the job unless it already ended (one `failed` event); whether this call did.
    fn fail(
        &self,
        id: &JobId,
        failure: &Failure,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// Encoder heartbeats (`ffleet-workers`), read directly rather than through the pool's watch.
pub trait Workers: Send + Sync {
    /// The node's key as the bucket holds it now: its revision, with the heartbeat when the
    /// entry is one (not a delete, and it decodes).
    fn heartbeat(
        &self,
        node: &NodeId,
    ) -> impl Future<Output = Result<Option<(u64, Option<Heartbeat>)>, Error>> + Send;
}

/// Messages the failover paths send.
pub trait Outbox: Send + Sync {
    /// A task to the plan queue, to be routed like any other.
    fn plan(&self, task: &Task) -> impl Future<Output = Result<(), Error>> + Send;

    /// An event under the message id `id`.
    fn event(&self, ev: &JobEvent, id: String) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Queue depths.
pub trait Queues: Send + Sync {
    /// Whether consumer `consumer` of stream `stream` has nothing waiting and nothing in hand;
    /// `false` when that cannot be told (no such consumer yet, broker unreachable).
    fn idle(&self, stream: &str, consumer: &str) -> impl Future<Output = bool> + Send;
}

/// What a finished job leaves in the record buckets.
pub trait Records: Send + Sync {
    /// Removes the job's unit records (every revision) and its job record's revisions but the
    /// last: one purge by subject in each bucket, however many units the job had.
    fn purge_finished(&self, job: &JobId) -> impl Future<Output = Result<(), Error>> + Send;
}

impl Units for Ctx {
    async fn unit(&self, key: &str) -> Result<Option<(SegmentRecord, u64)>, Error> {
        Ok(self.segments.get(key).await?)
    }

    async fn step(&self, key: &str, step: &Step<'_>) -> Result<Option<SegmentRecord>, Error> {
        Ok(self
            .segments
            .modify(key, |rec| {
                match unit_protocol::apply(rec, step, &now_rfc3339()) {
                    Ok((n, _)) => Change::Write(n.clone(), Some(n)),
                    Err(_) => Change::Keep(None),
                }
            })
            .await?)
    }
}

impl Jobs for Ctx {
    async fn job(&self, id: &JobId) -> Result<Option<JobRecord>, Error> {
        Ok(self.jobs.get(id.as_str()).await?.map(|(j, _)| j))
    }

    async fn fail(&self, id: &JobId, failure: &Failure) -> Result<bool, Error> {
        Ok(jobs::fail(self, id, failure).await?)
    }
}

impl Workers for Ctx {
    async fn heartbeat(&self, node: &NodeId) -> Result<Option<(u64, Option<Heartbeat>)>, Error> {
        use async_nats::jetstream::kv::Operation;
        let entry = self.workers.store().entry(node.as_str()).await?;
        Ok(entry.map(|e| {
            let hb = (e.operation == Operation::Put)
                .then(|| messages::decode("heartbeat", &e.value).ok())
                .flatten();
            (e.revision, hb)
        }))
    }
}

impl Outbox for Ctx {
    async fn plan(&self, task: &Task) -> Result<(), Error> {
        publish::plan(&self.js, self.retry, task).await?;
        Ok(())
    }

    async fn event(&self, ev: &JobEvent, id: String) -> Result<(), Error> {
        publish::event_as(&self.js, self.retry, self.service, ev, id).await?;
        Ok(())
    }
}

impl Queues for Ctx {
    async fn idle(&self, stream: &str, consumer: &str) -> bool {
        match self.js.get_stream(stream).await {
            Ok(s) => match s.consumer_info(consumer).await {
                Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
                Err(_) => false,
            },
            Err(_) => false,
        }
    }
}

impl Records for Ctx {
    async fn purge_finished(&self, job: &JobId) -> Result<(), Error> {
        // One try each, bounded: a purge is tidying, so it never waits out an election in the
        // retry loop (which would mark this scheduler as waiting for JetStream) and a refusal
        // (a secured fleet whose credentials predate the grant) is reported at once.
        let limit = self.retry.try_timeout(0);
        let units = self.segments.store();
        let filter = subjects::kv_key(&units.name, &subjects::segment_keys_of(job));
        ops::count(Op::Api);
        purge_once(limit, &filter, units.stream.purge().filter(filter.clone())).await?;
        let jobs = self.jobs.store();
        let filter = subjects::kv_key(&jobs.name, job.as_str());
        ops::count(Op::Api);
        purge_once(
            limit,
            &filter,
            jobs.stream.purge().filter(filter.clone()).keep(1),
        )
        .await?;
        Ok(())
    }
}

/// One purge request, answered within `limit`.
async fn purge_once<P>(limit: std::time::Duration, filter: &str, purge: P) -> Result<(), Error>
where
    P: std::future::IntoFuture<
            Output = Result<
                async_nats::jetstream::stream::PurgeResponse,
                async_nats::jetstream::stream::PurgeError,
            >,
        >,
{
    match tokio::time::timeout(limit, purge.into_future()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Purge(format!("{filter}: {e}"))),
        Err(_) => Err(Error::Purge(format!(
            "{filter}: no answer within {limit:?}"
        ))),
    }
}
