//! What the output cannot keep of the source's pictures, said in the completed event's
//! `warnings` rather than dropped silently: Dolby Vision's RPUs (no re-encode keeps them),
//! HDR10 static metadata a variant's encoder cannot write, and bit depth a variant's pixel
//! format narrows.

use ffleet_runtime::config::Config;
use ffleet_runtime::media::hdr::{self, Hdr};
use ffleet_runtime::messages::records::VideoInfo;
use ffleet_runtime::profiles;

/// One warning per loss, naming the variant that loses it (a job's units may run on several).
pub(crate) fn picture_warnings(config: &Config, profile: &str, v: &VideoInfo) -> Vec<String> {
    let mut out = Vec::new();
    if v.hdr.dolby_vision {
        out.push(
            "Dolby Vision metadata (RPU) is not kept: a re-encode drops it, and the output \
             carries the base layer with its colour tags and HDR10 metadata"
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
