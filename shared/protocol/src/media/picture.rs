//! How a source's pictures become the output's: orientation as displayed, a size and chroma
//! layout the output pixel format can hold, and the colour tags carried over.
//!
//! Everything here is a pure function of the source's probe and the profile variant, computed
//! the same way on every node, so every segment of a job gets the same filter chain and the
//! segments still join frame-exact.
//!
//! - **Orientation.** A single ffmpeg applies the container's display matrix when it decodes
//!   (autorotate) and writes upright frames with no matrix. The stream-copied cuts lose the
//!   matrix (NUT has no place for it), so the encoder inserts the same filters ffmpeg's
//!   autorotate would: `transpose` for 90/270 degrees (with the flip variant for mirrored
//!   matrices), `hflip`/`vflip` for 180 degrees and mirrors, `rotate` for any other angle.
//! - **Size.** A subsampled output format needs even dimensions (4:2:0 both, 4:2:2 the width).
//!   Where the (oriented) source is odd there, the picture is scaled down to the chroma grid
//!   (1279x719 becomes 1278x718): the whole picture stays, with no black edge. Cropping the
//!   last column was measured against it: at 1279x719 both keep 47 dB against the source (as
//!   `check-output.py` compares, scaled back), but on small pictures cropping shifts every pixel
//!   of the rescaled comparison by up to one column (27.7 dB at 319x179, scaling 35.4 dB).
//!   Converting chroma layout and bit depth is left to ffmpeg's own conversion to the profile's
//!   `-pix_fmt`, as a single ffmpeg does.
//! - **Colour.** Primaries, transfer, matrix and range are set on the output explicitly: a tag
//!   that lived only in the source container survives the NUT cut this way. A full-range source
//!   stays full range (the conversion to the output format keeps the range instead of squeezing
//!   it to limited range). HDR10's static metadata goes through the encoder's parameters
//!   (`hdr`).

use super::hdr::Hdr;
use serde::{Deserialize, Serialize};

/// A display matrix as ffmpeg stores it: 3x3, row-major, 16.16 fixed point (2.30 for the last
/// column).
pub type DisplayMatrix = [i32; 9];

/// Colour tags of a stream, as ffprobe names them (`bt709`, `smpte2084`, `tv`, `pc`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColorTags {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primaries: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

impl ColorTags {
    /// Keeps only values that are real tags: ffprobe's names are short lowercase tokens, and
    /// `unknown`/`reserved`/`unspecified` mean no tag at all.
    pub fn tag(value: Option<&str>) -> Option<String> {
        let v = value?.trim();
        let token = !v.is_empty()
            && v.len() <= 32
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let meaningful = !matches!(v, "unknown" | "reserved" | "unspecified");
        (token && meaningful).then(|| v.to_owned())
    }

    pub fn full_range(&self) -> bool {
        self.range.as_deref() == Some("pc")
    }

    /// Output options that write these tags into the encoded stream.
    pub fn output_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for (flag, value) in [
            ("-color_primaries", &self.primaries),
            ("-color_trc", &self.transfer),
            ("-colorspace", &self.matrix),
            ("-color_range", &self.range),
        ] {
            if let Some(v) = value {
                a.push(flag.to_owned());
                a.push(v.clone());
            }
        }
        a
    }
}

/// The facts about a source's pictures that decide the filter chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Picture {
    /// Stored (coded) size.
    pub width: u32,
    pub height: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix_fmt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_matrix: Option<DisplayMatrix>,
    #[serde(default)]
    pub color: ColorTags,
    /// HDR10 static metadata the encoder writes where it can (see `hdr`).
    #[serde(default, skip_serializing_if = "Hdr::is_empty")]
    pub hdr: Hdr,
}

/// What ffmpeg's autorotate does for a display matrix, as filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Orientation {
    pub filters: Vec<String>,
    /// Whether width and height trade places.
    pub swaps: bool,
}

/// `av_display_rotation_get`: the counter-clockwise angle of the matrix, in degrees.
fn rotation_get(m: &DisplayMatrix) -> Option<f64> {
    let fp = |v: i32| f64::from(v) / 65536.0;
    let scale0 = fp(m[0]).hypot(fp(m[3]));
    let scale1 = fp(m[1]).hypot(fp(m[4]));
    if scale0 == 0.0 || scale1 == 0.0 {
        return None;
    }
    let r = (fp(m[1]) / scale1).atan2(fp(m[0]) / scale0).to_degrees();
    Some(-r)
}

/// ffmpeg's `get_rotation`: the clockwise angle to apply, normalised to [0, 360).
fn display_angle(m: &DisplayMatrix) -> f64 {
    let Some(r) = rotation_get(m) else { return 0.0 };
    let mut theta = -r.round();
    theta -= 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
    theta
}

/// The filters ffmpeg's autorotate inserts for `m` (fftools' `configure_input_video_filter`).
pub fn orientation(m: Option<&DisplayMatrix>) -> Orientation {
    let Some(m) = m else {
        return Orientation {
            filters: Vec::new(),
            swaps: false,
        };
    };
    let theta = display_angle(m);
    let near = |a: f64| (theta - a).abs() < 1.0;
    let (filters, swaps): (Vec<&str>, bool) = if near(90.0) {
        let t = if m[3] > 0 {
            "transpose=cclock_flip"
        } else {
            "transpose=clock"
        };
        (vec![t], true)
    } else if near(180.0) {
        let mut f = Vec::new();
        if m[0] < 0 {
            f.push("hflip");
        }
        if m[4] < 0 {
            f.push("vflip");
        }
        (f, false)
    } else if near(270.0) {
        let t = if m[3] < 0 {
            "transpose=clock_flip"
        } else {
            "transpose=cclock"
        };
        (vec![t], true)
    } else if theta.abs() > 1.0 {
        let f = format!("rotate={theta:.6}*PI/180");
        return Orientation {
            filters: vec![f],
            swaps: false,
        };
    } else if m[4] < 0 {
        (vec!["vflip"], false)
    } else {
        (Vec::new(), false)
    };
    Orientation {
        filters: filters.into_iter().map(str::to_owned).collect(),
        swaps,
    }
}

/// Chroma subsampling of a pixel format, as (log2 horizontal, log2 vertical), from its name.
/// Unknown names count as 4:2:0, the strictest common case.
pub fn chroma_shift(pix_fmt: &str) -> (u32, u32) {
    let f = pix_fmt.to_ascii_lowercase();
    let any = |keys: &[&str]| keys.iter().any(|k| f.contains(k));
    if any(&[
        "444", "gbr", "rgb", "bgr", "gray", "ya8", "ya16", "argb", "abgr", "xyz",
    ]) {
        (0, 0)
    } else if any(&[
        "422", "nv16", "nv20", "yuyv", "uyvy", "y210", "p210", "p216",
    ]) {
        (1, 0)
    } else if any(&["411"]) {
        (2, 0)
    } else if any(&["410"]) {
        (2, 2)
    } else if any(&["440"]) {
        (0, 1)
    } else {
        (1, 1)
    }
}

/// What the encoder does to the pictures of one variant: the filters before encoding and the
/// output size they produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub filters: Vec<String>,
    pub width: u32,
    pub height: u32,
    /// Options after the filters (colour tags).
    pub output_args: Vec<String>,
    /// Static HDR metadata, joined into the encoder's own parameters.
    pub hdr: Hdr,
}

impl Picture {
    /// The size as displayed (after orientation).
    pub fn display_size(&self) -> (u32, u32) {
        if orientation(self.display_matrix.as_ref()).swaps {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// The conversion into `out_pix_fmt` (the variant's `-pix_fmt`, or the source's own format
    /// where the variant names none). `None` when the picture cannot be held at all (less than
    /// one chroma block on a side).
    pub fn conversion(&self, out_pix_fmt: Option<&str>) -> Option<Conversion> {
        let o = orientation(self.display_matrix.as_ref());
        let mut filters = o.filters;
        let (w, h) = self.display_size();
        let fmt = out_pix_fmt.or(self.pix_fmt.as_deref()).unwrap_or("yuv420p");
        let (sx, sy) = chroma_shift(fmt);
        let (cw, ch) = (w >> sx << sx, h >> sy << sy);
        if cw == 0 || ch == 0 {
            return None;
        }
        let mut scale = Vec::new();
        if (cw, ch) != (w, h) {
            scale.push(format!("w={cw}:h={ch}"));
        }
        if self.color.full_range() {
            // The default conversion to a yuv format would squeeze full range to limited.
            scale.push("in_range=full:out_range=full".to_owned());
        }
        if !scale.is_empty() {
            filters.push(format!("scale={}", scale.join(":")));
        }
        Some(Conversion {
            filters,
            width: cw,
            height: ch,
            output_args: self.color.output_args(),
            hdr: self.hdr,
        })
    }
}

/// Parses ffprobe's `displaymatrix` text (three lines `0000000N: a b c`).
pub fn parse_display_matrix(text: &str) -> Option<DisplayMatrix> {
    let values: Vec<i32> = text
        .lines()
        .filter_map(|l| l.split_once(':').map(|(_, rest)| rest))
        .flat_map(|rest| rest.split_whitespace().map(str::parse::<i32>))
        .collect::<Result<_, _>>()
        .ok()?;
    values.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: i32 = 65536;
    const W: i32 = 1 << 30;

    fn m(a: i32, b: i32, c: i32, d: i32) -> DisplayMatrix {
        [a * ONE, b * ONE, 0, c * ONE, d * ONE, 0, 0, 0, W]
    }

    #[test]
    fn parses_ffprobe_display_matrix_text() {
        let text = "\n00000000:            0      -65536           0\n00000001:        65536           0           0\n00000002:            0           0  1073741824\n";
        assert_eq!(parse_display_matrix(text), Some(m(0, -1, 1, 0)));
        assert_eq!(parse_display_matrix("garbage"), None);
    }

    #[test]
    fn orientation_matches_ffmpeg_autorotate() {
        // `-metadata:s:v rotate=90` writes [0 -1; 1 0], which ffmpeg 5.1 displays through
        // transpose=cclock (checked against its decoder output).
        let cases = [
            (m(0, -1, 1, 0), vec!["transpose=cclock"], true),
            (m(0, 1, -1, 0), vec!["transpose=clock"], true),
            (m(-1, 0, 0, -1), vec!["hflip", "vflip"], false),
            (m(-1, 0, 0, 1), vec!["hflip"], false),
            (m(1, 0, 0, -1), vec!["vflip"], false),
            (m(0, 1, 1, 0), vec!["transpose=cclock_flip"], true),
            (m(0, -1, -1, 0), vec!["transpose=clock_flip"], true),
            (m(1, 0, 0, 1), vec![], false),
        ];
        for (matrix, filters, swaps) in cases {
            let o = orientation(Some(&matrix));
            assert_eq!(o.filters, filters, "{matrix:?}");
            assert_eq!(o.swaps, swaps, "{matrix:?}");
        }
        assert!(orientation(None).filters.is_empty());
    }

    #[test]
    fn odd_sizes_are_scaled_to_the_chroma_grid() {
        let p = Picture {
            width: 1279,
            height: 719,
            pix_fmt: Some("yuv444p".into()),
            ..Picture::default()
        };
        let c = p.conversion(Some("yuv420p")).unwrap();
        assert_eq!((c.width, c.height), (1278, 718));
        assert_eq!(c.filters, vec!["scale=w=1278:h=718"]);
        let c = p.conversion(Some("yuv422p")).unwrap();
        assert_eq!((c.width, c.height), (1278, 719));
        let c = p.conversion(Some("yuv444p")).unwrap();
        assert!(c.filters.is_empty());
        // Rotated first, then scaled: the grid applies to the displayed size.
        let p = Picture {
            width: 320,
            height: 241,
            display_matrix: Some(m(0, -1, 1, 0)),
            ..Picture::default()
        };
        let c = p.conversion(Some("yuv420p")).unwrap();
        assert_eq!(c.filters, vec!["transpose=cclock", "scale=w=240:h=320"]);
        let tiny = Picture {
            width: 1,
            height: 1,
            ..Picture::default()
        };
        assert!(tiny.conversion(Some("yuv420p")).is_none());
    }

    #[test]
    fn colour_tags_are_kept_and_full_range_stays_full() {
        let color = ColorTags {
            primaries: ColorTags::tag(Some("bt2020")),
            transfer: ColorTags::tag(Some("smpte2084")),
            matrix: ColorTags::tag(Some("bt2020nc")),
            range: ColorTags::tag(Some("pc")),
        };
        assert_eq!(ColorTags::tag(Some("unknown")), None);
        assert_eq!(ColorTags::tag(Some("-vf x")), None);
        let p = Picture {
            width: 64,
            height: 64,
            color,
            ..Picture::default()
        };
        let c = p.conversion(Some("yuv420p")).unwrap();
        assert_eq!(c.filters, vec!["scale=in_range=full:out_range=full"]);
        let odd_full = Picture { width: 63, ..p };
        let c = odd_full.conversion(Some("yuv420p")).unwrap();
        assert_eq!(
            c.filters,
            vec!["scale=w=62:h=64:in_range=full:out_range=full"]
        );
        assert_eq!(
            c.output_args,
            [
                "-color_primaries",
                "bt2020",
                "-color_trc",
                "smpte2084",
                "-colorspace",
                "bt2020nc",
                "-color_range",
                "pc"
            ]
        );
    }

    #[test]
    fn chroma_layouts_from_names() {
        assert_eq!(chroma_shift("yuv420p10le"), (1, 1));
        assert_eq!(chroma_shift("yuv422p10le"), (1, 0));
        assert_eq!(chroma_shift("yuv444p"), (0, 0));
        assert_eq!(chroma_shift("nv12"), (1, 1));
        assert_eq!(chroma_shift("gbrp"), (0, 0));
    }
}
