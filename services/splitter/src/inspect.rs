//! Probing the source and holding it to the configured limits: what kind of file it is, whether
//! it has a usable video stream, and every video packet's timing for the cut planner.
//!
//! A cheap probe (format and streams) is checked against the limits before any packet is read;
//! the packet listing is then scanned with a bound per stream derived from those facts.

use ffleet_runtime::config::Config;
use ffleet_runtime::media::hdr::{Hdr, is_hdr_transfer};
use ffleet_runtime::media::probe::{
    self, Keep, Packet, Probe, ProbeError, ProbeStream, Scanned, parse_f64,
};
use ffleet_runtime::media::tracks::{self, TrackChoice};
use ffleet_runtime::media::{Rational, SOURCE_FORMATS, cuts};
use ffleet_runtime::messages::records::{AudioInfo, Container, SourceInfo, VideoInfo};
use ffleet_runtime::reason::{Failure, Reason};
use std::collections::BTreeMap;
use std::path::Path;

/// The source's facts and its video packets in decode order.
pub struct Inspected {
    pub info: SourceInfo,
    /// The tracks beside the video that the output keeps, and warnings for those it cannot.
    pub tracks: TrackChoice,
    /// Chapters or descriptive container metadata to keep.
    pub extras: bool,
    pub packets: Vec<Packet>,
    /// ffmpeg `-map` of the video stream (cover art is skipped).
    pub video_map: String,
}

fn unreadable(e: ProbeError) -> Failure {
    let detail = match &e {
        ProbeError::Run(r) if !r.stderr_tail().is_empty() => r.stderr_tail().to_owned(),
        other => other.to_string(),
    };
    let reason = match &e {
        ProbeError::Run(r) if r.is_transient() => Reason::Internal,
        _ => Reason::InputUnreadable,
    };
    Failure::new(
        reason,
        format!("ffprobe cannot read the input as a supported media file: {detail}"),
    )
}

#[tracing::instrument(name = "probe", skip_all, err(Display, level = "warn"), fields(ffleet.service = crate::SERVICE))]
pub async fn inspect(
    cfg: &Config,
    path: &Path,
    container: Container,
) -> Result<Inspected, Failure> {
    let size = input_size(cfg, path)?;
    let probe: Probe = probe::probe_head(
        &cfg.tools().ffprobe,
        path,
        Some(SOURCE_FORMATS),
        cfg.limits.probe_timeout(),
        cfg.limits.max_probe_output_bytes,
    )
    .await
    .map_err(unreadable)?;
    let (v, head) = check_head(cfg, &probe)?;
    let mut scanned = scan(cfg, path, &probe, v, head.rate).await?;
    let packets = scanned.remove(&v.index).unwrap_or_default().packets;
    let (start_pts, duration_ticks) = extent(cfg, &packets, head.time_base)?;
    let audio = probe.audio().map(|a| audio_info(a, scanned.get(&a.index)));
    let info = SourceInfo {
        format: probe.format.format_name.clone(),
        size_bytes: size,
        format_start_secs: parse_f64(&probe.format.start_time).unwrap_or(0.0),
        video: VideoInfo {
            codec: v.codec_name.clone().unwrap_or_default(),
            width: head.width,
            height: head.height,
            pix_fmt: v.pix_fmt.clone(),
            frame_rate: head.rate,
            time_base: head.time_base,
            frames: packets.len() as u64,
            start_pts,
            duration_ticks,
            display_matrix: v.display_matrix(),
            color: v.color(),
            hdr: hdr_of(cfg, path, v).await?,
        },
        audio,
    };
    Ok(Inspected {
        info,
        tracks: tracks::choose(&probe, container),
        extras: tracks::has_container_extras(&probe),
        packets,
        video_map: format!("0:v:{}", video_ordinal(&probe, v.index)),
    })
}

/// The stream's HDR metadata: the container's, and where it has no static metadata on an HDR
/// transfer, the first frame's (one more ffprobe run, only for such sources).
async fn hdr_of(cfg: &Config, path: &Path, v: &ProbeStream) -> Result<Hdr, Failure> {
    let stream = Hdr::from_side_data(&v.side_data_list);
    if stream.has_static() || !is_hdr_transfer(v.color().transfer.as_deref()) {
        return Ok(stream);
    }
    let frame = probe::first_frame_side_data(
        &cfg.tools().ffprobe,
        path,
        Some(SOURCE_FORMATS),
        v.index,
        cfg.limits.probe_timeout(),
        cfg.limits.max_probe_output_bytes,
    )
    .await
    .map_err(unreadable)?;
    Ok(stream.or(Hdr::from_side_data(&frame)))
}

/// The input's size, refused when empty or over the limit before ffprobe reads any of it.
fn input_size(cfg: &Config, path: &Path) -> Result<u64, Failure> {
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::new(Reason::InputMissing, format!("cannot stat input: {e}")))?
        .len();
    if size == 0 {
        return Err(Failure::new(Reason::InputEmpty, "input file is empty"));
    }
    let limit = cfg.limits.max_input_bytes;
    if size > limit {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!("input is {size} bytes; the limit is {limit}"),
        ));
    }
    Ok(size)
}

/// What the probe's head says of the video stream, once held to the limits.
struct Head {
    width: u32,
    height: u32,
    time_base: Rational,
    rate: Rational,
}

/// The video stream to cut and its facts from the head, or why the input is refused: checked
/// before a single packet is listed.
fn check_head<'p>(cfg: &Config, probe: &'p Probe) -> Result<(&'p ProbeStream, Head), Failure> {
    let limits = &cfg.limits;
    let v = video_of(probe)?;
    let (width, height) = (v.width.unwrap_or(0), v.height.unwrap_or(0));
    if v.pix_fmt.is_none() {
        return Err(Failure::new(
            Reason::UnsupportedInput,
            format!(
                "the video stream ({}) has no pixel format ffmpeg can decode",
                v.codec_name.as_deref().unwrap_or("unknown codec")
            ),
        ));
    }
    if width == 0 || height == 0 {
        return Err(Failure::new(
            Reason::InputUnreadable,
            "video stream has no dimensions",
        ));
    }
    if width > limits.max_width || height > limits.max_height {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!(
                "video is {width}x{height}; the limit is {}x{}",
                limits.max_width, limits.max_height
            ),
        ));
    }
    let time_base: Rational = v
        .time_base
        .as_deref()
        .and_then(|t| t.parse().ok())
        .filter(Rational::is_valid)
        .ok_or_else(|| Failure::new(Reason::UnsupportedInput, "video stream has no time base"))?;
    let rate = [v.r_frame_rate.as_deref(), v.avg_frame_rate.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|r| r.parse::<Rational>().ok())
        .find(Rational::is_valid)
        .unwrap_or(Rational::new(25, 1));
    if rate.as_f64() > limits.max_frame_rate {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!(
                "frame rate {:.2} exceeds the limit {}",
                rate.as_f64(),
                limits.max_frame_rate
            ),
        ));
    }
    if let Some(d) = parse_f64(&probe.format.duration)
        && d > limits.max_duration_secs
    {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!(
                "duration {d:.0} s exceeds the limit {} s",
                limits.max_duration_secs
            ),
        ));
    }
    let head = Head {
        width,
        height,
        time_base,
        rate,
    };
    Ok((v, head))
}

/// The stream to cut: the input's first video stream.
fn video_of(probe: &Probe) -> Result<&ProbeStream, Failure> {
    probe.video().ok_or_else(|| {
        let kinds: Vec<&str> = probe
            .streams
            .iter()
            .filter_map(|s| s.codec_type.as_deref())
            .collect();
        let found = if kinds.is_empty() {
            "no streams".into()
        } else {
            kinds.join(", ")
        };
        Failure::new(
            Reason::NoVideoStream,
            format!("input has no video stream (found: {found})"),
        )
    })
}

/// Lists the video packets (and spans the audio), each stream bounded by what its head allows.
async fn scan(
    cfg: &Config,
    path: &Path,
    probe: &Probe,
    v: &ProbeStream,
    rate: Rational,
) -> Result<BTreeMap<u32, Scanned>, Failure> {
    let mut wanted = BTreeMap::new();
    let bound = packet_bound(cfg, probe, v, rate.as_f64());
    wanted.insert(v.index, Keep::Packets { limit: bound });
    if let Some(a) = probe.audio() {
        // Audio packets are only counted: their rate (up to one per few samples) says nothing
        // a video rate would, so they get the overall bound.
        wanted.insert(
            a.index,
            Keep::Span {
                limit: cfg.limits.max_packets,
            },
        );
    }
    probe::scan_packets(
        &cfg.tools().ffprobe,
        path,
        Some(SOURCE_FORMATS),
        cfg.limits.probe_timeout(),
        &wanted,
    )
    .await
    .map_err(|e| match e {
        ProbeError::TooManyPackets { stream, limit } => Failure::new(
            Reason::LimitsExceeded,
            format!(
                "stream {stream} has more than {limit} packets, more than its duration and frame \
                 rate (or limits.max_packets) allow"
            ),
        ),
        other => unreadable(other),
    })
}

/// The video's first timestamp and its length in ticks, measured from the packets, refused
/// when it cannot be cut exactly or lasts longer than the limit.
fn extent(cfg: &Config, packets: &[Packet], time_base: Rational) -> Result<(i64, i64), Failure> {
    let first = packets.iter().filter_map(|p| p.pts).min();
    let end = match cuts::stream_end(packets) {
        Ok(end) => Some(end),
        Err(e @ cuts::CutError::MissingTimestamps(_)) => {
            return Err(Failure::new(Reason::UnsupportedInput, e.to_string()));
        }
        Err(cuts::CutError::Empty) => None,
    };
    let (Some(start_pts), Some(end)) = (first, end) else {
        return Err(Failure::new(
            Reason::InputUnreadable,
            "the video stream has no readable frames",
        ));
    };
    if let Err(e) = cuts::safe_cut_points(packets) {
        return Err(Failure::new(Reason::UnsupportedInput, e.to_string()));
    }
    let duration_ticks = end - start_pts;
    let secs = time_base.seconds(duration_ticks);
    let limit = cfg.limits.max_duration_secs;
    if secs > limit {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!("video lasts {secs:.0} s; the limit is {limit} s"),
        ));
    }
    Ok((start_pts, duration_ticks))
}

/// Most video packets the scan keeps: what the longest duration the head claims (or, without
/// one, the duration limit) holds at the stream's frame rate, with slack for rounding and
/// variable frame rates, and never more than `limits.max_packets`.
fn packet_bound(cfg: &Config, probe: &Probe, v: &ProbeStream, rate: f64) -> u64 {
    let limits = &cfg.limits;
    let claimed = [parse_f64(&probe.format.duration), parse_f64(&v.duration)]
        .into_iter()
        .flatten()
        .filter(|d| d.is_finite() && *d > 0.0)
        .fold(None, |m: Option<f64>, d| Some(m.map_or(d, |m| m.max(d))));
    let secs = claimed
        .unwrap_or(limits.max_duration_secs)
        .min(limits.max_duration_secs);
    let frames = secs * rate.clamp(1.0, limits.max_frame_rate);
    ((frames * 2.0) as u64)
        .saturating_add(1000)
        .min(limits.max_packets)
}

/// Audio facts, with start and duration measured from packets (as the output's will be), not
/// taken from container tags.
fn audio_info(a: &ProbeStream, scanned: Option<&Scanned>) -> AudioInfo {
    let span = a
        .time_base
        .as_deref()
        .and_then(|t| t.parse::<Rational>().ok())
        .filter(Rational::is_valid)
        .and_then(|tb| scanned.and_then(|s| s.span.span(tb)));
    AudioInfo {
        codec: a.codec_name.clone().unwrap_or_default(),
        channels: a.channels.unwrap_or(0),
        sample_rate: a
            .sample_rate
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        start_secs: span.map_or_else(|| parse_f64(&a.start_time).unwrap_or(0.0), |s| s.start),
        duration_secs: span.map_or_else(|| parse_f64(&a.duration).unwrap_or(0.0), |s| s.duration()),
        packets: scanned.map_or(0, |s| s.span.count),
    }
}

/// Position of stream `index` among the video streams (`v:N` counts cover art too).
fn video_ordinal(probe: &Probe, index: u32) -> usize {
    probe
        .streams
        .iter()
        .filter(|s| s.is("video"))
        .position(|s| s.index == index)
        .unwrap_or(0)
}
