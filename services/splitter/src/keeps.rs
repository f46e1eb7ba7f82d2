//! What the output cannot keep of the source's pictures, said in the completed event's
//! `warnings` rather than dropped silently: Dolby Vision's RPUs (no re-encode keeps them),
//! HDR10 static metadata a variant's encoder cannot write or this ffmpeg cannot read (H.264
//! SEI), and bit depth a variant's pixel format narrows. A source whose pictures no re-encode
//! can show right (Dolby Vision profile 5) is refused instead.

use ffleet_runtime::config::Config;
use ffleet_runtime::media::hdr::{self, Hdr};
use ffleet_runtime::messages::records::VideoInfo;
use ffleet_runtime::profiles;
use ffleet_runtime::reason::{Failure, Reason};

/// Refuses a source no re-encode can show right (`Hdr::refusal`), before a byte is cut.
pub(crate) fn refusal(v: &VideoInfo) -> Result<(), Failure> {
    match v.hdr.refusal() {
        Some(why) => Err(Failure::new(Reason::UnsupportedInput, why)),
        None => Ok(()),
    }
}

/// One warning per loss, naming the variant that loses it (a job's units may run on several).
pub(crate) fn picture_warnings(config: &Config, profile: &str, v: &VideoInfo) -> Vec<String> {
    let mut out = Vec::new();
    if v.hdr.dolby_vision {
        let profile = v
            .hdr
            .dolby_vision_profile
            .map_or_else(String::new, |p| format!(", profile {p}"));
        out.push(format!(
            "Dolby Vision metadata (RPU{profile}) is not kept: a re-encode drops it, and the \
             output carries the base layer as its colour tags say (HDR10, HLG or SDR)"
        ));
    }
    if v.codec == "h264" && hdr::is_hdr_transfer(v.color.transfer.as_deref()) && !v.hdr.has_static()
    {
        out.push(
            "HDR10 metadata in an H.264 source's SEI cannot be read by this ffmpeg (5.1): if the \
             source carries mastering-display or light-level metadata, the output does not"
                .to_owned(),
        );
    }
    let Some(p) = config.profile(profile) else {
        return out;
    };
    let depth = v.pix_fmt.as_deref().map_or(8, hdr::bit_depth);
    for (name, variant) in &p.variants {
        let encoder = profiles::video_encoder(&variant.args);
        if v.hdr.has_static() && !Hdr::carried_by(encoder) {
            out.push(format!(
                "HDR10 mastering-display and content-light-level metadata are not written by \
                 {} (profile {profile:?}, variant {name}): its units carry the colour tags only",
                encoder.unwrap_or("the profile's encoder")
            ));
        }
        if let Some(fmt) = variant.pix_fmt() {
            let to = hdr::bit_depth(fmt);
            if to < depth {
                out.push(format!(
                    "the source's {depth}-bit pictures are encoded as {to}-bit by profile \
                     {profile:?} (variant {name}: -pix_fmt {fmt}); a profile that names no \
                     -pix_fmt, such as hevc, keeps them"
                ));
            }
        }
    }
    out
}
