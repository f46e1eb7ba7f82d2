//! Where and how each signal is exported, read from the standard `OTEL_*` variables as the
//! OpenTelemetry specification says: a signal's own variable wins over the generic one, and the
//! protocol defaults to `http/protobuf`. Endpoints themselves are resolved by opentelemetry-otlp
//! (for HTTP the generic endpoint gets `/v1/traces` etc. appended, a per-signal one is used as
//! is); this module only decides whether a signal is exported, over which transport, and which
//! address the exit-time reachability probe should try.

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub(super) const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }
}

/// The transports this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// `grpc`: OTLP/gRPC (conventionally port 4317).
    Grpc,
    /// `http/protobuf`: OTLP/HTTP with binary protobuf bodies (conventionally port 4318).
    HttpProtobuf,
}

/// How one signal is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SignalExport {
    pub(super) signal: Signal,
    pub(super) transport: Transport,
    /// The endpoint variable's value (the signal's own, else the generic one): the collector's
    /// host and port, for the reachability probe.
    pub(super) endpoint: String,
}

/// The resolved configuration: one entry per exported signal, and the problems found, each a
/// complete sentence for stderr (logging is not up yet when this is read).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct OtlpConfig {
    pub(super) signals: Vec<SignalExport>,
    pub(super) warnings: Vec<String>,
}

impl OtlpConfig {
    pub(super) fn get(&self, signal: Signal) -> Option<&SignalExport> {
        self.signals.iter().find(|s| s.signal == signal)
    }

    /// Reads the process environment.
    pub(super) fn from_env() -> OtlpConfig {
        Self::resolve(|name| std::env::var(name).ok())
    }

    /// Resolves from `lookup` (a variable's value, if set). Empty values count as unset, as the
    /// specification asks. A signal is exported when an endpoint is set for it (own or generic)
    /// and `OTEL_SDK_DISABLED` is not `true`.
    pub(super) fn resolve(lookup: impl Fn(&str) -> Option<String>) -> OtlpConfig {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut cfg = OtlpConfig::default();
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return cfg;
        }
        for signal in Signal::ALL {
            let own_endpoint = format!("OTEL_EXPORTER_OTLP_{}_ENDPOINT", signal.upper());
            let Some(endpoint) = var(&own_endpoint).or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            else {
                continue;
            };
            let own_protocol = format!("OTEL_EXPORTER_OTLP_{}_PROTOCOL", signal.upper());
            let transport = [own_protocol.as_str(), "OTEL_EXPORTER_OTLP_PROTOCOL"]
                .into_iter()
                .find_map(|name| Some((name, var(name)?)))
                .map_or(Transport::HttpProtobuf, |(name, value)| {
                    parse_protocol(name, &value, &mut cfg.warnings)
                });
            if endpoint.trim().to_ascii_lowercase().starts_with("https:") {
                cfg.warnings.push(format!(
                    "ffleet: {} not exported: {endpoint} needs TLS, which this build does not \
                     include; send to a local collector over http:// instead",
                    signal.upper().to_ascii_lowercase()
                ));
                continue;
            }
            cfg.signals.push(SignalExport {
                signal,
                transport,
                endpoint,
            });
        }
        cfg
    }
}

/// One protocol value. Unknown values are reported and ignored, falling back to the default, as
/// the specification asks of enum-valued variables; so is `http/json`, which this build does not
/// include: OTLP/HTTP receivers take protobuf on the same paths, so the data still arrives.
fn parse_protocol(name: &str, value: &str, warnings: &mut Vec<String>) -> Transport {
    match value.trim().to_ascii_lowercase().as_str() {
        "grpc" => Transport::Grpc,
        "http/protobuf" => Transport::HttpProtobuf,
        "http/json" => {
            let w = format!(
                "ffleet: {name}=http/json is not supported by this build; sending http/protobuf \
                 to the same endpoint"
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            Transport::HttpProtobuf
        }
        _ => {
            let w = format!(
                "ffleet: {name}={value:?} is not an OTLP protocol (grpc, http/protobuf); using \
                 http/protobuf"
            );
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            Transport::HttpProtobuf
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&str, &str)]) -> OtlpConfig {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpConfig::resolve(|name| vars.get(name).cloned())
    }

    fn transports(cfg: &OtlpConfig) -> Vec<(Signal, Transport)> {
        cfg.signals
            .iter()
            .map(|s| (s.signal, s.transport))
            .collect()
    }

    #[test]
    fn no_endpoint_no_export() {
        assert_eq!(resolve(&[]), OtlpConfig::default());
        assert_eq!(
            resolve(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            OtlpConfig::default()
        );
        assert_eq!(
            resolve(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ]),
            OtlpConfig::default()
        );
    }

    #[test]
    fn the_default_protocol_is_http_protobuf() {
        let cfg = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert!(cfg.warnings.is_empty());
        assert_eq!(
            transports(&cfg),
            Signal::ALL.map(|s| (s, Transport::HttpProtobuf))
        );
        assert!(cfg.signals.iter().all(|s| s.endpoint == "http://c:4318"));
    }

    #[test]
    fn a_signal_variable_wins_over_the_generic_one() {
        let cfg = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://l:4318/v1/logs"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", ""),
        ]);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        assert_eq!(
            transports(&cfg),
            [
                (Signal::Traces, Transport::Grpc),
                (Signal::Metrics, Transport::Grpc),
                (Signal::Logs, Transport::HttpProtobuf),
            ]
        );
        assert_eq!(
            cfg.get(Signal::Logs).unwrap().endpoint,
            "http://l:4318/v1/logs"
        );
    }

    #[test]
    fn only_signals_with_an_endpoint_are_exported() {
        let cfg = resolve(&[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "GRPC"),
        ]);
        assert_eq!(transports(&cfg), [(Signal::Traces, Transport::Grpc)]);
        assert!(cfg.get(Signal::Logs).is_none());
    }

    #[test]
    fn unknown_protocols_are_reported_once_and_fall_back_to_the_default() {
        let cfg = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grcp"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
        ]);
        assert_eq!(
            transports(&cfg),
            [
                (Signal::Traces, Transport::Grpc),
                (Signal::Metrics, Transport::HttpProtobuf),
                (Signal::Logs, Transport::HttpProtobuf),
            ]
        );
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grcp\""));

        let cfg = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        assert_eq!(
            transports(&cfg),
            Signal::ALL.map(|s| (s, Transport::HttpProtobuf))
        );
        assert!(cfg.warnings[0].contains("http/json is not supported"));
    }

    #[test]
    fn https_endpoints_are_refused_with_a_reason() {
        let cfg = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t/v1/traces"),
        ]);
        assert!(cfg.get(Signal::Traces).is_none());
        assert!(cfg.get(Signal::Logs).is_some());
        assert!(cfg.warnings[0].contains("traces not exported"));
    }
}
