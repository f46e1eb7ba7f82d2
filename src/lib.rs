//! The `ffleet` command and its building blocks: a private nats-server (`local::NatsServer`),
//! the four services running in one process (`local::Cluster`), and the client commands
//! (`cli`). Integration tests use the same pieces.

pub mod cli;
pub mod local;
pub mod report;
pub mod secrets;
pub mod settings;
