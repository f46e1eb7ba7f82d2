//! Probing the source and holding it to the configured limits: what kind of file it is, whether
//! it has a usable video stream, and every video packet's timing for the cut planner.

use ffleet_shared::config::Config;
use ffleet_shared::media::probe::{self, Packet, Probe, ProbeError, ProbeStream, parse_f64};
use ffleet_shared::media::tracks::{self, TrackChoice};
use ffleet_shared::media::{Rational, SOURCE_FORMATS, cuts};
use ffleet_shared::messages::records::{AudioInfo, Container, SourceInfo, VideoInfo};
use ffleet_shared::reason::{Failure, Reason};
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
    let limits = &cfg.limits;
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::new(Reason::InputMissing, format!("cannot stat input: {e}")))?
        .len();
    if size == 0 {
        return Err(Failure::new(Reason::InputEmpty, "input file is empty"));
    }
    if size > limits.max_input_bytes {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!(
                "input is {size} bytes; the limit is {}",
                limits.max_input_bytes
            ),
        ));
    }
    let ffprobe = &cfg.ffmpeg.ffprobe;
    // One ffprobe run for streams and every packet: cheaper than one run per question.
    let probe: Probe = probe::probe(
        ffprobe,
        path,
        Some(SOURCE_FORMATS),
        true,
        limits.probe_timeout(),
    )
    .await
    .map_err(unreadable)?;
    let Some(v) = probe.video() else {
        let kinds: Vec<&str> = probe
            .streams
            .iter()
            .filter_map(|s| s.codec_type.as_deref())
            .collect();
        return Err(Failure::new(
            Reason::NoVideoStream,
            format!(
                "input has no video stream (found: {})",
                if kinds.is_empty() {
                    "no streams".into()
                } else {
                    kinds.join(", ")
                }
            ),
        ));
    };
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

    let ordinal = video_ordinal(&probe, v.index);
    let packets = probe.packets_of(v);
    let first = packets.iter().filter_map(|p| p.pts).min();
    let end = cuts::stream_end(&packets);
    let (Some(start_pts), Ok(end)) = (first, end) else {
        return Err(Failure::new(
            Reason::InputUnreadable,
            "the video stream has no readable frames",
        ));
    };
    if let Err(e) = cuts::safe_cut_points(&packets) {
        return Err(Failure::new(Reason::UnsupportedInput, e.to_string()));
    }
    let duration_ticks = end - start_pts;
    if time_base.seconds(duration_ticks) > limits.max_duration_secs {
        return Err(Failure::new(
            Reason::LimitsExceeded,
            format!(
                "video lasts {:.0} s; the limit is {} s",
                time_base.seconds(duration_ticks),
                limits.max_duration_secs
            ),
        ));
    }

    let audio = probe.audio().map(|a| audio_info(&probe, a));
    let info = SourceInfo {
        format: probe.format.format_name.clone(),
        size_bytes: size,
        format_start_secs: parse_f64(&probe.format.start_time).unwrap_or(0.0),
        video: VideoInfo {
            codec: v.codec_name.clone().unwrap_or_default(),
            width,
            height,
            pix_fmt: v.pix_fmt.clone(),
            frame_rate: rate,
            time_base,
            frames: packets.len() as u64,
            start_pts,
            duration_ticks,
            display_matrix: v.display_matrix(),
            color: v.color(),
        },
        audio,
    };
    Ok(Inspected {
        info,
        tracks: tracks::choose(&probe, container),
        extras: tracks::has_container_extras(&probe),
        packets,
        video_map: format!("0:v:{ordinal}"),
    })
}

/// Audio facts, with start and duration measured from packets (as the output's will be), not
/// taken from container tags.
fn audio_info(probe: &Probe, a: &ProbeStream) -> AudioInfo {
    let span = probe.span(a);
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
