//! HDR metadata beyond the colour tags: HDR10's static metadata (the mastering display's colour
//! volume and the content light levels) and the mark of Dolby Vision.
//!
//! A single ffmpeg of Debian's release (5.1) reads the static metadata from the source's SEI or
//! container into side data, but its x264 and x265 wrappers write none of it: the encoded
//! stream carries the colour tags only, and players tone-map it wrongly. The values are read
//! here from ffprobe's side data (stream first, else the first frame's), and written through
//! the encoder's own parameters (`-x265-params master-display=...:max-cll=...`, x264's
//! `mastering-display`/`cll`), which put the SEI messages into each segment's bitstream. An
//! encoder that takes no such parameter (NVENC in ffmpeg 5.1, among others) cannot carry them:
//! the job's completed event says so (`carried_by`). Dolby Vision's RPU cannot survive a
//! re-encode by ffmpeg 5.1 at all; that too is said, never dropped silently.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Chromaticity coordinates count in units of 1/50000, luminance in 1/10000 cd/m² (SMPTE ST
/// 2086, and what x264 and x265 take).
const CHROMA_UNITS: u64 = 50_000;
const LUMINANCE_UNITS: u64 = 10_000;
/// 10,000 cd/m², PQ's ceiling: a mastering display brighter than this is a malformed value.
const MAX_LUMINANCE: u64 = 10_000 * LUMINANCE_UNITS;

/// The mastering display's colour volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasteringDisplay {
    /// (x, y) of the green, blue and red primaries and of the white point, in 1/50000.
    pub green: [u32; 2],
    pub blue: [u32; 2],
    pub red: [u32; 2],
    pub white: [u32; 2],
    /// In 1/10000 cd/m².
    pub max_luminance: u32,
    pub min_luminance: u32,
}

/// Maximum content and maximum frame-average light level, in cd/m².
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentLight {
    pub max_content: u32,
    pub max_average: u32,
}

/// What a source carries of HDR metadata beyond its colour tags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hdr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mastering: Option<MasteringDisplay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light: Option<ContentLight>,
    /// A Dolby Vision configuration record: the stream carries RPUs no re-encode keeps.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dolby_vision: bool,
    /// Its profile (`dv_profile`): 5 has no base layer a player can show without the RPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dolby_vision_profile: Option<u8>,
}

/// Transfers whose sources may carry static metadata worth a look at the first frame.
pub fn is_hdr_transfer(transfer: Option<&str>) -> bool {
    matches!(transfer, Some("smpte2084" | "arib-std-b67"))
}

/// `"34000/50000"` (or a plain number) in `units` per unit value, refused past `max`.
fn scaled(v: Option<&Value>, units: u64, max: u64) -> Option<u32> {
    let (num, den) = match v? {
        Value::String(s) => match s.split_once('/') {
            Some((n, d)) => (n.trim().parse::<u64>().ok()?, d.trim().parse::<u64>().ok()?),
            None => (s.trim().parse::<u64>().ok()?, 1),
        },
        Value::Number(n) => (n.as_u64()?, 1),
        _ => return None,
    };
    if den == 0 {
        return None;
    }
    let x = (u128::from(num) * u128::from(units) + u128::from(den) / 2) / u128::from(den);
    (x <= u128::from(max)).then_some(x as u32)
}

fn mastering(d: &Value) -> Option<MasteringDisplay> {
    let c = |k: &str| scaled(d.get(k), CHROMA_UNITS, CHROMA_UNITS);
    let l = |k: &str| scaled(d.get(k), LUMINANCE_UNITS, MAX_LUMINANCE);
    let m = MasteringDisplay {
        green: [c("green_x")?, c("green_y")?],
        blue: [c("blue_x")?, c("blue_y")?],
        red: [c("red_x")?, c("red_y")?],
        white: [c("white_point_x")?, c("white_point_y")?],
        max_luminance: l("max_luminance")?,
        min_luminance: l("min_luminance")?,
    };
    (m.max_luminance > 0 && m.min_luminance < m.max_luminance).then_some(m)
}

fn light(d: &Value) -> Option<ContentLight> {
    let n = |k: &str| scaled(d.get(k), 1, u64::from(u16::MAX));
    Some(ContentLight {
        max_content: n("max_content")?,
        max_average: n("max_average")?,
    })
}

impl Hdr {
    /// Reads an ffprobe `side_data_list` (a stream's or a frame's). Malformed or out-of-range
    /// values are left out, never passed to an encoder.
    pub fn from_side_data(list: &[Value]) -> Hdr {
        let mut h = Hdr::default();
        for d in list {
            match d.get("side_data_type").and_then(Value::as_str) {
                Some("Mastering display metadata") => h.mastering = h.mastering.or(mastering(d)),
                Some("Content light level metadata") => h.light = h.light.or(light(d)),
                Some("DOVI configuration record") => {
                    h.dolby_vision = true;
                    h.dolby_vision_profile = d
                        .get("dv_profile")
                        .and_then(Value::as_u64)
                        .and_then(|p| u8::try_from(p).ok());
                }
                _ => {}
            }
        }
        h
    }

    /// Fills what `self` lacks from `other`.
    pub fn or(self, other: Hdr) -> Hdr {
        Hdr {
            mastering: self.mastering.or(other.mastering),
            light: self.light.or(other.light),
            dolby_vision: self.dolby_vision || other.dolby_vision,
            dolby_vision_profile: self.dolby_vision_profile.or(other.dolby_vision_profile),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Hdr::default()
    }

    /// Why the source cannot be re-encoded at all, if it cannot: Dolby Vision profile 5 codes
    /// its pictures in IPTPQc2, which only the RPUs map to a display; without them (and no
    /// re-encode keeps them) every picture comes out in the wrong colours.
    pub fn refusal(&self) -> Option<String> {
        (self.dolby_vision_profile == Some(5)).then(|| {
            "Dolby Vision profile 5 has no base layer a player can show without its RPUs, \
             which a re-encode cannot keep: the output's colours would be wrong"
                .to_owned()
        })
    }

    /// Whether there is static metadata to write.
    pub fn has_static(&self) -> bool {
        self.mastering.is_some() || self.light.is_some()
    }

    /// The encoder parameters (`key=value`, as `-x265-params`/`-x264-params` take them) that
    /// write the static metadata, for `encoder`; `None` when it takes no such parameter.
    fn params(&self, encoder: &str) -> Option<(&'static str, Vec<String>)> {
        let (flag, md_key, cll_key) = match encoder {
            "libx265" => ("-x265-params", "master-display", "max-cll"),
            "libx264" => ("-x264-params", "mastering-display", "cll"),
            _ => return None,
        };
        let mut p = Vec::new();
        if let Some(m) = &self.mastering {
            p.push(format!(
                "{md_key}=G({},{})B({},{})R({},{})WP({},{})L({},{})",
                m.green[0],
                m.green[1],
                m.blue[0],
                m.blue[1],
                m.red[0],
                m.red[1],
                m.white[0],
                m.white[1],
                m.max_luminance,
                m.min_luminance
            ));
        }
        if let Some(l) = &self.light {
            p.push(format!("{cll_key}={},{}", l.max_content, l.max_average));
        }
        Some((flag, p))
    }

    /// Whether `encoder` (a `-c:v` value) can write the static metadata.
    pub fn carried_by(encoder: Option<&str>) -> bool {
        encoder.is_some_and(|e| Hdr::default().params(e).is_some())
    }

    /// Adds the static metadata to an encode's settings, joined into the encoder's own
    /// parameter list where the settings have one. A key the settings already set is left as
    /// the profile has it.
    pub fn apply(&self, settings: &mut Vec<String>) {
        let Some(encoder) = crate::profiles::video_encoder(settings) else {
            return;
        };
        let Some((flag, params)) = self.params(encoder) else {
            return;
        };
        let i = match settings.iter().rposition(|a| a == flag) {
            Some(i) if i + 1 < settings.len() => i + 1,
            _ => {
                settings.push(flag.to_owned());
                settings.push(String::new());
                settings.len() - 1
            }
        };
        let existing = &settings[i];
        let set: Vec<&str> = existing
            .split(':')
            .filter_map(|kv| kv.split('=').next())
            .collect();
        let new: Vec<String> = params
            .into_iter()
            .filter(|p| !set.contains(&p.split('=').next().unwrap_or("")))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut joined = existing.clone();
        for p in new {
            if !joined.is_empty() {
                joined.push(':');
            }
            joined.push_str(&p);
        }
        settings[i] = joined;
    }
}

/// Bits per sample of a pixel format, from its name (`yuv420p10le` is 10, `rgb48le` 16): 8
/// unless the name says more.
pub fn bit_depth(pix_fmt: &str) -> u32 {
    let f = pix_fmt.to_ascii_lowercase();
    let f = f
        .strip_suffix("le")
        .or_else(|| f.strip_suffix("be"))
        .unwrap_or(&f);
    // Packed formats named by their bits per pixel.
    for (tag, depth) in [("rgb48", 16), ("bgr48", 16), ("rgba64", 16), ("bgra64", 16)] {
        if f.starts_with(tag) {
            return depth;
        }
    }
    // Semi-planar and packed 4:2:x formats named by their sample size (`p010`, `y210`).
    for tag in ["p0", "p2", "p4", "y2", "x2rgb", "x2bgr"] {
        if let Some(rest) = f.strip_prefix(tag) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<u32>() {
                return if tag.starts_with('x') { n } else { n % 100 };
            }
        }
    }
    // Planar and grey formats: the digits after the last `p` (`yuv420p10`, `gbrap12`), or after
    // `gray`/`ya` (`gray10`, `ya16`).
    let tail = f
        .strip_prefix("gray")
        .or_else(|| f.strip_prefix("ya"))
        .or_else(|| f.rsplit_once('p').map(|(_, t)| t));
    match tail.and_then(|t| t.parse::<u32>().ok()) {
        Some(n) if (9..=16).contains(&n) => n,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn side_data() -> Vec<Value> {
        vec![
            json!({"side_data_type": "Mastering display metadata",
                "red_x": "34000/50000", "red_y": "16000/50000",
                "green_x": "13250/50000", "green_y": "34500/50000",
                "blue_x": "7500/50000", "blue_y": "3000/50000",
                "white_point_x": "15635/50000", "white_point_y": "16450/50000",
                "min_luminance": "1/10000", "max_luminance": "10000000/10000"}),
            json!({"side_data_type": "Content light level metadata",
                "max_content": 1000, "max_average": 400}),
        ]
    }

    #[test]
    fn static_metadata_becomes_the_encoders_own_parameters() {
        let h = Hdr::from_side_data(&side_data());
        assert!(h.has_static() && !h.dolby_vision);
        let mut s: Vec<String> = ["-c:v", "libx265", "-x265-params", "log-level=error"]
            .map(String::from)
            .to_vec();
        h.apply(&mut s);
        assert_eq!(
            s[3],
            "log-level=error:master-display=G(13250,34500)B(7500,3000)R(34000,16000)\
             WP(15635,16450)L(10000000,1):max-cll=1000,400"
        );
        let mut x: Vec<String> = ["-c:v", "libx264"].map(String::from).to_vec();
        h.apply(&mut x);
        assert_eq!(x[2], "-x264-params");
        assert!(
            x[3].starts_with("mastering-display=G(13250,34500)") && x[3].ends_with("cll=1000,400")
        );
        // A profile's own value wins.
        let mut own: Vec<String> = ["-c:v", "libx265", "-x265-params", "max-cll=500,100"]
            .map(String::from)
            .to_vec();
        h.apply(&mut own);
        assert!(
            own[3].starts_with("max-cll=500,100:master-display="),
            "{own:?}"
        );
        assert_eq!(own[3].matches("max-cll").count(), 1);
        // Encoders that take no such parameter are left alone, and say so.
        let mut n: Vec<String> = ["-c:v", "hevc_nvenc"].map(String::from).to_vec();
        h.apply(&mut n);
        assert_eq!(n.len(), 2);
        assert!(!Hdr::carried_by(Some("hevc_nvenc")) && Hdr::carried_by(Some("libx265")));
    }

    #[test]
    fn malformed_values_are_left_out() {
        let bad = vec![
            json!({"side_data_type": "Mastering display metadata",
                "red_x": "34000/0", "red_y": "1/2", "green_x": "1/2", "green_y": "1/2",
                "blue_x": "1/2", "blue_y": "1/2", "white_point_x": "1/2", "white_point_y": "1/2",
                "min_luminance": "1/10000", "max_luminance": "1000/1"}),
            json!({"side_data_type": "Content light level metadata",
                "max_content": 99999999, "max_average": 400}),
            json!({"side_data_type": "Mastering display metadata",
                "red_x": "3/2", "red_y": "1/2", "green_x": "1/2", "green_y": "1/2",
                "blue_x": "1/2", "blue_y": "1/2", "white_point_x": "1/2", "white_point_y": "1/2",
                "min_luminance": "1/10000", "max_luminance": "1000/1"}),
            json!({"side_data_type": "DOVI configuration record", "dv_profile": 8}),
        ];
        let h = Hdr::from_side_data(&bad);
        assert_eq!(h.mastering, None);
        assert_eq!(h.light, None);
        assert!(h.dolby_vision && !h.has_static());
        assert_eq!(h.dolby_vision_profile, Some(8));
        assert!(h.refusal().is_none());
        let five = Hdr::from_side_data(&[json!({"side_data_type": "DOVI configuration record",
            "dv_profile": 5})]);
        assert!(five.refusal().is_some());
        let merged = h.or(Hdr::from_side_data(&side_data()));
        assert!(merged.has_static() && merged.dolby_vision);
    }

    #[test]
    fn bit_depth_reads_the_pixel_format_name() {
        assert_eq!(bit_depth("yuv420p"), 8);
        assert_eq!(bit_depth("yuv420p10le"), 10);
        assert_eq!(bit_depth("yuv422p12be"), 12);
        assert_eq!(bit_depth("p010le"), 10);
        assert_eq!(bit_depth("gray16le"), 16);
        assert_eq!(bit_depth("nv12"), 8);
        assert_eq!(bit_depth("yuv420p9le"), 9);
        assert_eq!(bit_depth("gray10le"), 10);
        assert_eq!(bit_depth("gray12be"), 12);
        assert_eq!(bit_depth("rgb48le"), 16);
        assert_eq!(bit_depth("rgba64be"), 16);
        assert_eq!(bit_depth("gbrap12le"), 12);
        assert_eq!(bit_depth("p016le"), 16);
        assert_eq!(bit_depth("y210le"), 10);
        assert_eq!(bit_depth("x2rgb10le"), 10);
        assert_eq!(bit_depth("yuyv422"), 8);
        assert_eq!(bit_depth("rgb24"), 8);
        assert_eq!(bit_depth("gray"), 8);
        assert_eq!(bit_depth("pal8"), 8);
    }
}
