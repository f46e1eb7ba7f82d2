//! An OTLP/gRPC receiver in the test process: the collector's three export services (traces,
//! metrics, logs) over the opentelemetry-proto crate's tonic types, keeping everything it receives
//! for the test to inspect.

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
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

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
        let mut store = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let svc = service_name(&rs.resource);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    store.spans.push(span(&svc, s));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
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
        let mut store = self.0.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            let svc = service_name(&rm.resource);
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    store.metrics.entry(m.name).or_default().push(svc.clone());
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Shared {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let mut store = self.0.lock().unwrap();
        for rl in req.into_inner().resource_logs {
            let svc = service_name(&rl.resource);
            for sl in rl.scope_logs {
                for l in sl.log_records {
                    store.logs.push(log(&svc, l));
                }
            }
        }
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
    /// Listens on a free loopback port until dropped.
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let shared = Shared::default();
        let svc = shared.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
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
