//! The common crate of ffleet: everything the services share and nothing that belongs to one of
//! them. Wire messages and their versions, subject/stream/bucket names, layered configuration and
//! encode profiles, telemetry setup, NATS connection and provisioning, the storage trait, and the
//! ffmpeg/ffprobe plumbing (probe, cut planning, argument building, child supervision).
//!
//! The pure parts (ids, subjects, messages, the unit and job state machines, profiles, media
//! data types) are `ffleet-protocol`'s, re-exported here; this crate adds the I/O around them.
//! Dependencies point one way: protocol ← shared ← services, never a service on another.

pub mod config;
pub mod health;
pub mod jobs;
pub mod media;
pub mod nats;
pub mod runtime;
pub mod security;
pub mod service_main;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod worker;

// The pure core, under the paths the services have always used.
pub use ffleet_protocol::{
    Capability, JobId, NodeId, Reason, Unit, cost, ids, job_protocol, messages, profiles, reason,
    subjects, time, unit_protocol,
};
