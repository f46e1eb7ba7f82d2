//! Running one unit's ffmpeg: the command from the profile, limits from the unit's duration,
//! progress forwarded to the caller, and a check (from ffmpeg's final progress report) that the
//! result holds what it must.

use ffleet_shared::config::Config;
use ffleet_shared::media::args;
use ffleet_shared::media::command::{self, Limits, RunError};
use ffleet_shared::media::progress::ProgressBlock;
use ffleet_shared::messages::Task;
use ffleet_shared::messages::records::Container;
use ffleet_shared::profiles::{self, Profile};
use ffleet_shared::reason::{Failure, Reason};
use ffleet_shared::{Capability, telemetry};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub enum EncodeError {
    /// Worth another try, here or elsewhere.
    Transient(String),
    /// Will fail again on this input.
    Permanent(Failure),
    Cancelled,
}

pub struct Encoded {
    pub frames: u64,
    pub secs: f64,
    /// Error lines the decoder wrote (damaged input it concealed or skipped).
    pub decode_errors: u64,
}

fn classify(e: RunError, task: &Task) -> EncodeError {
    match e {
        RunError::Cancelled { .. } => EncodeError::Cancelled,
        e if e.is_transient() => EncodeError::Transient(e.to_string()),
        e => EncodeError::Permanent(Failure::new(
            Reason::EncodeFailed,
            format!("{} of job {} failed: {e}", task.unit, task.job_id),
        )),
    }
}

/// What to encode and with which settings.
pub struct Unit<'a> {
    pub task: &'a Task,
    pub profile: &'a Profile,
    pub variant: &'a profiles::Variant,
}

pub async fn run(
    cfg: &Config,
    unit: Unit<'_>,
    input: &Path,
    output: &Path,
    cancel: &CancellationToken,
    on_progress: impl FnMut(&ProgressBlock),
) -> Result<Encoded, EncodeError> {
    let Unit {
        task,
        profile,
        variant,
    } = unit;
    let cmd = if task.unit.is_audio() {
        let container = if task.result_ext == "mka" {
            Container::Matroska
        } else {
            Container::Mp4
        };
        args::encode_tracks(input, &profile.audio, &task.tracks, container, output)
    } else {
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
        args::encode_video(input, &settings, conversion.as_ref(), output)
    };
    let e = &cfg.encoder;
    let limits = Limits {
        timeout: Duration::from_secs_f64(
            e.min_timeout_secs
                .max(task.duration_secs * e.timeout_factor),
        ),
        stall: Some(Duration::from_secs_f64(e.stall_timeout_secs)),
    };
    let started = Instant::now();
    // ffmpeg's last progress block counts what it encoded: checking it costs no ffprobe run.
    let mut last = ProgressBlock::default();
    let mut on_progress = on_progress;
    let ran = command::run_with_progress(&cfg.ffmpeg.ffmpeg, &cmd, limits, cancel, |b| {
        last = b.clone();
        on_progress(b);
    })
    .await
    .map_err(|e| classify(e, task))?;
    let decode_errors = ran.stderr_lines;
    let secs = started.elapsed().as_secs_f64();
    if last.end {
        let cap = task.capability.clone().unwrap_or_else(Capability::cpu);
        let video = !task.unit.is_audio();
        telemetry::spans::encoded(&cap, &cmd, &last, task.duration_secs, secs, video);
    }

    let check = |what: String| {
        EncodeError::Permanent(Failure::new(
            Reason::EncodeFailed,
            format!("{} of job {}: {what}", task.unit, task.job_id),
        ))
    };
    if !last.end {
        return Err(EncodeError::Transient(
            "ffmpeg exited without its final progress report".into(),
        ));
    }
    if task.unit.is_audio() {
        if last.out_time_us.unwrap_or(0) <= 0 {
            return Err(check("encoded audio holds no audio".into()));
        }
        return Ok(Encoded {
            frames: 0,
            secs,
            decode_errors,
        });
    }
    let frames = last.frame.unwrap_or(0);
    let encoded = Encoded {
        frames,
        secs,
        decode_errors,
    };
    match task.expected_frames {
        // Damaged input: the decoder dropped frames it could not conceal, exactly as a single
        // ffmpeg decoding the file drops them. What it could not decode at all is an error.
        Some(want) if frames < want && frames > 0 && decode_errors > 0 => {
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
