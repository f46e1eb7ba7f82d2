//! The merge itself: an ffconcat list with exact per-segment durations, one stream-copy ffmpeg
//! run that concatenates and muxes the audio into a hidden temporary file beside the output,
//! verification, then an atomic rename onto the output path.

use crate::verify;
use ffleet_shared::Unit;
use ffleet_shared::media::args::{self, ConcatEntry};
use ffleet_shared::media::command::{self, Limits};
use ffleet_shared::messages::JobRecord;
use ffleet_shared::messages::records::OutputInfo;
use ffleet_shared::reason::{Failure, Reason};
use ffleet_shared::runtime::Ctx;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(Reason::Internal, e.to_string())
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Merges a job whose every unit is collected; returns what was written.
#[tracing::instrument(name = "merge", skip_all, err(Display, level = "warn"), fields(ffleet.service = crate::SERVICE, ffleet.job = %rec.job_id))]
pub async fn merge(ctx: &Ctx, rec: &JobRecord) -> Result<OutputInfo, Failure> {
    let (Some(plan), Some(src)) = (&rec.plan, &rec.source) else {
        return Err(internal("job has no plan"));
    };
    let tb = src.video.time_base;
    let mut entries = Vec::with_capacity(plan.segments.len());
    let mut offset_ticks = 0_i64;
    let mut list_dir: Option<String> = None;
    for s in &plan.segments {
        let c = rec
            .collected
            .get(&Unit::Video(s.index))
            .ok_or_else(|| internal(format!("segment {} missing at merge", s.index)))?;
        let dir = c.result_key.rsplit_once('/').map(|(d, _)| d.to_owned());
        if list_dir.is_none() {
            list_dir = dir.clone();
        }
        if dir != list_dir {
            return Err(internal("encoded segments are not in one directory"));
        }
        // Durations from cumulative source time, rounded once per boundary, so microsecond
        // rounding never accumulates across segments.
        let start_us = tb.micros(offset_ticks);
        offset_ticks += s.duration_ticks;
        entries.push(ConcatEntry {
            file_name: file_name(&c.result_key).to_owned(),
            duration_us: tb.micros(offset_ticks) - start_us,
        });
    }
    let list_dir = list_dir.ok_or_else(|| internal("plan has no segments"))?;
    let list_key = format!("{list_dir}/list.ffconcat");
    ctx.storage
        .write(&list_key, args::concat_list(&entries).as_bytes())
        .await
        .map_err(internal)?;
    let list = ctx.storage.read_path(&list_key).await.map_err(internal)?;
    let audio = match rec.collected.get(&Unit::Audio) {
        Some(c) if plan.audio => Some(
            ctx.storage
                .read_path(&c.result_key)
                .await
                .map_err(internal)?,
        ),
        _ if plan.audio => return Err(internal("audio missing at merge")),
        _ => None,
    };

    let output = PathBuf::from(&plan.output_path);
    let tmp = temp_beside(&output, rec);
    // Where the first frame sat relative to the source's start, which is where a single ffmpeg
    // run would put it relative to the audio.
    let video_offset_us = ((src.video.start_secs() - src.format_start_secs) * 1e6).round() as i64;
    let cmd = args::merge(
        &list,
        audio.as_deref(),
        video_offset_us,
        plan.container,
        &tmp,
    );
    let limits = Limits {
        timeout: Duration::from_secs_f64(600.0_f64.max(src.video.duration_secs())),
        stall: Some(Duration::from_secs_f64(
            ctx.config.encoder.stall_timeout_secs,
        )),
    };
    let ran = command::run_with_progress(
        &ctx.config.ffmpeg.ffmpeg,
        &cmd,
        limits,
        &CancellationToken::new(),
        |_| {},
    )
    .await;
    if let Err(e) = ran {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(Failure::new(
            Reason::MergeFailed,
            format!("merging failed: {e}"),
        ));
    }
    // Frames the decoder dropped from damaged input are missing from the output as they are
    // from a single ffmpeg's: the encoded units say how many frames there are.
    let expected = verify::Expected {
        frames: plan
            .segments
            .iter()
            .filter_map(|s| rec.collected.get(&Unit::Video(s.index)))
            .map(|c| c.frames)
            .sum(),
        tracks: &plan.tracks,
    };
    let checked = verify::verify(&ctx.config, src, &expected, &tmp).await;
    let verified = match checked {
        Ok(v) => v,
        Err(why) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Failure::new(Reason::VerifyFailed, why));
        }
    };
    let bytes = tokio::fs::metadata(&tmp).await.map_err(internal)?.len();
    tokio::fs::rename(&tmp, &output).await.map_err(|e| {
        Failure::new(
            Reason::MergeFailed,
            format!(
                "cannot move the output into place at {}: {e}",
                output.display()
            ),
        )
    })?;
    let wall_secs = ffleet_shared::time::age_secs(&rec.accepted_at).unwrap_or(0.0);
    Ok(OutputInfo {
        uri: rec.request.output.clone(),
        frames: verified.count,
        duration_secs: verified.duration(),
        bytes,
        wall_secs,
        decode_errors: rec.collected.values().map(|c| c.decode_errors).sum(),
        warnings: plan.warnings.clone(),
    })
}

/// A hidden temporary name in the output's directory, so the final rename is atomic.
fn temp_beside(output: &Path, rec: &JobRecord) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.ffleet-{}.tmp", rec.job_id))
}
