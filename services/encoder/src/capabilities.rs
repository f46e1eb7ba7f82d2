//! Capabilities by proof. At start an encoder gathers facts (the encoders `ffmpeg -encoders`
//! lists, what NVML reports, configured labels, which encoders the profiles' variants use),
//! runs a one-frame test encode with every encoder an accelerator capability would use and a
//! test decode through NVDEC, and advertises only what succeeded.
//!
//! Listing and NVML are hints: Debian's ffmpeg lists `h264_nvenc` on every machine, and NVML
//! reports A100/H100/H200 boards, which have NVDEC but no NVENC, like any other GPU. Only a
//! test encode tells. Everything here is pure: `checks` says what to test, `decide` turns the
//! outcomes into capabilities and heartbeat facts, so both are unit-tested from recorded
//! outcomes; `probe` does the I/O.

use ffleet_runtime::Capability;
use ffleet_runtime::messages::heartbeat::{Gpu, GpuClass, Proof};
use ffleet_runtime::profiles::{Profile, video_encoder};
use std::collections::{BTreeMap, BTreeSet};

/// Encoders worth reporting in heartbeats: the software ones profiles use and every hardware one.
const NOTABLE: &[&str] = &[
    "libx264",
    "libx265",
    "libsvtav1",
    "libaom-av1",
    "libvpx-vp9",
];

/// NVDEC decoder tried when NVML reports a GPU.
pub const NVDEC_DECODER: &str = "h264_cuvid";

/// What NVML reported at start (absent: no driver or no NVML).
#[derive(Debug, Clone, PartialEq)]
pub struct NvmlFacts {
    pub driver: String,
    pub gpus: Vec<Gpu>,
}

/// Everything detection looks at, besides the test outcomes.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Encoders `ffmpeg -encoders` lists.
    pub encoders: Vec<String>,
    pub nvml: Option<NvmlFacts>,
    /// A DRM render node exists (`/dev/dri/renderD128`): the hint for QSV and VAAPI.
    pub render_node: bool,
    /// `encoder.capabilities`: restrict or label (tests label a CPU node `nvenc`).
    pub labels: Option<Vec<Capability>>,
    /// Per capability, the video encoders its profile variants use.
    pub needs: BTreeMap<String, BTreeSet<String>>,
}

/// One thing to test.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    Encode(String),
    Decode(String),
}

impl Check {
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Encode(_) => "encode",
            Check::Decode(_) => "decode",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Check::Encode(n) | Check::Decode(n) => n,
        }
    }
}

/// What this node offers, and why.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detected {
    pub capabilities: Vec<Capability>,
    /// Candidates that were not proven, with the reason (one log line each).
    pub rejected: Vec<(Capability, String)>,
    /// Every test run, with its outcome.
    pub proofs: Vec<Proof>,
    pub gpu_class: Option<GpuClass>,
    /// Notable encoders ffmpeg offers here, for heartbeats.
    pub encoders: Vec<String>,
}

/// The video encoders each capability's variants use, over every profile.
pub fn needs(profiles: &BTreeMap<String, Profile>) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in profiles.values() {
        for (cap, v) in &p.variants {
            if let Some(e) = video_encoder(&v.args) {
                m.entry(cap.clone()).or_default().insert(e.to_owned());
            }
        }
    }
    m
}

fn is_hardware(e: &str) -> bool {
    ["_nvenc", "_qsv", "_vaapi", "_amf", "_videotoolbox"]
        .iter()
        .any(|s| e.ends_with(s))
}

/// Parses `ffmpeg -encoders`: the table follows a legend and a `------` line; rows look like
/// ` V....D libx264              libx264 H.264 / AVC ...`.
pub fn parse_encoders(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| l.trim() != "------")
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn gpu_count(f: &Facts) -> usize {
    f.nvml.as_ref().map_or(0, |n| n.gpus.len())
}

/// Capabilities worth testing: the labels, or what the hints suggest.
pub fn candidates(f: &Facts) -> Vec<Capability> {
    if let Some(labels) = &f.labels {
        return labels.clone();
    }
    let has = |name: &str| f.encoders.iter().any(|e| e == name);
    let mut caps = Vec::new();
    if f.encoders.iter().any(|e| e.ends_with("_nvenc")) && gpu_count(f) > 0 {
        caps.push("nvenc");
    }
    if has("h264_qsv") && f.render_node {
        caps.push("qsv");
    }
    if has("h264_vaapi") && f.render_node {
        caps.push("vaapi");
    }
    if has("libx264") {
        caps.push("cpu");
    }
    caps.into_iter()
        .filter_map(|c| Capability::new(c).ok())
        .collect()
}

/// Encoders that prove `cap`: those its variants use, else its usual H.264 encoder. `cpu` is
/// not tested (libx264 in the listing is enough; a broken one fails like any input error).
fn proving_encoders(f: &Facts, cap: &Capability) -> Vec<String> {
    if !cap.is_gpu() {
        return Vec::new();
    }
    if let Some(set) = f.needs.get(cap.as_str()).filter(|s| !s.is_empty()) {
        return set.iter().cloned().collect();
    }
    match cap.as_str() {
        "nvenc" => vec!["h264_nvenc".into()],
        "qsv" => vec!["h264_qsv".into()],
        "vaapi" => vec!["h264_vaapi".into()],
        _ => Vec::new(),
    }
}

/// What to test: each encoder of each accelerator candidate once, and NVDEC when NVML reports
/// a GPU.
pub fn checks(f: &Facts) -> Vec<Check> {
    let mut set: BTreeSet<Check> = candidates(f)
        .iter()
        .flat_map(|c| proving_encoders(f, c))
        .map(Check::Encode)
        .collect();
    if gpu_count(f) > 0 {
        set.insert(Check::Decode(NVDEC_DECODER.into()));
    }
    set.into_iter().collect()
}

/// Turns facts and test outcomes into what the node advertises. An accelerator capability is
/// offered when at least one encoder its variants use passed its test encode (a capability is
/// routed as a whole; a variant whose encoder failed is caught by demotion at its first
/// failure); a missing outcome counts as a failure.
pub fn decide(f: &Facts, outcomes: &[Proof]) -> Detected {
    let passed = |kind: &str, name: &str| {
        outcomes
            .iter()
            .any(|p| p.kind == kind && p.name == name && p.ok)
    };
    let mut d = Detected {
        proofs: outcomes.to_vec(),
        gpu_class: f.nvml.as_ref().and_then(|n| {
            n.gpus.first().map(|g| GpuClass {
                model: g.name.clone(),
                driver: n.driver.clone(),
            })
        }),
        encoders: f
            .encoders
            .iter()
            .filter(|e| NOTABLE.contains(&e.as_str()) || is_hardware(e))
            .cloned()
            .collect(),
        ..Detected::default()
    };
    for cap in candidates(f) {
        let proving = proving_encoders(f, &cap);
        if !cap.is_gpu() || proving.is_empty() {
            d.capabilities.push(cap);
            continue;
        }
        if proving.iter().any(|e| passed("encode", e)) {
            d.capabilities.push(cap);
            continue;
        }
        let why: Vec<String> = proving
            .iter()
            .map(|e| {
                let detail = outcomes
                    .iter()
                    .find(|p| p.kind == "encode" && &p.name == e)
                    .map_or("not tested", |p| p.detail.as_str());
                format!("{e}: {detail}")
            })
            .collect();
        d.rejected.push((cap, why.join("; ")));
    }
    d
}

/// Default accelerator sessions for the node: for each NVIDIA GPU, the NVENC session limit its
/// driver enforces (consumer brands: 3 before driver 530, 5 from 530, 8 from 550; minus the
/// sessions other processes hold now), and 8 for professional and data-center boards, which
/// the driver does not cap (8 streams keep one NVENC engine busy; set `encoder.gpu_slots` for
/// boards with more engines). At least 1 per GPU.
pub fn default_gpu_sessions(nvml: &NvmlFacts) -> u32 {
    let major: u32 = nvml
        .driver
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    nvml.gpus
        .iter()
        .map(|g| {
            let consumer = matches!(g.brand.as_str(), "GeForce" | "Titan");
            if !consumer {
                return 8;
            }
            let cap: u32 = match major {
                550.. => 8,
                530.. => 5,
                _ => 3,
            };
            cap.saturating_sub(g.encoder_sessions).max(1)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, brand: &str) -> Gpu {
        Gpu {
            index: 0,
            name: name.into(),
            memory_total_bytes: 0,
            memory_used_bytes: 0,
            utilization_pct: 0,
            encoder_utilization_pct: 0,
            encoder_sessions: 0,
            encoder_capacity_pct: None,
            decoder_utilization_pct: 0,
            brand: brand.into(),
        }
    }

    fn proof(kind: &str, name: &str, ok: bool) -> Proof {
        Proof {
            kind: kind.into(),
            name: name.into(),
            ok,
            detail: if ok {
                String::new()
            } else {
                "OpenEncodeSessionEx failed: unsupported device (2)".into()
            },
        }
    }

    /// Debian's ffmpeg on a machine whose NVML reports `gpu`, with the shipped profiles.
    fn facts(gpu: Option<Gpu>) -> Facts {
        Facts {
            encoders: ["libx264", "aac", "h264_nvenc", "hevc_nvenc", "h264_vaapi"]
                .map(String::from)
                .to_vec(),
            nvml: gpu.map(|g| NvmlFacts {
                driver: "570.86.15".into(),
                gpus: vec![g],
            }),
            render_node: false,
            labels: None,
            needs: needs(&ffleet_runtime::profiles::builtin()),
        }
    }

    fn names(c: &[Capability]) -> Vec<&str> {
        c.iter().map(Capability::as_str).collect()
    }

    #[test]
    fn parses_the_encoder_table() {
        let text = "Encoders:\n V..... = Video\n ------\n V....D libx264              libx264 H.264\n A....D aac                  AAC\n";
        assert_eq!(parse_encoders(text), vec!["libx264", "aac"]);
    }

    #[test]
    fn a_gpu_without_nvenc_advertises_no_nvenc_but_carries_its_model_and_driver() {
        // H200-like: NVML reports the GPU, the test encode fails, NVDEC works.
        let f = facts(Some(gpu("NVIDIA H200", "Tesla")));
        assert_eq!(
            checks(&f),
            vec![
                Check::Encode("h264_nvenc".into()),
                Check::Decode("h264_cuvid".into())
            ]
        );
        let d = decide(
            &f,
            &[
                proof("encode", "h264_nvenc", false),
                proof("decode", "h264_cuvid", true),
            ],
        );
        assert_eq!(names(&d.capabilities), vec!["cpu"]);
        assert_eq!(d.rejected.len(), 1);
        assert!(
            d.rejected[0]
                .1
                .contains("h264_nvenc: OpenEncodeSessionEx failed")
        );
        let class = d.gpu_class.unwrap();
        assert_eq!(
            (class.model.as_str(), class.driver.as_str()),
            ("NVIDIA H200", "570.86.15")
        );
        assert!(d.encoders.contains(&"h264_nvenc".to_string()));
    }

    #[test]
    fn a_working_test_encode_adds_nvenc_and_a_failed_one_removes_it() {
        let f = facts(Some(gpu("NVIDIA L4", "Tesla")));
        let ok = decide(&f, &[proof("encode", "h264_nvenc", true)]);
        assert_eq!(names(&ok.capabilities), vec!["nvenc", "cpu"]);
        let failed = decide(&f, &[proof("encode", "h264_nvenc", false)]);
        assert_eq!(names(&failed.capabilities), vec!["cpu"]);
        // A test that never reported (timed out, not run) proves nothing either.
        assert_eq!(names(&decide(&f, &[]).capabilities), vec!["cpu"]);
    }

    #[test]
    fn without_a_gpu_nothing_is_tested_and_ffmpegs_listing_alone_offers_nothing() {
        let f = facts(None);
        assert!(checks(&f).is_empty());
        let d = decide(&f, &[]);
        assert_eq!(names(&d.capabilities), vec!["cpu"]);
        assert_eq!(d.gpu_class, None);
    }

    #[test]
    fn labels_are_proven_by_the_encoders_their_variants_use() {
        let mut f = facts(None);
        f.labels = Some(vec![Capability::new("nvenc").unwrap()]);
        // A test profile whose nvenc variant runs libx264: tested, passes, the label stands.
        f.needs.get_mut("nvenc").unwrap().insert("libx264".into());
        let c = checks(&f);
        assert!(c.contains(&Check::Encode("libx264".into())));
        let d = decide(
            &f,
            &[
                proof("encode", "h264_nvenc", false),
                proof("encode", "libx264", true),
            ],
        );
        assert_eq!(names(&d.capabilities), vec!["nvenc"]);
        // Shipped profiles only: the label needs h264_nvenc, which fails here.
        f.needs = needs(&ffleet_runtime::profiles::builtin());
        let d = decide(&f, &[proof("encode", "h264_nvenc", false)]);
        assert!(d.capabilities.is_empty());
    }

    #[test]
    fn session_slots_follow_the_driver_not_a_fixed_number() {
        let nv = |driver: &str, g: Vec<Gpu>| NvmlFacts {
            driver: driver.into(),
            gpus: g,
        };
        assert_eq!(
            default_gpu_sessions(&nv("525.60", vec![gpu("RTX 3080", "GeForce")])),
            3
        );
        assert_eq!(
            default_gpu_sessions(&nv("535.1", vec![gpu("RTX 3080", "GeForce")])),
            5
        );
        assert_eq!(
            default_gpu_sessions(&nv("550.54", vec![gpu("RTX 4090", "GeForce")])),
            8
        );
        let mut busy = gpu("RTX 4090", "GeForce");
        busy.encoder_sessions = 6;
        assert_eq!(default_gpu_sessions(&nv("550.54", vec![busy])), 2);
        let two = vec![gpu("L4", "Tesla"), gpu("L4", "Tesla")];
        assert_eq!(default_gpu_sessions(&nv("550.54", two)), 16);
    }
}
