//! Running one unit's ffmpeg: the command from the profile, limits from the unit's duration,
//! progress forwarded to the caller, and a check (from ffmpeg's final progress report) that the
//! result holds what it must.

use ffleet_runtime::config::Config;
use ffleet_runtime::media::args;
use ffleet_runtime::media::command::{self, Limits, RunError};
use ffleet_runtime::media::probe;
use ffleet_runtime::media::progress::ProgressBlock;
use ffleet_runtime::messages::Task;
use ffleet_runtime::messages::records::Container;
use ffleet_runtime::profiles::{self, Profile};
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::{Capability, telemetry};
use std::path::Path;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub enum EncodeError {
    /// This node could not run the encode (ffmpeg would not start, i/o with it failed): the
    /// node's fault, not the unit's; another node tries, and no budget is spent.
    NodeFault(String),
    /// The run was cut short (it stalled, a signal killed it, it ended without its final
    /// report): the unit's own failure, counted against its budget, but no verdict on the input.
    CutShort(Failure),
    /// ffmpeg's verdict: will fail again on this input.
    Permanent(Failure),
    Cancelled,
}

pub struct Encoded {
    pub frames: u64,
    pub secs: f64,
    /// Error lines the decoder wrote (damaged input it concealed or skipped); for the tracks
    /// unit, the decode calls that failed.
    pub decode_errors: u64,
    /// Decode calls that failed (`Error while decoding stream`), every stream.
    pub decode_failures: u64,
}

fn classify(e: RunError, task: &Task) -> EncodeError {
    let failure = |e: &dyn std::fmt::Display| {
        Failure::new(
            Reason::EncodeFailed,
            format!("{} of job {} failed: {e}", task.unit, task.job_id),
        )
    };
    match e {
        RunError::Cancelled { .. } => EncodeError::Cancelled,
        RunError::Spawn { .. } | RunError::Io { .. } => EncodeError::NodeFault(e.to_string()),
        e if e.is_transient() => EncodeError::CutShort(failure(&e)),
        e => EncodeError::Permanent(failure(&e)),
    }
}

/// What to encode and with which settings.
pub struct Unit<'a> {
    pub task: &'a Task,
    pub profile: &'a Profile,
    pub variant: &'a profiles::Variant,
    /// When the task message was stored in its queue (its release), if the server said.
    pub released: Option<time::OffsetDateTime>,
    /// Its ffmpeg's hard limit and stall timeout (`EncoderConfig::limits`).
    pub limits: Limits,
}

pub async fn run(
    cfg: &Config,
    unit: Unit<'_>,
    input: &Path,
    output: &Path,
    cancel: &CancellationToken,
    on_progress: impl FnMut(&ProgressBlock),
) -> Result<Encoded, EncodeError> {
    let task = unit.task;
    // Where the cut's first frame is, read from the cut (one short ffprobe): the encode puts it
    // at 0 by that (`args::encode_video`). Unread, the encode runs as earlier releases ran it.
    // It reads a few packets of a local file: held to the stall timeout, and a probe that hangs
    // is a stalled child like a stalled encode (the unit goes back at once).
    let start = if task.unit.is_audio() {
        None
    } else {
        let (ffprobe, bound) = (cfg.tools().ffprobe, cfg.ffmpeg.stall_timeout());
        let probed = tokio::select! {
            _ = cancel.cancelled() => return Err(EncodeError::Cancelled),
            p = probe::first_video_pts(&ffprobe, input, bound) => p,
        };
        match probed {
            Ok(s) => s,
            Err(probe::ProbeError::Run(RunError::TimedOut { .. })) => {
                tracing::warn!(job = %task.job_id, unit = %task.unit, limit_secs = bound.as_secs_f64(), "ffprobe of the cut made no progress; unit handed back");
                return Err(EncodeError::CutShort(Failure::new(
                    Reason::EncodeFailed,
                    format!(
                        "{} of job {}: ffprobe of the cut made no progress for {:.0} s",
                        task.unit,
                        task.job_id,
                        bound.as_secs_f64()
                    ),
                )));
            }
            Err(e) => {
                tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "cut's first frame time unread; encoding without it");
                None
            }
        }
    };
    let cmd = command_for(&unit, input, start.as_ref(), output)?;
    let limits = unit.limits;
    let started = Instant::now();
    // ffmpeg's last progress block counts what it encoded: checking it costs no ffprobe run.
    let mut last = ProgressBlock::default();
    let mut on_progress = on_progress;
    let ran = command::run_with_progress(&cfg.tools().ffmpeg, &cmd, limits, cancel, |b| {
        last = b.clone();
        on_progress(b);
    })
    .await;
    let ran = match ran {
        // A stop asked for ends the run however ffmpeg exited (one that caught the signal
        // itself flushes and exits 1).
        Err(_) if cancel.is_cancelled() => return Err(EncodeError::Cancelled),
        Err(e) if !task.unit.is_audio() && nothing_decodable(&e, all_headless(task)) => {
            let encoded = nothing_decoded(task, &e, output, started).await?;
            return check_result(task, &last, encoded, None);
        }
        r => r.map_err(|e| classify(e, task))?,
    };
    // The tracks unit reports the failed decode calls of the first audio track (the one whose
    // packets the source's facts count): the merge judges the file's error rate by them, beside
    // the video frames the segments could not decode.
    let decode_errors = if task.unit.is_audio() {
        task.tracks
            .iter()
            .find(|t| t.kind == ffleet_runtime::media::tracks::TrackKind::Audio)
            .and_then(|t| ran.decode_failures.get(&t.index))
            .copied()
            .unwrap_or(0)
    } else {
        ran.stderr_lines
    };
    let video_decode_failures: u64 = ran.decode_failures.values().sum();
    let secs = started.elapsed().as_secs_f64();
    if !last.end {
        return Err(EncodeError::CutShort(Failure::new(
            Reason::EncodeFailed,
            format!(
                "{} of job {}: ffmpeg exited without its final progress report",
                task.unit, task.job_id
            ),
        )));
    }
    let cap = task.capability.clone().unwrap_or_else(Capability::cpu);
    let video = !task.unit.is_audio();
    telemetry::spans::encoded(&cap, &cmd, &last, task.duration_secs, secs, video);
    let encoded = Encoded {
        decode_failures: video_decode_failures,
        frames: if task.unit.is_audio() {
            0
        } else {
            last.frame.unwrap_or(0)
        },
        secs,
        decode_errors,
    };
    // A result short of frames where the segment has frames before the source's first
    // keyframe: where its first frame lies says whether those are the ones lost. Only an encode
    // that put the segment's first frame at 0 (`start`) says it.
    let short_headless = task.headless > 0
        && encoded.frames > 0
        && task
            .expected_frames
            .is_some_and(|want| encoded.frames < want);
    let first_secs = match &start {
        Some(_) if short_headless => tokio::select! {
            _ = cancel.cancelled() => return Err(EncodeError::Cancelled),
            f = first_frame_secs(cfg, task, output) => f,
        },
        _ => None,
    };
    match check_result(task, &last, encoded, first_secs) {
        // Where the result starts went unread (a probe that failed, or a cut whose first frame
        // time was unread): no verdict on the input, and another attempt reads it again.
        Err(EncodeError::Permanent(f)) if short_headless && first_secs.is_none() => {
            Err(EncodeError::CutShort(f))
        }
        r => r,
    }
}

/// The result's first frame time in seconds (its encode put the segment's first frame at 0);
/// `None` when unread.
async fn first_frame_secs(cfg: &Config, task: &Task, output: &Path) -> Option<f64> {
    let (ffprobe, bound) = (cfg.tools().ffprobe, cfg.ffmpeg.stall_timeout());
    match probe::first_video_pts(&ffprobe, output, bound).await {
        Ok(start) => start.map(|s| s.time_base.seconds(s.pts)),
        Err(e) => {
            tracing::warn!(job = %task.job_id, unit = %task.unit, error = %e, "result's first frame time unread");
            None
        }
    }
}

/// The ffmpeg command for the unit: the tracks unit's audio (and other tracks) encode, or a
/// video segment's encode with the picture conversion the profile needs.
fn command_for(
    unit: &Unit<'_>,
    input: &Path,
    start: Option<&args::SegmentStart>,
    output: &Path,
) -> Result<Vec<std::ffi::OsString>, EncodeError> {
    let (task, profile, variant) = (unit.task, unit.profile, unit.variant);
    if task.unit.is_audio() {
        let container = if task.result_ext == "mka" {
            Container::Matroska
        } else {
            Container::Mp4
        };
        return Ok(args::encode_tracks(
            input,
            &profile.audio,
            &task.tracks,
            container,
            output,
        ));
    }
    let within = match (&task.within, start) {
        (Some(w), Some(_)) => match task.expected_frames {
            Some(frames) => Some((w, frames)),
            None => {
                return Err(EncodeError::Permanent(Failure::new(
                    Reason::Internal,
                    format!(
                        "{} of job {}: a segment inside its cut came without its frame count",
                        task.unit, task.job_id
                    ),
                )));
            }
        },
        (Some(_), None) => {
            // The segment is found in its cut by time: without the cut's times it cannot be.
            return Err(EncodeError::CutShort(Failure::new(
                Reason::EncodeFailed,
                format!(
                    "{} of job {}: the cut's first frame time is unread, so the segment \
                     cannot be found inside it",
                    task.unit, task.job_id
                ),
            )));
        }
        (None, _) => None,
    };
    let settings = profiles::video_settings(variant, task.quality);
    let conversion = match &task.picture {
        Some(p) => Some(p.conversion(variant.pix_fmt()).ok_or_else(|| {
            EncodeError::Permanent(Failure::new(
                Reason::UnsupportedInput,
                format!("{}x{} pictures cannot be converted", p.width, p.height),
            ))
        })?),
        None => None,
    };
    Ok(args::encode_video(
        input,
        &settings,
        conversion.as_ref(),
        start,
        within,
        output,
    ))
}

/// ffmpeg's message when a stream's filters never saw a frame: every decode call of the segment
/// failed, so it never learnt the picture's format.
const NO_FRAME_DECODED: &str = "Cannot determine format of input stream";

/// How ffmpeg reports a decode call that failed on the data itself (damage), as opposed to one
/// that failed for the decoder's own want (memory, an unimplemented feature, a missing decoder).
const DAMAGED_DATA: &str = "Invalid data found when processing input";

/// Whether every frame of the segment lies before the source's first keyframe (a capture that
/// starts mid-GOP): none may decode, with no failed decode call.
fn all_headless(task: &Task) -> bool {
    task.headless > 0 && task.expected_frames == Some(task.headless)
}

/// Whether a failed encode failed only because not one frame of its segment could be decoded
/// (a destroyed first second, say, or a segment wholly before a capture's first keyframe,
/// `headless`): a single ffmpeg decoding the file drops those frames and goes on, so the
/// segment holds no frames rather than failing. Every failed decode call in the stderr kept
/// must have failed on its data: a decoder that failed for want of memory or of support is no
/// damage, and fails the unit as before. Only a headless segment may have no failed call.
fn nothing_decodable(e: &RunError, headless: bool) -> bool {
    let RunError::Failed {
        signalled: false,
        stderr_tail,
        decode_failures,
        ..
    } = e
    else {
        return false;
    };
    let decode_lines: Vec<&str> = stderr_tail
        .lines()
        .filter(|l| l.contains(command::DECODE_FAILED))
        .collect();
    let failed_calls = decode_failures.values().sum::<u64>() > 0 && !decode_lines.is_empty();
    stderr_tail.contains(NO_FRAME_DECODED)
        && (failed_calls || headless)
        && decode_lines.iter().all(|l| l.contains(DAMAGED_DATA))
}

/// The result of a segment none of whose frames decoded: an empty file (the merge fetches no
/// result of no frames), no frames, its failed decode calls counted.
async fn nothing_decoded(
    task: &Task,
    e: &RunError,
    output: &Path,
    started: Instant,
) -> Result<Encoded, EncodeError> {
    let failed = match e {
        RunError::Failed {
            decode_failures, ..
        } => decode_failures.values().sum::<u64>(),
        _ => 0,
    };
    tokio::fs::write(output, b"")
        .await
        .map_err(|io| EncodeError::NodeFault(format!("writing an empty result: {io}")))?;
    tracing::warn!(job = %task.job_id, unit = %task.unit, decode_failures = failed, "damaged input: no frame of the segment decodes");
    Ok(Encoded {
        decode_failures: failed,
        frames: 0,
        secs: started.elapsed().as_secs_f64(),
        decode_errors: failed,
    })
}

/// Checks a finished encode against what the unit should hold, from ffmpeg's final progress
/// report: audio that holds audio, a segment with its planned frame count (fewer only when the
/// decoder dropped damaged frames, as a single ffmpeg does).
///
/// `first_secs`: where the result's first frame lies, read only for a result short of frames
/// whose segment has frames before the source's first keyframe (`Task::headless`).
fn check_result(
    task: &Task,
    last: &ProgressBlock,
    encoded: Encoded,
    first_secs: Option<f64>,
) -> Result<Encoded, EncodeError> {
    let check = |what: String| {
        EncodeError::Permanent(Failure::new(
            Reason::EncodeFailed,
            format!("{} of job {}: {what}", task.unit, task.job_id),
        ))
    };
    if task.unit.is_audio() {
        if last.out_time_us.unwrap_or(0) <= 0 {
            return Err(check("encoded audio holds no audio".into()));
        }
        return Ok(encoded);
    }
    let (frames, decode_errors) = (encoded.frames, encoded.decode_errors);
    match task.expected_frames {
        // A capture that starts mid-GOP: the decoder dropped frames before the source's first
        // keyframe, which it cannot reconstruct, as a single ffmpeg's decoder drops them. No
        // more than those, and the ones leading the segment among them: the result starts no
        // earlier than halfway to the first frame that can decode, else frames went missing
        // elsewhere.
        Some(want)
            if frames < want
                && want - frames <= task.headless
                && (frames == 0 || first_secs.is_some_and(|f| f >= task.headless_secs)) =>
        {
            tracing::info!(job = %task.job_id, unit = %task.unit, frames, want, headless = task.headless, "frames before the source's first keyframe dropped (capture starts mid-GOP)");
            Ok(encoded)
        }
        // Damaged input: the decoder dropped frames it could not conceal, exactly as a single
        // ffmpeg decoding the file drops them, down to every frame of the segment (a damaged
        // stretch cut into several segments). Frames missing without a decode error are an
        // error.
        // A segment of no frames at all needs decode calls that failed, not just any error line.
        Some(want)
            if frames < want
                && decode_errors > 0
                && (frames > 0 || encoded.decode_failures > 0) =>
        {
            tracing::warn!(job = %task.job_id, unit = %task.unit, frames, want, decode_errors, "damaged input: decoder dropped frames");
            Ok(encoded)
        }
        Some(want) if want != frames => Err(check(format!(
            "encoded {frames} frames, the segment should hold {want} (undecodable or missing \
             source frames?)"
        ))),
        _ => Ok(encoded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(tail: &str, failures: u64, signalled: bool) -> RunError {
        RunError::Failed {
            program: "ffmpeg".into(),
            status: "exit code 1".into(),
            signalled,
            stderr_tail: tail.into(),
            decode_failures: [(0, failures)].into_iter().filter(|f| f.1 > 0).collect(),
        }
    }

    #[test]
    fn only_a_segment_whose_every_decode_failed_counts_as_holding_no_frames() {
        let none = "Error while decoding stream #0:0: Invalid data found when processing input\n\
                    Cannot determine format of input stream 0:0 after EOF\n\
                    Error marking filters as finished";
        assert!(nothing_decodable(&failed(none, 3, false), false));
        // No failed decode call: another fault, not damage.
        assert!(!nothing_decodable(&failed(none, 0, false), false));
        // Killed: the node's fault.
        assert!(!nothing_decodable(&failed(none, 3, true), false));
        // Failed decodes, but the encode failed for another reason.
        assert!(!nothing_decodable(
            &failed("Unknown encoder 'x'", 3, false),
            false
        ));
        // A decoder that failed for want of memory or of support is no damage.
        for why in ["Cannot allocate memory", "Function not implemented"] {
            let tail = format!(
                "Error while decoding stream #0:0: {why}\n\
                 Cannot determine format of input stream 0:0 after EOF"
            );
            assert!(!nothing_decodable(&failed(&tail, 3, false), true), "{why}");
        }
    }

    #[test]
    fn a_segment_wholly_before_a_capture_s_first_keyframe_may_decode_nothing_silently() {
        // The H.264 decoder drops frames it cannot reconstruct without failing a call.
        let silent = "Cannot determine format of input stream 0:0 after EOF\n\
                      Error marking filters as finished";
        assert!(nothing_decodable(&failed(silent, 0, false), true));
        assert!(!nothing_decodable(&failed(silent, 0, false), false));
        // Still not for a decoder that failed for want of memory, nor for a killed run.
        let oom = format!("Error while decoding stream #0:0: Cannot allocate memory\n{silent}");
        assert!(!nothing_decodable(&failed(&oom, 1, false), true));
        assert!(!nothing_decodable(&failed(silent, 0, true), true));
    }

    /// A 25-frame segment at 25 fps whose first `headless` frames precede the source's first
    /// keyframe; a result that lost them starts at `secs` or later.
    fn capture_task(headless: u64, secs: f64) -> Task {
        serde_json::from_value(
            serde_json::json!({"version": 1, "job_id": "j", "unit": "v00000",
            "attempt": 1, "profile": "h264", "input": {"kind": "scratch", "key": "k"},
            "expected_frames": 25, "headless": headless, "headless_secs": secs,
            "duration_secs": 1.0, "result_ext": "nut", "priority": 0}),
        )
        .unwrap()
    }

    fn encoded(frames: u64) -> Encoded {
        Encoded {
            frames,
            secs: 0.1,
            decode_errors: 0,
            decode_failures: 0,
        }
    }

    #[test]
    fn only_the_frames_before_a_capture_s_first_keyframe_may_go_missing_silently() {
        let last = ProgressBlock::default();
        let task = capture_task(10, 0.38);
        // The ten leading frames lost: the result starts at 0.4 s.
        assert!(check_result(&task, &last, encoded(15), Some(0.4)).is_ok());
        // Ten frames lost, but the result starts at 0: they went missing elsewhere.
        assert!(check_result(&task, &last, encoded(15), Some(0.0)).is_err());
        assert!(check_result(&task, &last, encoded(15), Some(0.36)).is_err());
        // Where the result starts unread: not allowed.
        assert!(check_result(&task, &last, encoded(15), None).is_err());
        // More lost than lie before the keyframe.
        assert!(check_result(&task, &last, encoded(14), Some(0.44)).is_err());
        // A segment wholly before the keyframe may hold nothing; one partly before may not.
        assert!(check_result(&capture_task(25, 1.0), &last, encoded(0), None).is_ok());
        assert!(check_result(&task, &last, encoded(0), None).is_err());
        // No frame before the keyframe: every frame is owed.
        assert!(check_result(&capture_task(0, 0.0), &last, encoded(24), Some(0.04)).is_err());
    }
}
