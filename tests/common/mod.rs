//! The integration-test harness: a real nats-server per test (binary from `FFLEET_NATS_SERVER`,
//! else PATH), the four services in-process, real ffmpeg, and helpers to make media, submit
//! jobs, and read back every event a job produced.

#![allow(dead_code)]

pub mod client;
pub mod fleet;
pub mod media;
pub mod nats_cluster;
pub mod procs;
pub mod quality;
pub mod sources;

#[allow(unused_imports)]
pub use client::JobClient;
#[allow(unused_imports)]
pub use fleet::{FleetOptions, TestFleet};
