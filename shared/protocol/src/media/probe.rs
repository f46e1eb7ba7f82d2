//! What ffprobe says, parsed: its JSON (format, streams, chapters, packets), its compact packet
//! lines, and the spans they give; and the arguments that ask for them. Running ffprobe is the
//! `ffleet-media`'s (`ffleet_media::probe`); this is data only.

use super::PROTOCOLS;
use super::rational::Rational;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// `file:` prefix forces the file protocol, so a name like `concat:a|b` is a file name.
pub fn file_arg(path: &Path) -> OsString {
    let mut s = OsString::from("file:");
    s.push(path.as_os_str());
    s
}

/// Arguments every ffprobe run starts with: quiet, local files only, `formats` the demuxers
/// allowed (`None`: any, for ffleet's own files).
pub fn base_args(formats: Option<&str>) -> Vec<OsString> {
    let mut v: Vec<OsString> = [
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        PROTOCOLS,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    if let Some(f) = formats {
        v.push("-format_whitelist".into());
        v.push(f.into());
    }
    v
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProbeFormat {
    #[serde(default)]
    pub format_name: String,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
    /// Container metadata (title, artist, creation_time, ...).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProbeStream {
    pub index: u32,
    #[serde(default)]
    pub codec_type: Option<String>,
    #[serde(default)]
    pub codec_name: Option<String>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub pix_fmt: Option<String>,
    #[serde(default)]
    pub r_frame_rate: Option<String>,
    #[serde(default)]
    pub avg_frame_rate: Option<String>,
    #[serde(default)]
    pub time_base: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub channels: Option<u32>,
    #[serde(default)]
    pub sample_rate: Option<String>,
    #[serde(default)]
    pub disposition: Option<serde_json::Value>,
    #[serde(default)]
    pub color_range: Option<String>,
    #[serde(default)]
    pub color_space: Option<String>,
    #[serde(default)]
    pub color_transfer: Option<String>,
    #[serde(default)]
    pub color_primaries: Option<String>,
    /// Stream metadata (language, title, ...).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Side data: the display matrix among others.
    #[serde(default)]
    pub side_data_list: Vec<serde_json::Value>,
}

impl ProbeStream {
    pub fn is(&self, kind: &str) -> bool {
        self.codec_type.as_deref() == Some(kind)
    }

    /// The display matrix, when the container gives the stream one.
    pub fn display_matrix(&self) -> Option<super::picture::DisplayMatrix> {
        self.side_data_list
            .iter()
            .filter(|d| d.get("side_data_type").and_then(|t| t.as_str()) == Some("Display Matrix"))
            .find_map(|d| {
                d.get("displaymatrix")?
                    .as_str()
                    .and_then(super::picture::parse_display_matrix)
            })
    }

    /// Colour tags as the output should carry them.
    pub fn color(&self) -> super::picture::ColorTags {
        use super::picture::ColorTags;
        ColorTags {
            primaries: ColorTags::tag(self.color_primaries.as_deref()),
            transfer: ColorTags::tag(self.color_transfer.as_deref()),
            matrix: ColorTags::tag(self.color_space.as_deref()),
            range: ColorTags::tag(self.color_range.as_deref()),
        }
    }

    /// Cover art is a "video" stream holding one picture; it is not the video.
    pub fn is_attached_picture(&self) -> bool {
        self.disposition
            .as_ref()
            .and_then(|d| d.get("attached_pic"))
            .and_then(serde_json::Value::as_i64)
            == Some(1)
    }
}

/// A packet as ffprobe's JSON lists it (absent fields are N/A).
#[derive(Debug, Clone, Deserialize)]
pub struct ProbePacket {
    pub stream_index: u32,
    #[serde(default)]
    pub pts: Option<i64>,
    #[serde(default)]
    pub dts: Option<i64>,
    #[serde(default)]
    pub duration: Option<i64>,
    #[serde(default)]
    pub flags: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    pub format: ProbeFormat,
    #[serde(default)]
    pub streams: Vec<ProbeStream>,
    /// Every packet of every stream, in file order, when asked for.
    #[serde(default)]
    pub packets: Vec<ProbePacket>,
    #[serde(default)]
    pub chapters: Vec<serde_json::Value>,
}

impl Probe {
    /// The first real video stream (what `-map 0:v:0` selects, unless it is cover art).
    pub fn video(&self) -> Option<&ProbeStream> {
        self.streams
            .iter()
            .find(|s| s.is("video") && !s.is_attached_picture())
    }

    pub fn audio(&self) -> Option<&ProbeStream> {
        self.streams.iter().find(|s| s.is("audio"))
    }

    /// Packets of one stream, in decode order.
    pub fn packets_of(&self, stream: &ProbeStream) -> Vec<Packet> {
        self.packets
            .iter()
            .filter(|p| p.stream_index == stream.index)
            .map(|p| Packet {
                pts: p.pts,
                dts: p.dts,
                duration: p.duration,
                key: p.flags.starts_with('K'),
            })
            .collect()
    }

    /// Count and presentation span of one stream, from its packets.
    pub fn span(&self, stream: &ProbeStream) -> Option<Span> {
        let tb: Rational = stream.time_base.as_deref()?.parse().ok()?;
        span_of(&self.packets_of(stream), tb)
    }
}

pub fn parse_f64(s: &Option<String>) -> Option<f64> {
    s.as_deref().and_then(|v| v.parse().ok())
}

/// ffprobe arguments for format, streams and chapters as JSON.
pub fn head_args(formats: Option<&str>) -> Vec<OsString> {
    let mut args = base_args(formats);
    args.extend(
        [
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            "-show_chapters",
        ]
        .iter()
        .map(OsString::from),
    );
    args
}

/// Longest packet line ffprobe's compact output can legitimately have.
pub const MAX_PACKET_LINE: usize = 256;

/// What `scan_packets` keeps of each stream it is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Every packet, up to `limit` of them.
    Packets { limit: u64 },
    /// Only the span (count, first and last presentation), counting up to `limit` packets.
    Span { limit: u64 },
}

impl Keep {
    pub fn limit(self) -> u64 {
        match self {
            Keep::Packets { limit } | Keep::Span { limit } => limit,
        }
    }
}

/// The packets or running span of one scanned stream.
#[derive(Debug, Default, Clone)]
pub struct Scanned {
    pub packets: Vec<Packet>,
    pub span: SpanAcc,
}

/// Count and presentation span accumulated packet by packet (same result as `span_of`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanAcc {
    pub count: u64,
    first: Option<i64>,
    /// pts and duration of the latest-presented packet.
    last: Option<(i64, i64)>,
}

impl SpanAcc {
    pub fn push(&mut self, p: &Packet) {
        self.count += 1;
        let Some(pts) = p.pts else { return };
        self.first = Some(self.first.map_or(pts, |f| f.min(pts)));
        if self.last.is_none_or(|(l, _)| pts >= l) {
            self.last = Some((pts, p.duration.unwrap_or(0)));
        }
    }

    pub fn span(&self, time_base: Rational) -> Option<Span> {
        let (first, (last, dur)) = (self.first?, self.last?);
        Some(Span {
            count: self.count,
            start: time_base.seconds(first),
            end: time_base.seconds(last.saturating_add(dur)),
        })
    }
}

/// One compact packet line: its stream index and timing.
pub fn parse_packet_line(line: &str) -> (Option<u32>, Packet) {
    let mut index = None;
    let mut p = Packet {
        pts: None,
        dts: None,
        duration: None,
        key: false,
    };
    for field in line.split('|') {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        match k {
            "stream_index" => index = v.parse().ok(),
            "pts" => p.pts = v.parse().ok(),
            "dts" => p.dts = v.parse().ok(),
            "duration" => p.duration = v.parse().ok(),
            "flags" => p.key = v.starts_with('K'),
            _ => {}
        }
    }
    (index, p)
}

/// One packet of a stream, in decode order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    pub duration: Option<i64>,
    pub key: bool,
}

/// Parses ffprobe's `-of compact=p=0` packet lines (`pts=..|dts=..|duration=..|flags=K_`).
pub fn parse_packets(text: &str) -> Vec<Packet> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_packet_line(line).1)
        .collect()
}

/// Count and presentation span of one stream, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub count: u64,
    pub start: f64,
    pub end: f64,
}

impl Span {
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
}

/// Span of a stream: the first presentation time to the last one plus its duration.
pub fn span_of(packets: &[Packet], time_base: Rational) -> Option<Span> {
    let timed: Vec<&Packet> = packets.iter().filter(|p| p.pts.is_some()).collect();
    let first = timed.iter().filter_map(|p| p.pts).min()?;
    let last = timed.iter().max_by_key(|p| p.pts)?;
    let end = last.pts? + last.duration.unwrap_or(0);
    Some(Span {
        count: packets.len() as u64,
        start: time_base.seconds(first),
        end: time_base.seconds(end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compact_packet_lines() {
        let p = parse_packets(
            "pts=3003|dts=-1001|duration=1001|flags=K_\npts=N/A|dts=0|duration=1001|flags=__\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].pts, Some(3003));
        assert!(p[0].key);
        assert_eq!(p[1].pts, None);
        assert!(!p[1].key);
    }

    #[test]
    fn the_running_span_matches_the_span_of_all_packets() {
        let p = parse_packets(
            "pts=0|dts=-2|duration=1|flags=K_\npts=3|dts=-1|duration=1|flags=__\npts=N/A|dts=0|duration=1|flags=__\npts=2|dts=1|duration=1|flags=__\n",
        );
        let mut acc = SpanAcc::default();
        p.iter().for_each(|x| acc.push(x));
        let tb = Rational::new(1, 10);
        assert_eq!(acc.span(tb), span_of(&p, tb));
        let (i, q) = parse_packet_line("stream_index=3|pts=7|dts=6|duration=1|flags=K__");
        assert_eq!((i, q.pts, q.key), (Some(3), Some(7), true));
    }

    #[test]
    fn span_uses_the_last_presented_packet() {
        let p = parse_packets(
            "pts=0|dts=-2|duration=1|flags=K_\npts=3|dts=-1|duration=1|flags=__\npts=1|dts=0|duration=1|flags=__\npts=2|dts=1|duration=1|flags=__\n",
        );
        let s = span_of(&p, Rational::new(1, 10)).unwrap();
        assert_eq!(s.count, 4);
        assert!((s.duration() - 0.4).abs() < 1e-9);
    }
}
