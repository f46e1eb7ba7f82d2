//! Running ffleet on one machine: a private nats-server child and every service in-process.

mod cluster;
mod nats_server;

pub use cluster::{Cluster, ClusterSpec};
pub use nats_server::NatsServer;
