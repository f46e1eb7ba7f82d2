//! The runtime every ffleet service runs on: the layered configuration that gathers every
//! crate's section, the context a service is handed (`Ctx`: NATS, buckets, storage), the service
//! main (config → telemetry → connect → run until cancelled → drain), shutdown, the shared pull
//! worker, the job-record operations several services take, and hearing that jobs ended
//! (`ended`).
//!
//! Below it, each with its own crate: `ffleet-protocol` (the pure core), `ffleet-telemetry`,
//! `ffleet-media` (running ffmpeg and ffprobe), `ffleet-nats`, `ffleet-storage`. They are
//! re-exported here under the paths the services have always used. Dependencies point one way:
//! protocol ← telemetry ← media, nats ← storage ← runtime ← services ← the `ffleet` binary.

pub mod config;
pub mod ended;
pub mod jobs;
pub mod runtime;
pub mod service_main;
pub mod shutdown;
pub mod tenants;
pub mod worker;

pub use ffleet_media as media;
pub use ffleet_nats as nats;
pub use ffleet_nats::{health, security};
pub use ffleet_storage as storage;
pub use ffleet_telemetry as telemetry;

// The pure core, under the paths the services have always used.
pub use ffleet_protocol::{
    Capability, JobId, NodeId, Reason, Tenant, Unit, cost, ids, job_protocol, messages, profiles,
    reason, subjects, time, unit_protocol,
};
