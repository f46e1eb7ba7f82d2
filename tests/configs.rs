//! Shipped configuration files parse: the deployment nats-server configs (on servers that know
//! its options, 2.10+) and the example `ffleet.toml` from docs/configuration.md.

use ffleet::local::NatsServer;
use std::process::Command;

fn server_version() -> (u32, u32) {
    let out = Command::new(NatsServer::binary())
        .arg("--version")
        .output()
        .expect("nats-server runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .trim()
        .rsplit('v')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn deployment_nats_config_is_valid() {
    let version = server_version();
    if version < (2, 10) {
        println!(
            "skipped on nats-server {version:?}: sync_interval needs 2.10 (see the file's comment)"
        );
        return;
    }
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/nats/nats-server.conf");
    let out = Command::new(NatsServer::binary())
        .args(["-t", "-c", conf])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three-node cluster config is valid as shipped on 2.10+, and on 2.9 once its
/// `sync_interval` line is dropped, as its comment says.
#[test]
fn cluster_nats_config_is_valid() {
    let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/nats/nats-cluster.conf");
    let dir = tempfile::tempdir().unwrap();
    let path = if server_version() < (2, 10) {
        let text = std::fs::read_to_string(conf).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("sync_interval"))
            .collect();
        let p = dir.path().join("nats-cluster-2.9.conf");
        std::fs::write(&p, kept.join("\n")).unwrap();
        p
    } else {
        conf.into()
    };
    let out = Command::new(NatsServer::binary())
        .args(["-t", "-c"])
        .arg(&path)
        .env("SERVER_NAME", "nats-2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn documented_example_config_loads_and_validates() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let toml = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/configuration.md has a toml example");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ffleet.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = ffleet_runtime::config::Config::load(Some(&path)).expect("example loads");
    ffleet::settings::validate(&cfg).expect("example validates");
    assert!(
        cfg.notices.is_empty(),
        "the example uses no old key names: {:?}",
        cfg.notices
    );
    let encoder = ffleet_encoder::EncoderConfig::of(&cfg).expect("its [encoder] reads");
    assert_eq!(encoder.slots, Some(8));
}
