//! Every ffmpeg command line ffleet runs. Inputs are always `file:` URLs under a protocol and
//! demuxer whitelist; nothing here goes through a shell.

use super::container::Container;
use super::cuts::Within;
use super::picture::Conversion;
use super::probe::file_arg;
use super::rational::micros_to_secs_string;
use super::tracks::{TrackAction, TrackKind, TrackPlan};
use super::{INTERMEDIATE_FORMAT, PROTOCOLS, Rational, SOURCE_FORMATS};
use std::ffi::OsString;
use std::path::Path;

pub(super) fn os<I, S>(items: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    items.into_iter().map(Into::into).collect()
}

pub(super) fn common() -> Vec<OsString> {
    os([
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "error",
        "-protocol_whitelist",
        PROTOCOLS,
    ])
}

/// File name pattern of the cut segments inside their directory.
pub const CUT_PATTERN: &str = "v%05d.nut";

/// Name of cut segment `index`, matching [`CUT_PATTERN`].
pub fn cut_name(index: u32) -> String {
    format!("v{index:05}.nut")
}

/// Stream-copies one video stream (`map`, e.g. `0:v:0`) into NUT segments that start at the
/// given decode-order packet indices (each a safe keyframe, see `cuts`).
pub fn cut(source: &Path, map: &str, cut_at: &[u64], out_dir: &Path) -> Vec<OsString> {
    let mut a = common();
    // Unstamped packets get the times the probe gave them (`probe::scan_packets`).
    a.extend(os([
        "-fflags",
        "+genpts",
        "-format_whitelist",
        SOURCE_FORMATS,
        "-i",
    ]));
    a.push(file_arg(source));
    // Packets before the first keyframe (a damaged keyframe that lost its flag, a capture that
    // starts mid-GOP) are kept, not dropped as a stream copy drops them by default: the plan
    // counts them, and each segment's decoder judges them as a single ffmpeg's decoder would.
    a.extend(os([
        "-map",
        map,
        "-c",
        "copy",
        "-copyinkf",
        "-fflags",
        "+bitexact",
    ]));
    if cut_at.is_empty() {
        a.extend(os(["-f", INTERMEDIATE_FORMAT, "-y"]));
        a.push(file_arg(&out_dir.join(cut_name(0))));
    } else {
        let frames: Vec<String> = cut_at.iter().map(u64::to_string).collect();
        a.extend(os([
            "-f",
            "segment",
            "-segment_format",
            INTERMEDIATE_FORMAT,
        ]));
        a.push("-segment_frames".into());
        a.push(frames.join(",").into());
        a.extend(os(["-reset_timestamps", "0", "-y"]));
        a.push(file_arg(&out_dir.join(CUT_PATTERN)));
    }
    a
}

/// Where a video segment's first frame is in its cut: its presentation time, `pts` ticks of
/// `time_base`, as the cut file itself says (`probe::first_video_pts`): whatever the cutting
/// ffmpeg did to the source's times (its start taken off, a B-frame delay shifted, a jump in an
/// MPEG-TS source closed), the cut holds the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentStart {
    pub pts: i64,
    pub time_base: Rational,
}

impl SegmentStart {
    /// The filter that puts the segment's first frame at time 0 (see `encode_video`).
    pub fn filter(&self) -> String {
        // Clamped at 0: a time a tick off, rounded the other way than the cut's ffmpeg rounded
        // it, would be a negative time, which NUT refuses.
        format!("setpts=max(0\\,PTS-round({}/TB))", self.secs_expr())
    }

    /// The cut's first frame's time in seconds, as an expression.
    fn secs_expr(&self) -> String {
        format!("{}*{}/{}", self.pts, self.time_base.num, self.time_base.den)
    }

    /// The filters of a segment that lies inside its cut (`within`): a `select` keeping the
    /// segment's frames by their time in the cut (frames dropped for damage move no bound, and a
    /// filter graph rebuilt mid-segment restarts no count), then the segment's first frame put
    /// at 0.
    pub fn filters_within(&self, within: &Within) -> Vec<String> {
        let base = self.secs_expr();
        let tb = within.time_base;
        let (from, to) = within.bounds_secs();
        let mut keep = Vec::new();
        if let Some(from) = from {
            keep.push(format!("gte(t\\,{base}+{from:.9})"));
        }
        if let Some(to) = to {
            keep.push(format!("lt(t\\,{base}+{to:.9})"));
        }
        let mut out = Vec::new();
        if !keep.is_empty() {
            out.push(format!("select={}", keep.join("*")));
        }
        out.push(format!(
            "setpts=max(0\\,PTS-round(({base}+{}*{}/{})/TB))",
            within.start_ticks, tb.num, tb.den
        ));
        out
    }
}

/// Encodes one cut segment with the given video settings (see `profiles::video_settings`),
/// converting its pictures as `conversion` says (orientation, chroma grid, colour; see
/// `picture`). The conversion's filters run before any filter the profile has.
///
/// With `start` (the cut's own time of the segment's first frame), the segment's first frame is
/// put at exactly 0 from it: the input's timestamps are kept as they are (`-copyts`) and `start`
/// is taken off. Left to itself, ffmpeg rebases an input by the start time its demuxer works
/// out, which the NUT demuxer leaves unknown for a file of a frame or two: such a segment kept
/// its place in the source, and the concat demuxer, which places each file by its own start
/// time (0 when unknown), moved it that far again (a 1 fps source cut into 1 s segments merged
/// to 119 s for 60). The offset is fixed, not the first frame's own (`STARTPTS`), which ffmpeg
/// takes again when a resolution change rebuilds the filter graph mid-segment. NUT stores
/// presentation times only, so nothing needs the muxer's shift of a B-frame encoder's delay
/// either (`-avoid_negative_ts disabled`). Without `start` (the cut's times could not be read),
/// the encode runs as earlier releases ran it.
///
/// With `within` (a segment inside its cut, and its frame count), the lead-in and the frames
/// after the segment are decoded and dropped by their times (`SegmentStart::filters_within`),
/// and the decode stops once the segment's frames are out. It needs `start`.
pub fn encode_video(
    input: &Path,
    video_settings: &[String],
    conversion: Option<&Conversion>,
    start: Option<&SegmentStart>,
    within: Option<(&Within, u64)>,
    output: &Path,
) -> Vec<OsString> {
    let mut a = common();
    // ffmpeg gives up (exit 69, nothing printed) once more than 2/3 of its decode calls failed.
    // Damage concentrates: a damaged keyframe is no cut point, so one segment can hold a whole
    // damaged stretch and cross that rate where the file, decoded whole, does not. The segment
    // is decoded as the whole file would be, and the file's rate is judged at the merge.
    a.extend(os(["-max_error_rate", "1"]));
    if start.is_some() {
        a.push("-copyts".into());
    }
    a.extend(os(["-format_whitelist", INTERMEDIATE_FORMAT, "-i"]));
    a.push(file_arg(input));
    a.extend(os(["-map", "0:v:0", "-an", "-sn", "-dn"]));
    let leading: Vec<String> = match (start, within) {
        (Some(s), Some((w, _))) => s.filters_within(w),
        (s, _) => s.map(SegmentStart::filter).into_iter().collect(),
    };
    a.extend(os(with_filters(video_settings, &leading, conversion)));
    if start.is_some() {
        a.extend(os(["-avoid_negative_ts", "disabled"]));
    }
    if let (Some(_), Some((_, frames))) = (start, within) {
        // Stops the decode once the segment's frames are out: the rest of the cut is the next
        // segments'.
        a.push("-frames:v".into());
        a.push(frames.to_string().into());
    }
    a.extend(os([
        "-fflags",
        "+bitexact",
        "-progress",
        "pipe:1",
        "-f",
        INTERMEDIATE_FORMAT,
        "-y",
    ]));
    a.push(file_arg(output));
    a
}

/// Whether `arg` sets the video filter chain of an encode that maps one video stream: `-vf`,
/// and `-filter` with no stream specifier or one that can name the video stream.
fn sets_video_filters(arg: &str) -> bool {
    arg == "-vf"
        || arg == "-filter"
        || arg.strip_prefix("-filter:").is_some_and(|spec| {
            !spec.starts_with('a') && !spec.starts_with('s') && !spec.starts_with('d')
        })
}

/// The video settings with `leading` filters and the conversion's joined in front of the
/// profile's own chain (ffmpeg takes one filter chain per stream, the last given), and the
/// conversion's colour tags and HDR parameters added.
fn with_filters(
    settings: &[String],
    leading: &[String],
    conversion: Option<&Conversion>,
) -> Vec<String> {
    let mut leading = leading.to_vec();
    if let Some(c) = conversion {
        leading.extend(c.filters.iter().cloned());
    }
    let mut out = settings.to_vec();
    let vf = out.iter().rposition(|a| sets_video_filters(a));
    match vf {
        Some(i) if i + 1 < out.len() && !leading.is_empty() => {
            out[i + 1] = format!("{},{}", leading.join(","), out[i + 1]);
        }
        None if !leading.is_empty() => {
            out.push("-vf".into());
            out.push(leading.join(","));
        }
        _ => {}
    }
    if let Some(c) = conversion {
        out.extend(c.output_args.iter().cloned());
        c.hdr.apply(&mut out);
    }
    out
}

/// Encodes every non-video track the plan keeps, once, for the whole file, keeping timestamps
/// relative to the source's start as a single ffmpeg process would: audio with the profile's
/// audio settings, subtitles copied or converted, attachments copied, and the source's chapters
/// and container metadata (the merger takes them from here).
pub fn encode_tracks(
    source: &Path,
    audio_args: &[String],
    tracks: &[TrackPlan],
    container: Container,
    output: &Path,
) -> Vec<OsString> {
    let mut a = common();
    // Alone, the audio's error rate is not the file's: a single ffmpeg counts the video's
    // decode calls beside it. The merge judges the file's rate from the failures reported,
    // every one of them (repeated lines unfolded).
    a.extend(os(["-loglevel", "repeat+error", "-max_error_rate", "1"]));
    a.extend(os(["-format_whitelist", SOURCE_FORMATS, "-i"]));
    a.push(file_arg(source));
    a.extend(os(["-map_metadata", "0", "-map_chapters", "0"]));
    for t in tracks {
        a.push("-map".into());
        a.push(format!("0:{}", t.index).into());
    }
    a.extend(os(["-vn", "-dn"]));
    if tracks.iter().any(|t| t.kind == TrackKind::Audio) {
        a.extend(os(audio_args));
    }
    let subtitles = tracks.iter().filter(|t| t.kind == TrackKind::Subtitle);
    for (n, t) in subtitles.enumerate() {
        a.push(format!("-c:s:{n}").into());
        a.push(match &t.action {
            TrackAction::Convert(codec) => codec.into(),
            _ => "copy".into(),
        });
    }
    if tracks.iter().any(|t| t.kind == TrackKind::Attachment) {
        a.extend(os(["-c:t", "copy"]));
    }
    let muxer = match container.audio_intermediate_ext() {
        "m4a" => "mp4",
        _ => "matroska",
    };
    a.extend(os([
        "-fflags",
        "+bitexact",
        "-progress",
        "pipe:1",
        "-f",
        muxer,
        "-y",
    ]));
    a.push(file_arg(output));
    a
}

/// One entry of the concat list: a file name relative to the list, and its exact duration.
pub struct ConcatEntry {
    pub file_name: String,
    pub duration_us: i64,
}

/// ffconcat list text. Durations come from the source's timestamps, so the concat demuxer
/// places every segment exactly where its frames were in the source. (It places each file by
/// the file's own start, its first frame: a segment whose first frames the decoder dropped
/// moves early by them. An `inpoint 0` would keep it in place, but the concat demuxer then
/// seeks the NUT file, which NUT refuses.)
pub fn concat_list(entries: &[ConcatEntry]) -> String {
    let mut s = String::from("ffconcat version 1.0\n");
    for e in entries {
        s.push_str(&format!(
            "file {}\nduration {}\n",
            e.file_name,
            micros_to_secs_string(e.duration_us)
        ));
    }
    s
}

/// Concatenates the encoded segments (stream copy), adds the encoded audio, and writes the
/// output. `video_offset_us` places the first frame where it was relative to the source's start,
/// which keeps audio in sync when the streams did not start together. HEVC in MP4/MOV is tagged
/// `hvc1` (parameter sets in the sample description), which Apple's players require; ffmpeg's
/// default `hev1` they refuse.
pub fn merge(
    list: &Path,
    audio: Option<&Path>,
    video_offset_us: i64,
    container: Container,
    hevc: bool,
    output: &Path,
) -> Vec<OsString> {
    let mut a = common();
    a.extend(os(["-copyts", "-itsoffset"]));
    a.push(micros_to_secs_string(video_offset_us).into());
    a.extend(os([
        "-f",
        "concat",
        "-safe",
        "1",
        "-format_whitelist",
        "concat,nut",
        "-i",
    ]));
    a.push(file_arg(list));
    if let Some(audio) = audio {
        a.extend(os(["-format_whitelist", "mov,mp4,m4a,matroska", "-i"]));
        a.push(file_arg(audio));
    }
    a.extend(os(["-map", "0:v:0"]));
    // Every track, the chapters and the container metadata come from the tracks intermediate.
    let extras = if audio.is_some() { "1" } else { "-1" };
    if audio.is_some() {
        // Not `-map 1`: an MP4 intermediate with chapters exposes its chapter track as a data
        // stream, which the output writes anew from the chapters.
        a.extend(os(["-map", "1:a?", "-map", "1:s?", "-map", "1:t?"]));
    }
    a.extend(os([
        "-c",
        "copy",
        "-map_metadata",
        extras,
        "-map_chapters",
        extras,
        "-fflags",
        "+bitexact",
    ]));
    if matches!(container, Container::Mp4 | Container::Mov) {
        a.extend(os(["-movflags", "+faststart"]));
        if hevc {
            a.extend(os(["-tag:v", "hvc1"]));
        }
    }
    a.extend(os(["-progress", "pipe:1", "-f", container.muxer(), "-y"]));
    a.push(file_arg(output));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_list_has_exact_durations() {
        let text = concat_list(&[
            ConcatEntry {
                file_name: "v00000.a1.nut".into(),
                duration_us: 4_804_800,
            },
            ConcatEntry {
                file_name: "v00001.a2.nut".into(),
                duration_us: 5_572_233,
            },
        ]);
        assert_eq!(
            text,
            "ffconcat version 1.0\nfile v00000.a1.nut\nduration 4.804800\nfile v00001.a2.nut\nduration 5.572233\n"
        );
    }

    fn strs(a: Vec<OsString>) -> Vec<String> {
        a.iter().map(|x| x.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn every_segment_encode_starts_its_first_frame_at_zero() {
        let start = SegmentStart {
            pts: 123_456,
            time_base: Rational::new(1, 12_800),
        };
        let filter = "setpts=max(0\\,PTS-round(123456*1/12800/TB))";
        assert_eq!(start.filter(), filter);
        let plain = strs(encode_video(
            Path::new("/s/v.nut"),
            &["-c:v".into(), "libx264".into()],
            None,
            Some(&start),
            None,
            Path::new("/s/o.nut"),
        ));
        assert!(plain.windows(2).any(|w| w[0] == "-vf" && w[1] == filter));
        assert!(plain.contains(&"-copyts".to_string()));
        assert!(
            plain
                .windows(2)
                .any(|w| w[0] == "-avoid_negative_ts" && w[1] == "disabled")
        );
        // A profile's own chain runs after it, still as one chain, whichever spelling it uses.
        for flag in ["-vf", "-filter", "-filter:v", "-filter:0", "-filter:v:0"] {
            let own = strs(encode_video(
                Path::new("/s/v.nut"),
                &[flag.into(), "scale=64:-2".into()],
                None,
                Some(&start),
                None,
                Path::new("/s/o.nut"),
            ));
            assert_eq!(
                own.iter().filter(|a| sets_video_filters(a)).count(),
                1,
                "{flag}"
            );
            assert!(
                own.contains(&format!("{filter},scale=64:-2")),
                "{flag}: {own:?}"
            );
        }
        // No start (the cut's times unread): run as earlier releases ran it.
        let old = strs(encode_video(
            Path::new("/s/v.nut"),
            &["-c:v".into(), "libx264".into()],
            None,
            None,
            None,
            Path::new("/s/o.nut"),
        ));
        assert!(
            !old.iter()
                .any(|a| a == "-vf" || a == "-copyts" || a == "-avoid_negative_ts")
        );
    }

    #[test]
    fn inputs_are_forced_to_the_file_protocol() {
        let a = cut(
            Path::new("/in/concat:x|y.mp4"),
            "0:v:0",
            &[10, 20],
            Path::new("/s"),
        );
        let s: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert!(s.contains(&"file:/in/concat:x|y.mp4".to_string()));
        assert!(s.contains(&"10,20".to_string()));
        assert!(
            s.windows(2)
                .any(|w| w[0] == "-protocol_whitelist" && w[1] == "file,pipe")
        );
    }

    #[test]
    fn a_segment_inside_its_cut_keeps_its_frames_by_time() {
        let start = SegmentStart {
            pts: 512,
            time_base: Rational::new(1, 12_800),
        };
        let within = Within {
            skip_frames: 25,
            start_ticks: 12_800,
            before_ticks: Some(12_288),
            last_ticks: 24_576,
            next_ticks: Some(25_600),
            time_base: Rational::new(1, 12_800),
        };
        let a = strs(encode_video(
            Path::new("/s/v.nut"),
            &["-c:v".into(), "libx264".into()],
            None,
            Some(&start),
            Some((&within, 25)),
            Path::new("/s/o.nut"),
        ));
        let vf = a
            .windows(2)
            .find(|w| w[0] == "-vf")
            .map(|w| w[1].clone())
            .unwrap();
        assert_eq!(
            vf,
            "select=gte(t\\,512*1/12800+0.980000000)*lt(t\\,512*1/12800+1.960000000),\
             setpts=max(0\\,PTS-round((512*1/12800+12800*1/12800)/TB))"
        );
        assert!(a.windows(2).any(|w| w[0] == "-frames:v" && w[1] == "25"));
        // The first segment of a shared cut has no lower bound.
        let first = Within {
            skip_frames: 0,
            start_ticks: 0,
            before_ticks: None,
            ..within
        };
        let f = start.filters_within(&first);
        assert!(f[0].starts_with("select=lt(t"), "{f:?}");
    }
}
