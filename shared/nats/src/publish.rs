//! Publishing with stable `Nats-Msg-Id`s and awaited server acks: a message either is stored
//! (once, however often it is republished within the duplicate window) or the caller gets an
//! error and retries; a publish that times out while the stream elects a leader is sent again
//! under the same id. Every message carries the sender's trace context (`traceparent`).
//!
//! Each function takes, beside the JetStream context, the retry policy its caller carries (a
//! service's `Ctx::retry`): how long a publish is sent again and how long each try waits.

use super::retry::{self, Policy};
use super::{BoxError, NatsError};
use async_nats::HeaderMap;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use ffleet_protocol::messages::cloudevent::CONTENT_TYPE;
use ffleet_protocol::messages::{self, JobEvent, Task};

/// Outcome of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub sequence: u64,
    /// The stream already had a message with this id: nothing new was stored.
    pub duplicate: bool,
}

/// Stores one message, retrying through a leader election or a lost server for `policy`'s
/// run-time window (`Policy::window`): every message ffleet publishes carries a `Nats-Msg-Id`,
/// so a try whose ack was lost and a later try that lands are stored once (the stream reports
/// the second as a duplicate).
async fn send(
    js: &Context,
    policy: Policy,
    subject: String,
    payload: Bytes,
    mut headers: HeaderMap,
) -> Result<Stored, NatsError> {
    ffleet_telemetry::inject(&mut headers);
    retry::retry_unless(
        policy,
        "publish",
        &subject,
        policy.window(),
        |_| {
            let msg = PublishMessage::build()
                .payload(payload.clone())
                .headers(headers.clone());
            let subject = subject.clone();
            super::ops::count(super::ops::Op::Publish);
            async move {
                let fut: PublishAckFuture = js
                    .send_publish(subject, msg)
                    .await
                    .map_err(BoxError::from)?;
                fut.await
                    .map_err(|e| BoxError::from(Ack(e)))
                    .map(|ack| Stored {
                        sequence: ack.sequence,
                        duplicate: ack.duplicate,
                    })
            }
        },
        |e: &BoxError| super::at_cap(&**e),
    )
    .await
}

/// The stream's answer to a publish was an error (or none came).
#[derive(Debug, thiserror::Error)]
#[error("ack: {0}")]
struct Ack(#[source] async_nats::jetstream::context::PublishError);

/// Publishes a job event as a structured-mode CloudEvent.
pub async fn event(
    js: &Context,
    policy: Policy,
    service: &str,
    ev: &JobEvent,
) -> Result<Stored, NatsError> {
    event_as(js, policy, service, ev, ev.message_id()).await
}

/// Publishes a job event under message id `id` instead of the event's own (a refused request's
/// `failed`, which must not take the job's terminal id).
pub async fn event_as(
    js: &Context,
    policy: Policy,
    service: &str,
    ev: &JobEvent,
    id: String,
) -> Result<Stored, NatsError> {
    let subject = ffleet_protocol::subjects::event(ev.job_id(), ev.kind());
    let mut ce = ev.to_cloudevent(service);
    ce.id = id;
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, ce.id.as_str());
    headers.insert("Content-Type", CONTENT_TYPE);
    send(js, policy, subject, messages::encode(&ce), headers).await
}

/// Publishes a task on `subject`, de-duplicated per job, unit, attempt and `stage`.
pub async fn task(
    js: &Context,
    policy: Policy,
    subject: String,
    task: &Task,
    stage: &str,
) -> Result<Stored, NatsError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        ffleet_protocol::subjects::msg_id::task(&task.job_id, task.unit, task.attempt, stage)
            .as_str(),
    );
    send(js, policy, subject, messages::encode(task), headers).await
}

/// Publishes a task to the plan queue, for the scheduler to route (a first attempt from the
/// splitter, a re-issue, a unit handed back).
pub async fn plan(js: &Context, policy: Policy, t: &Task) -> Result<Stored, NatsError> {
    task(
        js,
        policy,
        ffleet_protocol::subjects::TASKS_PLAN.into(),
        t,
        "plan",
    )
    .await
}

/// Publishes raw bytes with a message id (job submission by clients).
pub async fn raw(
    js: &Context,
    policy: Policy,
    subject: String,
    payload: Bytes,
    msg_id: &str,
) -> Result<Stored, NatsError> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    send(js, policy, subject, payload, headers).await
}
