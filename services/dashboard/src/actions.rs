//! What the page's buttons ask the fleet, with the operator's connection (never the viewer's):
//! a cancel or retry request to the services that answer them, a drain or undrain to the node
//! itself. Each is the same request the CLI sends; the answer is checked, and any refusal is
//! shown to the operator as it came.

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use ffleet_runtime::messages::{
    self, JobStatus, NodeAction, NodeControl, NodeState, StatusRequest,
};
use ffleet_runtime::{JobId, NodeId, subjects};
use std::time::Duration;

/// How long an answer is waited for.
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

/// A job action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Cancel,
    Retry,
}

impl JobAction {
    pub fn parse(s: &str) -> Option<JobAction> {
        match s {
            "cancel" => Some(JobAction::Cancel),
            "retry" => Some(JobAction::Retry),
            _ => None,
        }
    }
}

/// Why an action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no answer within {} s", ANSWER_WITHIN.as_secs())]
    Timeout,
    #[error("nothing answers: is the fleet running? ({0})")]
    Request(#[from] async_nats::RequestError),
    #[error("refused ({code}): {message}")]
    Refused { code: String, message: String },
    #[error("unreadable answer: {0}")]
    Answer(String),
}

async fn request(
    client: &async_nats::Client,
    subject: String,
    body: bytes::Bytes,
) -> Result<async_nats::Message, ActionError> {
    let reply = tokio::time::timeout(ANSWER_WITHIN, client.request(subject, body))
        .await
        .map_err(|_| ActionError::Timeout)??;
    let headers = reply.headers.as_ref();
    if let Some(code) = headers.and_then(|h| h.get(NATS_SERVICE_ERROR_CODE)) {
        return Err(ActionError::Refused {
            code: code.as_str().to_owned(),
            message: headers
                .and_then(|h| h.get(NATS_SERVICE_ERROR))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
        });
    }
    Ok(reply)
}

/// Cancels or retries `job` (a tenant's on its tenant's subject): the job's status after it.
pub async fn job(
    client: &async_nats::Client,
    job: &JobId,
    action: JobAction,
) -> Result<JobStatus, ActionError> {
    let subject = match (action, job.tenant()) {
        (JobAction::Cancel, Some(t)) => subjects::api_cancel_tenant(&t),
        (JobAction::Cancel, None) => subjects::API_CANCEL.to_owned(),
        (JobAction::Retry, Some(t)) => subjects::api_retry_tenant(&t),
        (JobAction::Retry, None) => subjects::API_RETRY.to_owned(),
    };
    let asked = JobId::plain(job.local()).map_err(|e| ActionError::Answer(e.to_string()))?;
    let body = messages::encode(&StatusRequest::new(asked));
    let reply = request(client, subject, body).await?;
    messages::decode("job status", &reply.payload).map_err(|e| ActionError::Answer(e.to_string()))
}

/// Drains or undrains node `node`: how it stands after.
pub async fn node(
    client: &async_nats::Client,
    node: &NodeId,
    action: NodeAction,
) -> Result<NodeState, ActionError> {
    let body = messages::encode(&NodeControl::new(action));
    let reply = request(client, subjects::node_control(node), body).await?;
    let st: NodeState = messages::decode("node state", &reply.payload)
        .map_err(|e| ActionError::Answer(e.to_string()))?;
    match st.error {
        Some(e) => Err(ActionError::Refused {
            code: "node".into(),
            message: e,
        }),
        None => Ok(st),
    }
}
