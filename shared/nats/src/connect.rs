//! Connecting the way the nats CLI does: one URL or a comma-separated list (cluster seeds; the
//! members the servers advertise are used too unless `nats.discover_servers = false`),
//! credentials file, nkey seed (file or `FFLEET_NATS_NKEY_SEED`), user/password or token,
//! optional required TLS (`tls://` URLs require it too) with a private CA and a client
//! certificate. A connection whose server died unannounced is noticed by pings within seconds,
//! then moved to another server. Every error the server reports (a permission violation above
//! all: something this role was refused) is logged at warn and counted.

use super::NatsError;
use crate::config::NatsConfig;
use async_nats::{ConnectOptions, ServerAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Permission violations the server reported to this process's connections.
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

/// How many permission violations the server has reported to this process so far.
pub fn permission_violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

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
                source: e.into(),
            })
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(NatsError::Connect {
            url: cfg.url.clone(),
            source: "no server URL given".into(),
        });
    }
    let mut opts = match &cfg.creds_file {
        Some(path) => ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| NatsError::Connect {
                url: cfg.url.clone(),
                source: format!("credentials file {}: {e}", path.display()).into(),
            })?,
        None => ConnectOptions::new(),
    };
    if let Some(seed) = nkey_seed(cfg)? {
        opts = opts.nkey(seed);
    }
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
    // The identity's own inbox prefix, the only one its permissions let it subscribe to.
    if let Some(tenant) = &cfg.tenant {
        opts = opts.custom_inbox_prefix(ffleet_protocol::subjects::inbox_prefix(
            &ffleet_protocol::subjects::tenant_identity(tenant),
        ));
    } else if let Some(role) = cfg.role {
        opts = opts.custom_inbox_prefix(ffleet_protocol::subjects::inbox_prefix(role.name()));
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
                    async_nats::Event::ServerError(e) => server_error(&service, &e),
                    other => tracing::debug!(%service, event = %other, "nats event"),
                }
            }
        });
    if wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(addrs).await.map_err(|e| NatsError::Connect {
        url: cfg.url.clone(),
        source: e.into(),
    })
}

/// The nkey seed from `nats.nkey_seed` (the environment) or `nats.nkey_seed_file`.
fn nkey_seed(cfg: &NatsConfig) -> Result<Option<String>, NatsError> {
    if let Some(seed) = &cfg.nkey_seed {
        return Ok(Some(seed.clone()));
    }
    let Some(path) = &cfg.nkey_seed_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| NatsError::Connect {
        url: cfg.url.clone(),
        source: format!("nkey seed file {}: {e}", path.display()).into(),
    })?;
    let seed = text.trim();
    if !seed.starts_with("SU") {
        return Err(NatsError::Connect {
            url: cfg.url.clone(),
            source: format!("nkey seed file {}: not a user seed", path.display()).into(),
        });
    }
    Ok(Some(seed.to_owned()))
}

/// Counts and logs an asynchronous server error. A permissions violation reaches the client
/// only as the text of an `-ERR` line (async-nats's `ServerError::Other`), with no code: its
/// words are the only way to tell it.
fn server_error(service: &str, e: &async_nats::ServerError) {
    let text = e.to_string();
    let violation = matches!(e, async_nats::ServerError::Other(t)
        if t.to_lowercase().contains("permissions violation"));
    if violation {
        VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%service, error = %text, "nats permission violation");
    } else {
        tracing::warn!(%service, error = %text, "nats server error");
    }
}

/// A JetStream context with the configured API timeout.
pub fn jetstream(client: async_nats::Client, cfg: &NatsConfig) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs_f64(cfg.request_timeout_secs))
        .build(client)
}
