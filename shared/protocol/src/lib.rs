//! ffleet's pure core: what the fleet says and decides, with no I/O. Ids and reasons, subject,
//! stream and bucket names, every wire message and KV record with its layout version, the unit
//! and job state machines (`unit_protocol`, `job_protocol`), encode profiles and the cost model,
//! media storage keys, the rules of configuration sections (`settings`), and the media data types
//! (pictures, rationals, tracks, cuts, ffmpeg argument building, progress and probe parsing).
//!
//! It depends on serde and a few small helpers only: no async runtime, no NATS client, no
//! telemetry exporter. So every decision here is a plain function, tested without a broker, and
//! the crates around it carry the I/O (`ffleet-telemetry`, `ffleet-media`, `ffleet-nats`,
//! `ffleet-storage`, `ffleet-runtime`). The same split as quinn's `quinn-proto`.

pub mod cost;
pub mod ids;
pub mod job_protocol;
pub mod keys;
pub mod media;
pub mod messages;
pub mod profiles;
pub mod reason;
pub mod settings;
pub mod subjects;
pub mod time;
pub mod unit_protocol;

pub use ids::{Capability, JobId, NodeId, Tenant, Unit};
pub use reason::Reason;
