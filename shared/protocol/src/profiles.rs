//! Encode profiles: server-side named settings with one variant per capability. Jobs pick a
//! profile by name and may move its quality within the profile's bounds; nothing else.
//!
//! The shipped `h264` profile uses constant QP: x264's CRF and mb-tree carry rate-control memory
//! from frame to frame, which a segment encoded on its own cannot have, so CRF segments start at
//! a different quality than a single-process encode would (measured up to ~6 dB on the first
//! frames). Constant QP has no such memory: with cuts on source keyframes and `-force_key_frames
//! source`, every frame comes out as a single process would encode it.
//!
//! NVENC variants follow the same segment rules: constant QP (`-rc constqp`), every forced
//! keyframe an IDR (`-forced-idr 1`, added by `video_settings` to any `*_nvenc` variant that
//! lacks it: without it NVENC's forced keyframes are plain I-frames and a segment would not
//! start cleanly), closed GOPs (NVENC's periodic keyframes are IDRs: `idrPeriod` = `-g`), and
//! every setting that could vary with ffmpeg's defaults fixed (preset, tune, B-frames, GOP,
//! look-ahead, adaptive quantisation), so nodes of one GPU class give the same bytes.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityRange {
    pub min: i32,
    pub max: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Video encoder arguments (codec, preset, rate control, pixel format...).
    pub args: Vec<String>,
    /// The flag whose value a job's `quality` override replaces (`-qp`, `-crf`, `-cq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_flag: Option<String>,
    /// Encoder threads per segment. Fixed per profile, not per node, so every node produces the
    /// same bytes for the same segment.
    #[serde(default = "one")]
    pub threads: u32,
}

fn one() -> u32 {
    1
}

impl Variant {
    /// The output pixel format the variant states (`-pix_fmt`), if any.
    pub fn pix_fmt(&self) -> Option<&str> {
        self.args
            .windows(2)
            .find(|w| w[0] == "-pix_fmt" || w[0] == "-pix_fmt:v")
            .map(|w| w[1].as_str())
    }
}

fn default_audio() -> Vec<String> {
    strings(&["-c:a", "aac", "-b:a", "128k"])
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub description: String,
    /// Bounds of the `quality` override; absent means the profile takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityRange>,
    /// Audio arguments, applied once to the whole file.
    #[serde(default = "default_audio")]
    pub audio: Vec<String>,
    /// Variants by capability name (`cpu`, `nvenc`, ...).
    #[serde(flatten)]
    pub variants: BTreeMap<String, Variant>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {profile:?} has no variants (add e.g. [profiles.{profile}.cpu])")]
    NoVariants { profile: String },
    #[error(
        "profile {profile:?} variant {variant:?}: argument {arg:?} is not allowed in a profile ({why})"
    )]
    ForbiddenArg {
        profile: String,
        variant: String,
        arg: String,
        why: &'static str,
    },
    #[error("profile {profile:?} variant {variant:?}: threads must be 1..=64")]
    Threads { profile: String, variant: String },
    #[error("profile {profile:?}: quality range {min}..={max} is empty")]
    QualityRange { profile: String, min: i32, max: i32 },
    #[error("quality {value} is outside profile {profile:?}'s range {min}..={max}")]
    QualityOutOfRange {
        profile: String,
        value: i32,
        min: i32,
        max: i32,
    },
    #[error("profile {profile:?} takes no quality override")]
    NoQualityOverride { profile: String },
}

/// Options that would let a profile read or write files of its choosing, or fight ffleet's own
/// control of inputs, outputs, timing and threads.
const FORBIDDEN: &[(&str, &str)] = &[
    ("-i", "ffleet chooses inputs"),
    ("-f", "ffleet chooses containers"),
    ("-y", "ffleet chooses outputs"),
    ("-map", "ffleet maps streams"),
    ("-threads", "use the variant's `threads`"),
    ("-filter_complex", "can open files"),
    ("-lavfi", "can open files"),
    ("-progress", "ffleet reads progress"),
    ("-attach", "can read files"),
    ("-dump_attachment", "can write files"),
    ("-vstats_file", "can write files"),
    ("-passlogfile", "can write files"),
    ("-fps_mode", "ffleet keeps source timing"),
    ("-vsync", "ffleet keeps source timing"),
    ("-force_key_frames", "ffleet keeps source keyframes"),
];

fn check_args(profile: &str, variant: &str, args: &[String]) -> Result<(), ProfileError> {
    for arg in args {
        let flag = arg.split(':').next().unwrap_or(arg);
        if let Some((_, why)) = FORBIDDEN.iter().find(|(f, _)| *f == flag) {
            return Err(ProfileError::ForbiddenArg {
                profile: profile.into(),
                variant: variant.into(),
                arg: arg.clone(),
                why,
            });
        }
        let lower = arg.to_ascii_lowercase();
        if lower.contains("movie=") || lower.contains("amovie=") || lower.contains("sendcmd") {
            return Err(ProfileError::ForbiddenArg {
                profile: profile.into(),
                variant: variant.into(),
                arg: arg.clone(),
                why: "filters that open files",
            });
        }
    }
    Ok(())
}

impl Profile {
    pub fn validate(&self, name: &str) -> Result<(), ProfileError> {
        if self.variants.is_empty() {
            return Err(ProfileError::NoVariants {
                profile: name.into(),
            });
        }
        for (vname, v) in &self.variants {
            check_args(name, vname, &v.args)?;
            if !(1..=64).contains(&v.threads) {
                return Err(ProfileError::Threads {
                    profile: name.into(),
                    variant: vname.clone(),
                });
            }
        }
        check_args(name, "audio", &self.audio)?;
        if let Some(q) = &self.quality
            && q.min > q.max
        {
            return Err(ProfileError::QualityRange {
                profile: name.into(),
                min: q.min,
                max: q.max,
            });
        }
        Ok(())
    }

    /// Checks a job's quality override against this profile's bounds.
    pub fn check_quality(&self, name: &str, quality: Option<i32>) -> Result<(), ProfileError> {
        let Some(value) = quality else { return Ok(()) };
        let Some(range) = &self.quality else {
            return Err(ProfileError::NoQualityOverride {
                profile: name.into(),
            });
        };
        if !(range.min..=range.max).contains(&value) {
            return Err(ProfileError::QualityOutOfRange {
                profile: name.into(),
                value,
                min: range.min,
                max: range.max,
            });
        }
        Ok(())
    }
}

/// The complete video settings of one segment encode: the variant's arguments with the quality
/// override applied, a fixed thread count, the source's keyframes kept and its frame timing
/// passed through. Tests build their single-process baseline from this same function.
pub fn video_settings(variant: &Variant, quality: Option<i32>) -> Vec<String> {
    let mut args = variant.args.clone();
    if let (Some(q), Some(flag)) = (quality, &variant.quality_flag) {
        match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => args[i + 1] = q.to_string(),
            _ => {
                args.push(flag.clone());
                args.push(q.to_string());
            }
        }
    }
    // NVENC and x265 make a forced keyframe a plain I-frame without this, and x265 then drops
    // those within its min-keyint of the last: the source's keyframes would be lost.
    if video_encoder(&args).is_some_and(|e| e.ends_with("_nvenc") || e == "libx265")
        && !args.iter().any(|a| a == "-forced-idr")
    {
        args.extend(strings(&["-forced-idr", "1"]));
    }
    args.extend(strings(&["-threads"]));
    args.push(variant.threads.to_string());
    args.extend(strings(&[
        "-force_key_frames",
        "source",
        "-fps_mode",
        "passthrough",
    ]));
    args
}

/// Whether a variant's arguments encode HEVC (x265, NVENC's or another hardware HEVC encoder).
pub fn is_hevc(args: &[String]) -> bool {
    video_encoder(args).is_some_and(|e| e == "libx265" || e.starts_with("hevc"))
}

/// The video encoder a variant's arguments name (`-c:v`, `-codec:v` or `-vcodec`).
pub fn video_encoder(args: &[String]) -> Option<&str> {
    args.windows(2)
        .rev()
        .find(|w| matches!(w[0].as_str(), "-c:v" | "-codec:v" | "-vcodec"))
        .map(|w| w[1].as_str())
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| (*x).to_owned()).collect()
}

fn x264(preset: &str, rc: &[&str], quality_flag: &str) -> Variant {
    let mut args = strings(&["-c:v", "libx264", "-preset", preset]);
    args.extend(strings(rc));
    args.extend(strings(&[
        "-pix_fmt",
        "yuv420p",
        "-x264-params",
        "stitchable=1",
    ]));
    Variant {
        args,
        quality_flag: Some(quality_flag.into()),
        threads: 1,
    }
}

/// HEVC on x265 at constant QP. No `-pix_fmt`: the source's bit depth and chroma layout are
/// kept (10-bit HDR stays 10-bit), as a single ffmpeg keeps them. x265 sizes its own thread pool
/// to the machine and ignores `-threads`: one pool thread and one frame thread hold it to its
/// slot, as x264's `-threads 1` does.
fn x265(preset: &str) -> Variant {
    Variant {
        args: strings(&[
            "-c:v",
            "libx265",
            "-preset",
            preset,
            "-qp",
            "26",
            "-x265-params",
            "log-level=error:pools=1:frame-threads=1",
        ]),
        quality_flag: Some("-qp".into()),
        threads: 1,
    }
}

/// H.264 on NVENC with the segment rules above: constant QP, forced keyframes as IDRs, closed
/// GOPs, and everything else fixed rather than left to the preset, whose defaults (B-frames
/// above all) differ between ffmpeg versions and GPU generations. `-bf 0`: P-frames only, so
/// decode order is presentation order and no frame near a cut waits on a later one.
fn h264_nvenc(preset: &str) -> Variant {
    Variant {
        args: strings(&[
            "-c:v",
            "h264_nvenc",
            "-preset",
            preset,
            "-tune",
            "hq",
            "-profile:v",
            "high",
            "-rc",
            "constqp",
            "-qp",
            "23",
            "-g",
            "250",
            "-bf",
            "0",
            "-rc-lookahead",
            "0",
            "-no-scenecut",
            "1",
            "-spatial-aq",
            "0",
            "-temporal-aq",
            "0",
            "-forced-idr",
            "1",
            "-pix_fmt",
            "yuv420p",
        ]),
        quality_flag: Some("-qp".into()),
        threads: 1,
    }
}

/// Profiles that ship with ffleet.
pub fn builtin() -> BTreeMap<String, Profile> {
    let mut m = BTreeMap::new();
    let cqp_range = Some(QualityRange { min: 10, max: 40 });
    m.insert(
        "h264".to_owned(),
        Profile {
            description: "H.264 (x264 medium), constant QP 23, AAC 128k. Frame-for-frame the \
                          quality of a single-process encode."
                .into(),
            quality: cqp_range.clone(),
            audio: default_audio(),
            variants: BTreeMap::from([
                ("cpu".into(), x264("medium", &["-qp", "23"], "-qp")),
                ("nvenc".into(), h264_nvenc("p5")),
            ]),
        },
    );
    m.insert(
        "h264-fast".to_owned(),
        Profile {
            description: "H.264 (x264 veryfast), constant QP 23, AAC 128k.".into(),
            quality: cqp_range,
            audio: default_audio(),
            variants: BTreeMap::from([
                ("cpu".into(), x264("veryfast", &["-qp", "23"], "-qp")),
                ("nvenc".into(), h264_nvenc("p2")),
            ]),
        },
    );
    m.insert(
        "hevc".to_owned(),
        Profile {
            description: "HEVC (x265 medium), constant QP 26, AAC 128k. Keeps the source's bit \
                          depth and HDR10 metadata (mastering display, content light level). \
                          CPU only."
                .into(),
            quality: Some(QualityRange { min: 10, max: 45 }),
            audio: default_audio(),
            variants: BTreeMap::from([("cpu".into(), x265("medium"))]),
        },
    );
    m.insert(
        "h264-crf".to_owned(),
        Profile {
            description: "H.264 (x264 medium), CRF 23, AAC 128k. Smaller files; the first \
                          frames of each segment may differ in quality from a single-process \
                          encode, since CRF's rate-control memory starts afresh per segment."
                .into(),
            quality: Some(QualityRange { min: 10, max: 40 }),
            audio: default_audio(),
            variants: BTreeMap::from([("cpu".into(), x264("medium", &["-crf", "23"], "-crf"))]),
        },
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_profiles_are_valid() {
        for (name, p) in builtin() {
            p.validate(&name).unwrap();
        }
    }

    #[test]
    fn quality_overrides_replace_the_flag_value_and_stay_in_range() {
        let p = &builtin()["h264"];
        let s = video_settings(&p.variants["cpu"], Some(30));
        let i = s.iter().position(|a| a == "-qp").unwrap();
        assert_eq!(s[i + 1], "30");
        assert_eq!(s.iter().filter(|a| *a == "-qp").count(), 1);
        assert!(s.windows(2).any(|w| w[0] == "-threads" && w[1] == "1"));
        assert!(p.check_quality("h264", Some(41)).is_err());
        assert!(p.check_quality("h264", Some(40)).is_ok());
    }

    #[test]
    fn nvenc_variants_start_segments_on_idr_frames_at_constant_qp() {
        for (name, p) in builtin() {
            let Some(v) = p.variants.get("nvenc") else {
                continue;
            };
            let s = video_settings(v, Some(30));
            let pair = |k: &str, val: &str| s.windows(2).any(|w| w[0] == k && w[1] == val);
            assert!(pair("-rc", "constqp") && pair("-qp", "30"), "{name}: {s:?}");
            assert!(pair("-forced-idr", "1") && pair("-force_key_frames", "source"));
            assert_eq!(s.iter().filter(|a| *a == "-forced-idr").count(), 1);
        }
        // A configured nvenc variant that forgot `-forced-idr` still gets it.
        let v = Variant {
            args: strings(&["-c:v", "hevc_nvenc", "-rc", "constqp", "-qp", "25"]),
            quality_flag: None,
            threads: 1,
        };
        let s = video_settings(&v, None);
        assert!(s.windows(2).any(|w| w[0] == "-forced-idr" && w[1] == "1"));
        assert_eq!(video_encoder(&v.args), Some("hevc_nvenc"));
        let x = video_settings(&builtin()["h264"].variants["cpu"], None);
        assert!(
            !x.iter().any(|a| a == "-forced-idr"),
            "x264 has no such option"
        );
        let h = video_settings(&builtin()["hevc"].variants["cpu"], None);
        assert!(h.windows(2).any(|w| w[0] == "-forced-idr" && w[1] == "1"));
    }

    #[test]
    fn profiles_cannot_name_files() {
        let mut p = builtin()["h264"].clone();
        p.variants
            .get_mut("cpu")
            .unwrap()
            .args
            .push("-filter_complex".into());
        assert!(matches!(
            p.validate("x"),
            Err(ProfileError::ForbiddenArg { .. })
        ));
        let mut p = builtin()["h264"].clone();
        p.variants
            .get_mut("cpu")
            .unwrap()
            .args
            .extend(["-vf".into(), "movie=/etc/passwd".into()]);
        assert!(p.validate("x").is_err());
    }
}
