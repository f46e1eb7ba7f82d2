//! The media data types: pictures and their conversions, HDR metadata, rationals, tracks, keyframe-aligned
//! cut planning, every ffmpeg command line, and what ffprobe and ffmpeg's progress say, parsed.
//! Running the tools is `ffleet-media`'s.
//!
//! Command lines are built here and nowhere else, so the encoder and the tests' single-process
//! baseline use exactly the same settings.

pub mod args;
pub mod container;
pub mod cuts;
pub mod hdr;
pub mod picture;
pub mod probe;
pub mod progress;
pub mod rational;
pub mod scenes;
pub mod tracks;

pub use rational::Rational;

/// Demuxers ffleet accepts for sources. Playlists and indirections (hls, dash, concat, image2,
/// tty, lavfi, ...) are not on it, so a crafted input cannot make ffmpeg open other files or URLs.
pub const SOURCE_FORMATS: &str =
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,mpegts,avi,flv,mxf,mpeg,asf,ogg,nut,ivf,m4v";

/// Protocols a child may use: local files only, plus the progress pipe.
pub const PROTOCOLS: &str = "file,pipe";

/// Container of every intermediate (cuts and encoded segments): NUT keeps each stream's own time
/// base exactly (MPEG-TS would round to 90 kHz, Matroska to 1 ms) and takes any codec.
pub const INTERMEDIATE_FORMAT: &str = "nut";
