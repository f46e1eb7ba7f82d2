//! The tests behind capabilities: a one-frame encode of a generated picture (lavfi `color`,
//! nothing read from disk) with one encoder, a decode of a tiny libx264 clip through a hardware
//! decoder, and a few frames through a whole profile variant (run again after a GPU encode
//! failed, to tell a broken accelerator from a bad input). Each runs under a timeout; a
//! failure is an outcome with ffmpeg's first error line, never an error.

use crate::capabilities::{self, Check, Detected, Facts};
use crate::config::EncoderConfig;
use crate::gpu::Gpus;
use ffleet_runtime::Capability;
use ffleet_runtime::config::Config;
use ffleet_runtime::ids::IdError;
use ffleet_runtime::media::{Tool, command};
use ffleet_runtime::messages::heartbeat::Proof;
use ffleet_runtime::profiles::{Variant, video_settings};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// A small picture every encoder accepts (NVENC's minimum is above 128x32).
const PICTURE: &str = "color=c=gray:s=320x240:r=25";

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn head() -> Vec<OsString> {
    os(&["-hide_banner", "-nostdin", "-loglevel", "error"])
}

/// Device set-up before the input and upload after it, for encoders that take hardware frames.
fn device_args(encoder: &str) -> (Vec<OsString>, Vec<OsString>) {
    if encoder.ends_with("_vaapi") {
        (
            os(&["-vaapi_device", "/dev/dri/renderD128"]),
            os(&["-vf", "format=nv12,hwupload"]),
        )
    } else if encoder.ends_with("_qsv") {
        (
            os(&["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"]),
            os(&["-vf", "hwupload=extra_hw_frames=64,format=qsv"]),
        )
    } else {
        (Vec::new(), os(&["-pix_fmt", "yuv420p"]))
    }
}

async fn outcome(ffmpeg: &Tool, kind: &str, name: &str, args: Vec<OsString>, t: Duration) -> Proof {
    let detail = match command::capture(ffmpeg, &args, t).await {
        Ok(_) => String::new(),
        Err(e) => {
            let tail = e.stderr_tail();
            // The first line names the cause ("Cannot load libcuda.so.1", "OpenEncodeSessionEx
            // failed: unsupported device"); the rest is ffmpeg's generic follow-up.
            let first = tail.lines().next().unwrap_or("").trim();
            // Drop ffmpeg's `[h264_nvenc @ 0x55d8...] ` context prefix: the address varies.
            let first = match first.split_once("] ") {
                Some((ctx, rest)) if ctx.starts_with('[') && ctx.contains(" @ ") => rest,
                _ => first,
            };
            if first.is_empty() {
                e.to_string()
            } else {
                first.to_owned()
            }
        }
    };
    Proof {
        kind: kind.into(),
        name: name.into(),
        ok: detail.is_empty(),
        detail,
    }
}

/// One frame through `encoder`, to nowhere.
pub async fn encode(ffmpeg: &Tool, encoder: &str, timeout: Duration) -> Proof {
    let (before, after) = device_args(encoder);
    let mut args = head();
    args.extend(before);
    args.extend(os(&["-f", "lavfi", "-i", &format!("{PICTURE}:d=0.04")]));
    args.extend(os(&["-frames:v", "1"]));
    args.extend(after);
    args.extend(os(&["-c:v", encoder, "-f", "null", "-"]));
    outcome(ffmpeg, "encode", encoder, args, timeout).await
}

/// A tiny H.264 clip made by libx264, decoded by `decoder` (e.g. `h264_cuvid`, which fails
/// outright without NVDEC, where `-hwaccel cuda` may fall back to software).
pub async fn decode(ffmpeg: &Tool, decoder: &str, timeout: Duration) -> Proof {
    let dir = match tempfile::Builder::new().prefix("ffleet-probe-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Proof {
                kind: "decode".into(),
                name: decoder.into(),
                ok: false,
                detail: format!("no temp dir for the test clip: {e}"),
            };
        }
    };
    let clip = dir.path().join("probe.mp4");
    let mut make = head();
    make.extend(os(&["-f", "lavfi", "-i", &format!("{PICTURE}:d=0.2")]));
    make.extend(os(&["-c:v", "libx264", "-pix_fmt", "yuv420p", "-y"]));
    make.push(clip.clone().into_os_string());
    let made = outcome(ffmpeg, "decode", decoder, make, timeout).await;
    if !made.ok {
        return Proof {
            detail: format!("cannot make the test clip: {}", made.detail),
            ..made
        };
    }
    let mut args = head();
    args.extend(os(&["-c:v", decoder, "-i"]));
    args.push(clip.into_os_string());
    args.extend(os(&["-f", "null", "-"]));
    outcome(ffmpeg, "decode", decoder, args, timeout).await
}

/// A few frames through a whole variant, with the settings a segment gets.
pub async fn variant(ffmpeg: &Tool, v: &Variant, timeout: Duration) -> Proof {
    let name = ffleet_runtime::profiles::video_encoder(&v.args)
        .unwrap_or("video")
        .to_owned();
    let mut args = head();
    args.extend(os(&["-f", "lavfi", "-i", &format!("{PICTURE}:d=0.2")]));
    args.extend(video_settings(v, None).iter().map(OsString::from));
    args.extend(os(&["-an", "-f", "null", "-"]));
    outcome(ffmpeg, "variant", &name, args, timeout).await
}

/// Runs every check at once (each is one short ffmpeg).
pub async fn run_all(ffmpeg: &Tool, checks: &[Check], timeout: Duration) -> Vec<Proof> {
    let runs = checks.iter().map(|c| async move {
        match c {
            Check::Encode(e) => encode(ffmpeg, e, timeout).await,
            Check::Decode(d) => decode(ffmpeg, d, timeout).await,
        }
    });
    futures::future::join_all(runs).await
}

/// Encoders `ffmpeg` lists, by name (none, logged, when it cannot be run).
pub async fn listed_encoders(ffmpeg: &Tool) -> Vec<String> {
    let args = os(&["-hide_banner", "-encoders"]);
    match command::capture(ffmpeg, &args, Duration::from_secs(20)).await {
        Ok(out) => capabilities::parse_encoders(&String::from_utf8_lossy(&out.stdout)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list ffmpeg encoders");
            Vec::new()
        }
    }
}

/// Gathers the facts, runs the tests they call for, and decides. Each failed test is one log
/// line; a label that is no capability name is the only error.
pub async fn detect(
    config: &Config,
    settings: &EncoderConfig,
    gpus: &Gpus,
) -> Result<(Facts, Detected), IdError> {
    let labels = match &settings.capabilities {
        Some(list) => Some(
            list.iter()
                .map(|c| Capability::new(c.as_str()))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let tools = config.tools();
    let ffmpeg = &tools.ffmpeg;
    let facts = Facts {
        encoders: listed_encoders(ffmpeg).await,
        nvml: gpus.facts(),
        render_node: Path::new("/dev/dri/renderD128").exists(),
        labels,
        needs: capabilities::needs(&config.profiles),
    };
    let timeout = settings.proof_timeout();
    let proofs = run_all(ffmpeg, &capabilities::checks(&facts), timeout).await;
    for p in proofs.iter().filter(|p| !p.ok) {
        tracing::info!(kind = %p.kind, name = %p.name, detail = %p.detail, "start-up test failed");
    }
    let detected = capabilities::decide(&facts, &proofs);
    for (cap, why) in &detected.rejected {
        tracing::warn!(capability = %cap, why = %why, "capability not offered: its test encode failed");
    }
    Ok((facts, detected))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ffmpeg() -> Tool {
        Config::default().tools().ffmpeg
    }

    #[tokio::test]
    async fn libx264_passes_and_a_missing_encoder_fails_with_a_reason() {
        let t = Duration::from_secs(20);
        let ok = encode(&ffmpeg(), "libx264", t).await;
        assert!(ok.ok, "{ok:?}");
        let bad = encode(&ffmpeg(), "no_such_encoder", t).await;
        assert!(!bad.ok && !bad.detail.is_empty(), "{bad:?}");
    }

    #[tokio::test]
    async fn a_variant_with_an_invalid_option_fails_its_proof() {
        let t = Duration::from_secs(20);
        let args = |preset: &str| -> Vec<String> {
            ["-c:v", "libx264", "-preset", preset, "-qp", "23"]
                .map(String::from)
                .to_vec()
        };
        let good = Variant {
            args: args("veryfast"),
            quality_flag: None,
            threads: 1,
        };
        assert!(variant(&ffmpeg(), &good, t).await.ok);
        let bad = Variant {
            args: args("no-such-preset"),
            ..good
        };
        let p = variant(&ffmpeg(), &bad, t).await;
        assert!(!p.ok && p.detail.contains("preset"), "{p:?}");
    }
}
