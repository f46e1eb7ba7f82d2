//! The cost model: how much work a unit is and how many slots it takes.
//!
//! Work is estimated from the probe alone (no trial encode): the decoded pixels the segment
//! holds (width × height × frames), weighted by the source codec (decoding HEVC/AV1 costs more
//! than H.264) and bit depth (10/12-bit frames are twice the bytes). Its unit is the
//! "megapixel-frame of 8-bit H.264"; only ratios matter. Slots are what a unit occupies on its
//! node while it runs: the variant's fixed thread count in cores for `cpu`, one session for an
//! accelerator (NVENC runs a session on its own engine whatever the resolution).

use crate::Capability;
use crate::profiles::Variant;

/// Relative decode cost of a source codec, H.264 = 1.
fn codec_factor(codec: &str) -> f64 {
    match codec {
        "hevc" | "vp9" => 1.5,
        "av1" => 2.0,
        "mpeg2video" | "mpeg4" | "mjpeg" => 0.8,
        _ => 1.0,
    }
}

/// 10- and 12-bit pixel formats (`yuv420p10le`, `p010le`...) move twice the bytes.
fn depth_factor(pix_fmt: Option<&str>) -> f64 {
    match pix_fmt {
        Some(p) if p.contains("10") || p.contains("12") => 2.0,
        _ => 1.0,
    }
}

/// Estimated work of a video segment of `frames` frames of a `width`x`height` `codec` source.
pub fn video_work(width: u32, height: u32, codec: &str, pix_fmt: Option<&str>, frames: u64) -> f64 {
    let mpix = f64::from(width) * f64::from(height) / 1e6;
    mpix * frames as f64 * codec_factor(codec) * depth_factor(pix_fmt)
}

/// Estimated work of the tracks unit: a fixed small share of the audio's duration, one audio
/// encode being far cheaper than the video of the same length.
pub fn audio_work(duration_secs: f64) -> f64 {
    duration_secs * 0.05
}

/// Slots a unit of `variant` takes when routed to `cap`.
pub fn slots(cap: &Capability, variant: &Variant) -> u32 {
    if cap.is_gpu() {
        1
    } else {
        variant.threads.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavier_sources_cost_more_and_accelerators_take_one_session() {
        assert!(codec_factor("hevc") > codec_factor("h264"));
        assert_eq!(depth_factor(Some("yuv420p10le")), 2.0);
        assert_eq!(depth_factor(Some("yuv420p")), 1.0);
        let v = Variant {
            args: vec![],
            quality_flag: None,
            threads: 4,
        };
        assert_eq!(slots(&Capability::cpu(), &v), 4);
        assert_eq!(slots(&Capability::new("nvenc").unwrap(), &v), 1);
    }
}
