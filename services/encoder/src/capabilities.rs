//! Capability detection at encoder start: the encoders `ffmpeg -encoders` lists and, through
//! NVML, the NVIDIA GPUs. `cpu` when software H.264 (libx264) is there; `nvenc` when ffmpeg has
//! h264_nvenc *and* NVML finds a GPU (an ffmpeg built with NVENC on a machine without one would
//! fail every task); `qsv`/`vaapi` when ffmpeg has them and a render node exists. Configuration
//! (`encoder.capabilities`) may restrict or label them instead.

use crate::gpu::Gpus;
use ffleet_shared::Capability;
use ffleet_shared::media::command;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// Encoders worth reporting in heartbeats: the software ones profiles use and every hardware one.
const NOTABLE: &[&str] = &[
    "libx264",
    "libx265",
    "libsvtav1",
    "libaom-av1",
    "libvpx-vp9",
];

/// Encoders `ffmpeg` lists, by name.
pub async fn encoders(ffmpeg: &Path) -> Vec<String> {
    let args: Vec<OsString> = ["-hide_banner", "-encoders"]
        .iter()
        .map(OsString::from)
        .collect();
    match command::capture(ffmpeg, &args, Duration::from_secs(20)).await {
        Ok(out) => parse_encoders(&String::from_utf8_lossy(&out.stdout)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list ffmpeg encoders");
            Vec::new()
        }
    }
}

/// The table follows a legend and a `------` line; rows look like
/// ` V....D libx264              libx264 H.264 / AVC ...`.
fn parse_encoders(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim() != "------")
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn is_hardware(e: &str) -> bool {
    ["_nvenc", "_qsv", "_vaapi", "_amf", "_videotoolbox"]
        .iter()
        .any(|s| e.ends_with(s))
}

/// What this node can do, and the encoders worth showing in its heartbeats.
pub struct Detected {
    pub capabilities: Vec<Capability>,
    pub encoders: Vec<String>,
}

pub async fn detect(ffmpeg: &Path, gpus: &Gpus) -> Detected {
    let have = encoders(ffmpeg).await;
    let render_node = Path::new("/dev/dri/renderD128").exists();
    Detected {
        capabilities: from_encoders(&have, gpus.count(), render_node),
        encoders: have
            .into_iter()
            .filter(|e| NOTABLE.contains(&e.as_str()) || is_hardware(e))
            .collect(),
    }
}

fn from_encoders(have: &[String], nvidia_gpus: u32, render_node: bool) -> Vec<Capability> {
    let has = |name: &str| have.iter().any(|e| e == name);
    let mut caps = Vec::new();
    if has("h264_nvenc") && nvidia_gpus > 0 {
        caps.push("nvenc");
    }
    if has("h264_qsv") && render_node {
        caps.push("qsv");
    }
    if has("h264_vaapi") && render_node {
        caps.push("vaapi");
    }
    if has("libx264") {
        caps.push("cpu");
    }
    caps.into_iter()
        .filter_map(|c| Capability::new(c).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_encoder_table() {
        let text = "Encoders:\n V..... = Video\n ------\n V....D libx264              libx264 H.264\n A....D aac                  AAC\n";
        assert_eq!(parse_encoders(text), vec!["libx264", "aac"]);
    }

    #[test]
    fn nvenc_needs_both_the_encoder_and_a_gpu() {
        let have: Vec<String> = ["libx264", "h264_nvenc"].map(String::from).to_vec();
        let names = |c: Vec<Capability>| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(names(from_encoders(&have, 0, false)), vec!["cpu"]);
        assert_eq!(names(from_encoders(&have, 1, false)), vec!["nvenc", "cpu"]);
    }
}
