//! Verifying a merged output against the source before it is moved into place: the same number
//! of video frames, the same duration within one frame, and audio present with the source
//! audio's duration within one frame.

use ffleet_runtime::config::Config;
use ffleet_runtime::media::probe::{self, ProbeError, Span};
use ffleet_runtime::media::tracks::{TrackKind, TrackPlan};
use ffleet_runtime::messages::records::SourceInfo;
use std::path::Path;

/// What the output must hold beyond the source's facts.
pub struct Expected<'a> {
    /// Video frames: the source's, less any the decoder dropped from damaged input.
    pub frames: u64,
    /// Every track beside the video that the plan keeps.
    pub tracks: &'a [TrackPlan],
    /// Audio packets the tracks unit could not decode: the audio may come out shorter by them
    /// (lost at its end, as a single ffmpeg loses them), never longer.
    pub audio_lost: u64,
    /// Source time before the output's first frame (segments that decoded to nothing, frames a
    /// segment lost at its start): the video may be shorter by it, beside the frames dropped.
    /// A capture joined mid-GOP loses a stretch whose frames are fewer than its time holds.
    pub lead_secs: f64,
    /// Of the frames the output lacks, those lost before its first frame (`lead_secs` holds
    /// their time).
    pub lead_frames: u64,
}

/// What the output got wrong.
#[derive(Debug, thiserror::Error)]
pub enum Mismatch {
    #[error("cannot read the output: {0}")]
    Unreadable(#[source] ProbeError),
    #[error("the output has no video stream")]
    NoVideo,
    #[error("output has {got} video frames, the encoded segments {want} (source {in_source})")]
    Frames { got: u64, want: u64, in_source: u64 },
    #[error("output has {got} {kind} tracks, the plan {want}")]
    Tracks {
        kind: &'static str,
        got: usize,
        want: usize,
    },
    #[error("output video lasts {got:.3} s, the source {want:.3} s")]
    VideoDuration { got: f64, want: f64 },
    #[error("the output lost the source's audio")]
    NoAudio,
    #[error("output audio lasts {got:.3} s, the source {want:.3} s")]
    AudioDuration { got: f64, want: f64 },
}

/// Returns the output's video span, or what did not match. One ffprobe run reads every stream.
#[tracing::instrument(name = "verify", skip_all, err(Display, level = "warn"), fields(ffleet.service = crate::SERVICE))]
pub async fn verify(
    cfg: &Config,
    src: &SourceInfo,
    expected: &Expected<'_>,
    path: &Path,
) -> Result<Span, Mismatch> {
    let timeout = cfg.limits.probe_timeout() * 4;
    let out = probe::probe(&cfg.tools().ffprobe, path, None, true, timeout)
        .await
        .map_err(Mismatch::Unreadable)?;
    let video = out
        .video()
        .and_then(|v| out.span(v))
        .ok_or(Mismatch::NoVideo)?;
    let v = &src.video;
    if video.count != expected.frames {
        return Err(Mismatch::Frames {
            got: video.count,
            want: expected.frames,
            in_source: v.frames,
        });
    }
    for (kind, name) in [
        (TrackKind::Audio, "audio"),
        (TrackKind::Subtitle, "subtitle"),
    ] {
        let want = expected.tracks.iter().filter(|t| t.kind == kind).count();
        let got = out.streams.iter().filter(|s| s.is(name)).count();
        if got != want {
            return Err(Mismatch::Tracks {
                kind: name,
                got,
                want,
            });
        }
    }
    let frame = v.frame_secs();
    let tolerance = frame * 1.01 + 1e-3;
    // Frames the decoder dropped at either end shorten the video, as they do a single ffmpeg's.
    // Those before the first frame, by the time they took (a capture joined mid-GOP loses a
    // stretch whose frames are fewer than its time holds); the others, a frame's time each.
    let lost = v.frames.saturating_sub(expected.frames);
    let dropped =
        lost.saturating_sub(expected.lead_frames) as f64 * frame + expected.lead_secs.max(0.0);
    let got = video.duration();
    if got > v.duration_secs() + tolerance || got < v.duration_secs() - dropped - tolerance {
        return Err(Mismatch::VideoDuration {
            got: video.duration(),
            want: v.duration_secs(),
        });
    }
    if let Some(a) = &src.audio {
        let span = out
            .audio()
            .and_then(|s| out.span(s))
            .ok_or(Mismatch::NoAudio)?;
        let lost = if a.packets > 0 {
            a.duration_secs * a.packets.min(expected.audio_lost) as f64 / a.packets as f64
        } else {
            0.0
        };
        let (got, want) = (span.duration(), a.duration_secs);
        if want > 0.0 && (got > want + tolerance || got < want - lost - tolerance) {
            return Err(Mismatch::AudioDuration { got, want });
        }
    }
    Ok(video)
}
