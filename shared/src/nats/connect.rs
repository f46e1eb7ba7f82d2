//! Connecting the way the nats CLI does: one URL or a comma-separated list (cluster seeds; the
//! members the servers advertise are used too unless `nats.discover_servers = false`),
//! credentials file, user/password or token, optional required TLS. A connection whose server
//! died unannounced is noticed by pings within seconds, then moved to another server.

use super::NatsError;
use crate::config::NatsConfig;
use async_nats::{ConnectOptions, ServerAddr};
use std::time::Duration;

const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Connects a client named `name`. With `wait`, the first connection is retried until the server
/// is up (services started beside it); without, an unreachable server is an error at once (CLI).
pub async fn connect(
    cfg: &NatsConfig,
    name: &str,
    wait: bool,
) -> Result<async_nats::Client, NatsError> {
    let addrs: Vec<ServerAddr> = cfg
        .url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ServerAddr>().map_err(|e| NatsError::Connect {
                url: s.into(),
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(NatsError::Connect {
            url: cfg.url.clone(),
            message: "no server URL given".into(),
        });
    }
    let mut opts = match &cfg.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NatsError::Connect {
                url: cfg.url.clone(),
                message: format!("credentials file {}: {e}", path.display()),
            })?,
        None => ConnectOptions::new(),
    };
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &cfg.token {
        opts = opts.token(t.clone());
    }
    if cfg.tls_required {
        opts = opts.require_tls(true);
    }
    if let Some(ca) = &cfg.tls_ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert_file, &cfg.tls_key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if !cfg.discover_servers {
        opts = opts.ignore_discovered_servers();
    }
    let service = name.to_owned();
    opts = opts
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        // Two unanswered pings close the connection: a half-open one is dropped in ~20 s
        // instead of the default two minutes.
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .event_callback(move |ev| {
            let service = service.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => tracing::info!(%service, "nats connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!(%service, "nats disconnected, reconnecting")
                    }
                    other => tracing::debug!(%service, event = %other, "nats event"),
                }
            }
        });
    if wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(addrs).await.map_err(|e| NatsError::Connect {
        url: cfg.url.clone(),
        message: e.to_string(),
    })
}

/// A JetStream context with the configured API timeout.
pub fn jetstream(client: async_nats::Client, cfg: &NatsConfig) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs_f64(cfg.request_timeout_secs))
        .build(client)
}
