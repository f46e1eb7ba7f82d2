//! Every stream beside the video: which audio, subtitle and attachment streams of the source go
//! into the output and how, decided once at the splitter from the probe and the output
//! container.
//!
//! All of them travel in the job's one audio unit (encoded once, from the source, as a single
//! ffmpeg would), together with the container's chapters and metadata, and the merger maps them
//! all into the output. Audio is encoded with the profile's audio settings, language and title
//! kept. Subtitles are copied where the container takes them, converted where it takes only
//! text of another kind (MP4's `mov_text`, Matroska's SubRip for `mov_text` sources), and
//! dropped with a warning in the completed event where it cannot hold them at all (bitmap
//! subtitles and attachments in MP4/MOV).

use super::container::Container;
use super::probe::{Probe, ProbeStream};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Subtitle,
    Attachment,
}

/// What happens to one source stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "to", rename_all = "snake_case")]
pub enum TrackAction {
    /// Audio: encoded with the profile's audio settings.
    Encode,
    Copy,
    /// Re-encoded to this (text subtitle) codec.
    Convert(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackPlan {
    /// Index of the stream in the source file.
    pub index: u32,
    pub kind: TrackKind,
    pub codec: String,
    #[serde(flatten)]
    pub action: TrackAction,
}

/// The tracks an output gets, and a warning for each stream it cannot hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackChoice {
    pub tracks: Vec<TrackPlan>,
    pub warnings: Vec<String>,
}

const TEXT_SUBTITLES: &[&str] = &["subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"];
const BITMAP_SUBTITLES: &[&str] = &["hdmv_pgs_subtitle", "dvd_subtitle", "dvb_subtitle", "xsub"];

/// Container tags that describe the file's structure rather than its content: they are no
/// reason on their own for the output to carry the source's metadata.
const STRUCTURAL_TAGS: &[&str] = &[
    "major_brand",
    "minor_version",
    "compatible_brands",
    "encoder",
    "handler_name",
    "vendor_id",
];

fn describe(s: &ProbeStream) -> String {
    let codec = s.codec_name.as_deref().unwrap_or("unknown codec");
    match s.tags.get("language") {
        Some(lang) => format!("stream #{} ({codec}, {lang})", s.index),
        None => format!("stream #{} ({codec})", s.index),
    }
}

fn subtitle(s: &ProbeStream, container: Container) -> Result<TrackAction, String> {
    let codec = s.codec_name.as_deref().unwrap_or("");
    let text = TEXT_SUBTITLES.contains(&codec);
    let bitmap = BITMAP_SUBTITLES.contains(&codec);
    match container {
        Container::Matroska if codec == "mov_text" => Ok(TrackAction::Convert("subrip".into())),
        Container::Matroska if text || bitmap => Ok(TrackAction::Copy),
        Container::Mp4 | Container::Mov if codec == "mov_text" => Ok(TrackAction::Copy),
        Container::Mp4 | Container::Mov if text => Ok(TrackAction::Convert("mov_text".into())),
        Container::Mp4 | Container::Mov if bitmap => Err(format!(
            "subtitle {} dropped: {} cannot hold bitmap subtitles (an .mkv output keeps them)",
            describe(s),
            container.muxer()
        )),
        _ => Err(format!(
            "subtitle {} dropped: its codec is not one ffleet carries into {}",
            describe(s),
            container.muxer()
        )),
    }
}

/// Chooses what the output carries besides the video.
pub fn choose(probe: &Probe, container: Container) -> TrackChoice {
    let mut choice = TrackChoice::default();
    for s in &probe.streams {
        let kind = s.codec_type.as_deref().unwrap_or("");
        let planned = match kind {
            "audio" => Ok((TrackKind::Audio, TrackAction::Encode)),
            "subtitle" => subtitle(s, container).map(|a| (TrackKind::Subtitle, a)),
            "attachment" if container == Container::Matroska => {
                Ok((TrackKind::Attachment, TrackAction::Copy))
            }
            "attachment" => Err(format!(
                "attachment {} dropped: {} cannot hold attachments",
                describe(s),
                container.muxer()
            )),
            "data" => Err(format!("data {} dropped", describe(s))),
            _ => continue,
        };
        match planned {
            Ok((kind, action)) => choice.tracks.push(TrackPlan {
                index: s.index,
                kind,
                codec: s.codec_name.clone().unwrap_or_default(),
                action,
            }),
            Err(w) => choice.warnings.push(w),
        }
    }
    choice
}

/// Whether the source carries chapters or descriptive container metadata that the output
/// should keep even when it has no other stream beside the video.
pub fn has_container_extras(probe: &Probe) -> bool {
    !probe.chapters.is_empty()
        || probe
            .format
            .tags
            .keys()
            .any(|k| !STRUCTURAL_TAGS.contains(&k.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    const SOURCE: &str = r#"{"format":{"format_name":"matroska","tags":{"ENCODER":"x"}},"streams":[
        {"index":0,"codec_type":"video","codec_name":"h264"},
        {"index":1,"codec_type":"audio","codec_name":"aac","tags":{"language":"eng"}},
        {"index":2,"codec_type":"audio","codec_name":"opus","tags":{"language":"fra"}},
        {"index":3,"codec_type":"subtitle","codec_name":"subrip","tags":{"language":"eng"}},
        {"index":4,"codec_type":"subtitle","codec_name":"hdmv_pgs_subtitle"},
        {"index":5,"codec_type":"attachment","codec_name":"ttf"}]}"#;

    #[test]
    fn matroska_keeps_every_track() {
        let c = choose(&probe(SOURCE), Container::Matroska);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let indices: Vec<u32> = c.tracks.iter().map(|t| t.index).collect();
        assert_eq!(indices, [1, 2, 3, 4, 5]);
        assert_eq!(c.tracks[0].action, TrackAction::Encode);
        assert_eq!(c.tracks[2].action, TrackAction::Copy);
    }

    #[test]
    fn mp4_converts_text_and_reports_what_it_cannot_hold() {
        let c = choose(&probe(SOURCE), Container::Mp4);
        let indices: Vec<u32> = c.tracks.iter().map(|t| t.index).collect();
        assert_eq!(indices, [1, 2, 3]);
        assert_eq!(c.tracks[2].action, TrackAction::Convert("mov_text".into()));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("stream #4 (hdmv_pgs_subtitle)"));
        assert!(c.warnings[1].contains("attachment"));
    }

    #[test]
    fn track_plans_round_trip_through_json() {
        let c = choose(&probe(SOURCE), Container::Mp4);
        let json = serde_json::to_string(&c.tracks).unwrap();
        let back: Vec<TrackPlan> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c.tracks);
    }

    #[test]
    fn structural_tags_alone_are_no_extras() {
        assert!(!has_container_extras(&probe(SOURCE)));
        let p = probe(r#"{"format":{"tags":{"title":"A film"}},"streams":[]}"#);
        assert!(has_container_extras(&p));
        let p = probe(r#"{"format":{},"streams":[],"chapters":[{"id":0}]}"#);
        assert!(has_container_extras(&p));
    }
}
