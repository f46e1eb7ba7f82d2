//! The integration-test harness: a real nats-server per test (binary from `FFLEET_NATS_SERVER`,
//! else PATH), the four services in-process, real ffmpeg, and helpers to make media, submit
//! jobs, and read back every event a job produced.

#![allow(dead_code)]

pub mod cli;
pub mod client;
pub mod damage;
pub mod fleet;
pub mod media;
pub mod nats_cluster;
pub mod objects;
pub mod procs;
pub mod quality;
pub mod secure;
pub mod sources;

#[allow(unused_imports)]
pub use client::JobClient;
#[allow(unused_imports)]
pub use fleet::{FleetOptions, TestFleet};

/// The media backend the fleets of this test run use: `FFLEET_TEST_STORAGE=object-store` runs
/// the whole suite over the JetStream Object Store, anything else over the shared directory.
pub fn backend() -> ffleet_runtime::config::StorageBackend {
    use ffleet_runtime::config::StorageBackend;
    match std::env::var("FFLEET_TEST_STORAGE").as_deref() {
        Ok("object-store") => StorageBackend::ObjectStore,
        _ => StorageBackend::SharedDir,
    }
}

/// The backend's name as configuration spells it.
pub fn backend_name() -> &'static str {
    match backend() {
        ffleet_runtime::config::StorageBackend::ObjectStore => "object-store",
        ffleet_runtime::config::StorageBackend::SharedDir => "shared-dir",
    }
}
