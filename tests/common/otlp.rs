//! An OTLP receiver in the test process, speaking both transports on one port as a collector
//! does on its two: OTLP/gRPC (the three export services over the opentelemetry-proto crate's
//! tonic types) and OTLP/HTTP with protobuf bodies (`POST /v1/traces`, `/v1/metrics`,
//! `/v1/logs`, decoded with prost). It keeps everything it receives, and which transport brought
//! each signal, for the test to inspect.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::{Request, Response, Status};

/// The transport names the receiver records, as `OTEL_EXPORTER_OTLP_PROTOCOL` spells them.
pub const GRPC: &str = "grpc";
pub const HTTP_PROTOBUF: &str = "http/protobuf";

/// One received span with its resource's `service.name` and its attributes as strings.
#[derive(Debug, Clone)]
pub struct RSpan {
    pub service_name: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attrs: BTreeMap<String, String>,
    /// 2 = error.
    pub status_code: i32,
}

impl RSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

/// One received log record.
#[derive(Debug, Clone)]
pub struct RLog {
    pub service_name: String,
    pub body: String,
    pub trace_id: String,
    pub span_id: String,
}

#[derive(Default)]
struct Store {
    spans: Vec<RSpan>,
    logs: Vec<RLog>,
    /// Metric name → resource `service.name`s it came from.
    metrics: BTreeMap<String, Vec<String>>,
    /// (signal, transport) pairs seen: `("traces", "grpc")`, ...
    transports: BTreeSet<(&'static str, &'static str)>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Store>>);

pub struct Receiver {
    pub endpoint: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn service_name(resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .as_ref()
        .and_then(|r| attrs(&r.attributes).remove("service.name"))
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Shared {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces(req.into_inner(), GRPC);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Shared {
    fn traces(&self, req: ExportTraceServiceRequest, transport: &'static str) {
        let mut store = self.0.lock().unwrap();
        store.transports.insert(("traces", transport));
        for rs in req.resource_spans {
            let svc = service_name(&rs.resource);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    store.spans.push(span(&svc, s));
                }
            }
        }
    }

    fn metrics(&self, req: ExportMetricsServiceRequest, transport: &'static str) {
        let mut store = self.0.lock().unwrap();
        store.transports.insert(("metrics", transport));
        for rm in req.resource_metrics {
            let svc = service_name(&rm.resource);
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    store.metrics.entry(m.name).or_default().push(svc.clone());
                }
            }
        }
    }

    fn logs(&self, req: ExportLogsServiceRequest, transport: &'static str) {
        let mut store = self.0.lock().unwrap();
        store.transports.insert(("logs", transport));
        for rl in req.resource_logs {
            let svc = service_name(&rl.resource);
            for sl in rl.scope_logs {
                for l in sl.log_records {
                    store.logs.push(log(&svc, l));
                }
            }
        }
    }

    /// One OTLP/HTTP request: the HTTP status to answer.
    fn http_export(&self, path: &str, body: &[u8]) -> http::StatusCode {
        let decoded = match path {
            "/v1/traces" => {
                ExportTraceServiceRequest::decode(body).map(|r| self.traces(r, HTTP_PROTOBUF))
            }
            "/v1/metrics" => {
                ExportMetricsServiceRequest::decode(body).map(|r| self.metrics(r, HTTP_PROTOBUF))
            }
            "/v1/logs" => {
                ExportLogsServiceRequest::decode(body).map(|r| self.logs(r, HTTP_PROTOBUF))
            }
            _ => return http::StatusCode::NOT_FOUND,
        };
        match decoded {
            Ok(()) => http::StatusCode::OK,
            Err(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// OTLP/HTTP beside gRPC on the receiver's port: tonic's router sends `/v1/*` here (it routes by
/// a service's name), and the server accepts HTTP/1.1 as well as HTTP/2.
#[derive(Clone)]
struct Http(Shared);

impl tonic::server::NamedService for Http {
    const NAME: &'static str = "v1";
}

impl Service<http::Request<tonic::body::Body>> for Http {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let post = req.method() == http::Method::POST;
            let path = req.uri().path().to_owned();
            let status = match http_body_util::BodyExt::collect(req.into_body()).await {
                Ok(body) if post => shared.http_export(&path, &body.to_bytes()),
                Ok(_) => http::StatusCode::METHOD_NOT_ALLOWED,
                Err(_) => http::StatusCode::BAD_REQUEST,
            };
            let mut resp = http::Response::new(tonic::body::Body::empty());
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok(resp)
        })
    }
}

fn span(svc: &str, s: Span) -> RSpan {
    RSpan {
        service_name: svc.to_owned(),
        name: s.name,
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent_span_id: hex(&s.parent_span_id),
        attrs: attrs(&s.attributes),
        status_code: s.status.map_or(0, |st| st.code),
    }
}

#[tonic::async_trait]
impl MetricsService for Shared {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics(req.into_inner(), GRPC);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Shared {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.logs(req.into_inner(), GRPC);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

fn log(svc: &str, l: LogRecord) -> RLog {
    RLog {
        service_name: svc.to_owned(),
        body: text(&l.body),
        trace_id: hex(&l.trace_id),
        span_id: hex(&l.span_id),
    }
}

impl Receiver {
    /// Listens on a free loopback port until dropped, for both transports. `endpoint` is the
    /// base URL (`http://127.0.0.1:PORT`): gRPC uses it as it is, OTLP/HTTP appends `/v1/...`.
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Shared::default();
        let svc = shared.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_service(Http(svc.clone()))
                .add_service(TraceServiceServer::new(svc.clone()))
                .add_service(MetricsServiceServer::new(svc.clone()))
                .add_service(LogsServiceServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Ok(Receiver {
            endpoint,
            shared,
            server,
        })
    }

    pub fn spans(&self) -> Vec<RSpan> {
        self.shared.0.lock().unwrap().spans.clone()
    }

    pub fn logs(&self) -> Vec<RLog> {
        self.shared.0.lock().unwrap().logs.clone()
    }

    /// The (signal, transport) pairs received so far, e.g. `("traces", GRPC)`.
    pub fn transports(&self) -> BTreeSet<(&'static str, &'static str)> {
        self.shared.0.lock().unwrap().transports.clone()
    }

    /// Metric names received, each with the services that sent it.
    pub fn metrics(&self) -> BTreeMap<String, Vec<String>> {
        self.shared.0.lock().unwrap().metrics.clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
