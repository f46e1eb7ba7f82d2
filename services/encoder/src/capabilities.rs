//! Capability detection from `ffmpeg -encoders`: `cpu` when software H.264 encoding is there.
//! Accelerators (NVENC through NVML, ...) are added by configuration labels for now.

use ffleet_shared::Capability;
use ffleet_shared::media::command;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

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

pub async fn detect(ffmpeg: &Path) -> Vec<Capability> {
    let have = encoders(ffmpeg).await;
    let mut caps = Vec::new();
    if have.iter().any(|e| e == "libx264") {
        caps.push(Capability::cpu());
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_encoder_table() {
        let text = "Encoders:\n V..... = Video\n ------\n V....D libx264              libx264 H.264\n A....D aac                  AAC\n";
        assert_eq!(parse_encoders(text), vec!["libx264", "aac"]);
    }
}
