//! The common crate of ffleet: everything the services share and nothing that belongs to one of
//! them. Wire messages and their versions, subject/stream/bucket names, layered configuration and
//! encode profiles, telemetry setup, NATS connection and provisioning, the storage trait, and the
//! ffmpeg/ffprobe plumbing (probe, cut planning, argument building, child supervision).
//!
//! Dependencies point one way: services depend on this crate, never on each other.

pub mod config;
pub mod cost;
pub mod health;
pub mod ids;
pub mod job_protocol;
pub mod jobs;
pub mod media;
pub mod messages;
pub mod nats;
pub mod profiles;
pub mod reason;
pub mod runtime;
pub mod security;
pub mod service_main;
pub mod shutdown;
pub mod storage;
pub mod subjects;
pub mod telemetry;
pub mod time;
pub mod unit_protocol;

pub use ids::{Capability, JobId, NodeId, Unit};
pub use reason::Reason;
