//! Running ffprobe: format, stream facts and (optionally) every packet's timing, all from one
//! JSON run. Each ffprobe start costs ~0.2 s on a small machine (it loads every codec library),
//! so a file is probed once, not once per question. What it says is parsed by the protocol's
//! data types (`ffleet_protocol::media::probe`, re-exported here).
//!
//! Untrusted sources are probed in two runs instead: a cheap one for format and streams (no
//! packet read, output capped), held to the limits first, then the packet listing read line by
//! line (`scan_packets`), keeping only the wanted streams' packets and stopping once one
//! exceeds what its duration allows: a small file with a million tiny packets costs a bounded
//! amount of memory, never the whole listing.

pub use ffleet_protocol::media::probe::*;

use super::command::{self, RunError};
use super::sandbox::Tool;
use ffleet_protocol::media::args::SegmentStart;
use ffleet_protocol::media::{INTERMEDIATE_FORMAT, Rational};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("ffprobe output did not parse: {0}")]
    Output(String),
    #[error("stream {stream} has more than {limit} packets")]
    TooManyPackets { stream: u32, limit: u64 },
}

/// Format and stream facts of a file, and with `packets` every packet's timing, in one ffprobe
/// run. `formats` restricts the demuxers (untrusted sources); `None` for ffleet's own files.
pub async fn probe(
    ffprobe: &Tool,
    path: &Path,
    formats: Option<&str>,
    packets: bool,
    timeout: Duration,
) -> Result<Probe, ProbeError> {
    let mut args = head_args(formats);
    if packets {
        args.push("-show_entries".into());
        args.push("packet=stream_index,pts,dts,duration,flags".into());
    }
    args.push(file_arg(path));
    // ffleet's own outputs only: a long one's packet listing is legitimately large.
    let limit = if packets {
        usize::MAX
    } else {
        command::CAPTURE_LIMIT
    };
    let out = command::capture_at_most(ffprobe, &args, timeout, limit).await?;
    serde_json::from_slice(&out.stdout).map_err(|e| ProbeError::Output(e.to_string()))
}

/// Format, streams and chapters of an untrusted file: no packet is read, and at most
/// `max_output` bytes of ffprobe's output are accepted.
pub async fn probe_head(
    ffprobe: &Tool,
    path: &Path,
    formats: Option<&str>,
    timeout: Duration,
    max_output: usize,
) -> Result<Probe, ProbeError> {
    let mut args = head_args(formats);
    args.push(file_arg(path));
    let out = command::capture_at_most(ffprobe, &args, timeout, max_output).await?;
    serde_json::from_slice(&out.stdout).map_err(|e| ProbeError::Output(e.to_string()))
}

/// The earliest presentation time among the first video packets of one of ffleet's own
/// intermediates (a cut), with the stream's time base: where its first frame is. The first 32
/// packets cover any reordering depth (a cut starts on a keyframe nothing is shown before, or,
/// the first, with the source's own first packets).
/// `None` when the file has no timed video packet.
pub async fn first_video_pts(
    ffprobe: &Tool,
    path: &Path,
    timeout: Duration,
) -> Result<Option<SegmentStart>, ProbeError> {
    #[derive(serde::Deserialize)]
    struct Out {
        #[serde(default)]
        packets: Vec<P>,
        #[serde(default)]
        streams: Vec<S>,
    }
    #[derive(serde::Deserialize)]
    struct P {
        pts: Option<i64>,
    }
    #[derive(serde::Deserialize)]
    struct S {
        time_base: Option<String>,
    }
    let mut args = base_args(Some(INTERMEDIATE_FORMAT));
    args.extend(
        [
            "-print_format",
            "json",
            "-select_streams",
            "v:0",
            "-read_intervals",
            "%+#32",
            "-show_entries",
            "packet=pts:stream=time_base",
        ]
        .iter()
        .map(OsString::from),
    );
    args.push(file_arg(path));
    let out = command::capture_at_most(ffprobe, &args, timeout, command::CAPTURE_LIMIT).await?;
    let o: Out =
        serde_json::from_slice(&out.stdout).map_err(|e| ProbeError::Output(e.to_string()))?;
    let time_base = o
        .streams
        .first()
        .and_then(|s| s.time_base.as_deref())
        .and_then(|t| t.parse::<Rational>().ok())
        .filter(Rational::is_valid);
    let pts = o.packets.iter().filter_map(|p| p.pts).min();
    Ok(time_base
        .zip(pts)
        .map(|(time_base, pts)| SegmentStart { pts, time_base }))
}

/// The side data of the first frames of stream `index` (HDR10's static metadata lives in the
/// first frame's SEI when the container has none; the first few are read, in case the very
/// first packet does not decode), all frames' lists in one, with at most `max_output` bytes of
/// output.
pub async fn first_frame_side_data(
    ffprobe: &Tool,
    path: &Path,
    formats: Option<&str>,
    index: u32,
    timeout: Duration,
    max_output: usize,
) -> Result<Vec<serde_json::Value>, ProbeError> {
    #[derive(serde::Deserialize)]
    struct Frames {
        #[serde(default)]
        frames: Vec<Frame>,
    }
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(default)]
        side_data_list: Vec<serde_json::Value>,
    }
    let mut args = base_args(formats);
    args.extend(
        [
            "-print_format",
            "json",
            "-select_streams",
            &index.to_string(),
            "-read_intervals",
            "%+#5",
            // `-show_frames` too: without it the side data sections print with no fields.
            "-show_frames",
            "-show_entries",
            "frame=side_data_list",
        ]
        .iter()
        .map(OsString::from),
    );
    args.push(file_arg(path));
    let out = command::capture_at_most(ffprobe, &args, timeout, max_output).await?;
    let f: Frames =
        serde_json::from_slice(&out.stdout).map_err(|e| ProbeError::Output(e.to_string()))?;
    Ok(f.frames
        .into_iter()
        .flat_map(|f| f.side_data_list)
        .collect())
}

/// Reads the packet listing of `path` line by line, keeping for each stream in `wanted` what
/// its `Keep` says; packets of other streams are skipped. A stream past its limit stops
/// ffprobe at once (`ProbeError::TooManyPackets`), so memory is bounded by the limits, not by
/// what the file holds.
pub async fn scan_packets(
    ffprobe: &Tool,
    path: &Path,
    formats: Option<&str>,
    timeout: Duration,
    wanted: &BTreeMap<u32, Keep>,
) -> Result<BTreeMap<u32, Scanned>, ProbeError> {
    let mut args = base_args(formats);
    args.extend(
        [
            // Packets an MPEG program stream leaves unstamped (it stamps only some frames) get
            // the time their decode time and order give them, as the cutting ffmpeg gives them
            // (`args::cut`): the plan and the cuts agree.
            "-fflags",
            "+genpts",
            "-show_entries",
            "packet=stream_index,pts,dts,duration,flags",
            "-of",
            "compact=p=0:nk=0",
        ]
        .iter()
        .map(OsString::from),
    );
    args.push(file_arg(path));
    let mut out: BTreeMap<u32, Scanned> = wanted.keys().map(|&k| (k, Scanned::default())).collect();
    let mut over: Option<(u32, u64)> = None;
    let ran = command::each_line(ffprobe, &args, timeout, MAX_PACKET_LINE, |line| {
        if line.is_empty() {
            return Ok(());
        }
        let (index, p) = parse_packet_line(line);
        let Some((index, keep)) = index.and_then(|i| wanted.get(&i).map(|k| (i, *k))) else {
            return Ok(());
        };
        let s = out.get_mut(&index).expect("wanted streams have an entry");
        if s.span.count >= keep.limit() {
            over = Some((index, keep.limit()));
            return Err(format!(
                "stream {index} has more than {} packets",
                keep.limit()
            ));
        }
        s.span.push(&p);
        if let Keep::Packets { .. } = keep {
            s.packets.push(p);
        }
        Ok(())
    })
    .await;
    match (ran, over) {
        (Err(_), Some((stream, limit))) => Err(ProbeError::TooManyPackets { stream, limit }),
        (Err(e), None) => Err(e.into()),
        (Ok(_), _) => Ok(out),
    }
}
