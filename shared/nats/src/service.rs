//! ffleet's request endpoints on the NATS service API (`$SRV`, ADR-32): the service instance
//! each answering process registers (`start`), and the error answers they send (`error`).
//! Every instance is of one service, `subjects::service_api::NAME`: the schedulers' with the
//! status endpoints, the mergers' with the cancel endpoints.

use crate::NatsError;
use async_nats::service::{self, ServiceExt};

/// Answers `req` with what `answer` gives within `within`, or, when it takes longer, with a
/// `503` saying what did not happen in time (`late`, e.g. "job records not read"): the asker
/// asks again later instead of requests piling up.
pub async fn answer_within<T: serde::Serialize>(
    req: service::Request,
    within: std::time::Duration,
    late: &str,
    answer: impl std::future::Future<Output = Result<T, service::error::Error>>,
) {
    let response = match tokio::time::timeout(within, answer).await {
        Ok(answer) => answer.map(|s| ffleet_protocol::messages::encode(&s)),
        Err(_) => {
            tracing::warn!(late, subject = %req.message.subject, "request not answered in time");
            Err(error(
                ffleet_protocol::messages::status::ERROR_UNAVAILABLE,
                format!("{late} within {} s, ask again", within.as_secs()),
            ))
        }
    };
    if let Err(e) = req.respond(response).await {
        tracing::debug!(error = %e, "answer not sent");
    }
}

/// One endpoint of the service: its name and the subject it answers on.
pub struct Endpoint<'a> {
    pub name: &'a str,
    pub subject: &'a str,
}

/// Requests of a job action answered at once by one replica; more wait in the subscription.
const ACTION_IN_FLIGHT: usize = 16;

/// Registers this process as an instance of ffleet's service (`about`) with a job action's
/// endpoints (the plain one and the one every tenant's subject reaches), and answers their
/// requests with `answer` until `shutdown` fires; the returned task ends once the service is
/// stopped. What the mergers' cancel and the splitters' retry run.
pub async fn serve_job_action<F, Fut>(
    client: &async_nats::Client,
    about: &str,
    endpoints: [Endpoint<'_>; 2],
    shutdown: tokio_util::sync::CancellationToken,
    answer: F,
) -> Result<tokio::task::JoinHandle<()>, NatsError>
where
    F: Fn(service::Request) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use futures::StreamExt;
    let service = start(client, about).await?;
    let [plain, tenants] = endpoints;
    let mut added = Vec::with_capacity(2);
    for e in [&plain, &tenants] {
        let endpoint = service
            .endpoint_builder()
            .name(e.name)
            .add(e.subject)
            .await
            .map_err(|err| NatsError::op("service endpoint", err))?;
        added.push(endpoint);
    }
    tracing::info!(subject = plain.subject, about, "service endpoints running");
    Ok(tokio::spawn(async move {
        futures::stream::select_all(added)
            .take_until(shutdown.cancelled_owned())
            .for_each_concurrent(ACTION_IN_FLIGHT, answer)
            .await;
        let _ = service.stop().await;
    }))
}

/// Longest error text sent: it travels in a header.
const MAX_ERROR_CHARS: usize = 300;

/// Registers this process as an instance of ffleet's service, described by `about`.
pub async fn start(
    client: &async_nats::Client,
    about: &str,
) -> Result<service::Service, NatsError> {
    client
        .service_builder()
        .description(format!("ffleet: chunked FFmpeg transcoding; {about}"))
        .start(
            ffleet_protocol::subjects::service_api::NAME,
            env!("CARGO_PKG_VERSION"),
        )
        .await
        .map_err(|e| NatsError::op("service", e))
}

/// A service error. Its text goes out as a header value, which may not hold a line break
/// (async-nats panics on one), and it can quote the request (serde names an unknown field as
/// sent): control characters become spaces, and the text is cut short.
pub fn error(code: u16, status: String) -> service::error::Error {
    service::error::Error {
        status: status
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(MAX_ERROR_CHARS)
            .collect(),
        code: usize::from(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_quoting_a_request_stay_one_short_header_line() {
        let text = format!("unknown field `a\r\nNats-Evil: 1{}`", "x".repeat(500));
        let sent = error(400, text);
        assert!(!sent.status.contains(['\r', '\n']), "{}", sent.status);
        assert!(sent.status.chars().count() <= MAX_ERROR_CHARS);
        assert_eq!(sent.code, 400);
        // What the header would hold is accepted by async-nats.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Service-Error", sent.status.as_str());
    }
}
