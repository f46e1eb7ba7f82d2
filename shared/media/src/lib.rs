//! Running ffmpeg and ffprobe safely as children (`command`, `sandbox`, `probe`); the data types
//! and command lines they take and give are the protocol's (`ffleet_protocol::media`),
//! re-exported here.

pub mod command;
pub mod config;
pub mod probe;
pub mod sandbox;

pub use command::{RunError, RunOutput};
pub use ffleet_protocol::media::{
    INTERMEDIATE_FORMAT, PROTOCOLS, Rational, SOURCE_FORMATS, args, cuts, hdr, picture, progress,
    rational, scenes, tracks,
};
pub use sandbox::{Tool, Tools};
