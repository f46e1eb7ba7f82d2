//! The merge itself: the units' records read (each holds its cut and its accepted result), the
//! encoded units fetched into a private work dir (each checked against the
//! digest its encoder recorded), an ffconcat list with exact per-segment durations, one
//! stream-copy ffmpeg run that concatenates and muxes the tracks there, verification, then the
//! output stored: as an object, or copied into a confined temporary file beside the output path
//! (re-resolved from the request against this merger's roots) and renamed into place.

use crate::verify;
use ffleet_runtime::media::Rational;
use ffleet_runtime::media::args::{self, ConcatEntry};
use ffleet_runtime::media::command::{self, Limits};
use ffleet_runtime::messages::records::OutputInfo;
use ffleet_runtime::messages::{JobRecord, Plan, SegmentRecord, SegmentState, SourceInfo};
use ffleet_runtime::nats::BoxError;
use ffleet_runtime::reason::{Failure, Reason};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::storage::{Placed, Roots, StorageError};
use ffleet_runtime::subjects;
use ffleet_runtime::{Unit, profiles};
use futures::{StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::new(Reason::Internal, e.to_string())
}

/// Why a merge did not produce the output.
#[derive(Debug)]
pub enum MergeError {
    /// The job fails.
    Fail(Failure),
    /// Media storage is unreachable for now: try again on redelivery.
    Retry(BoxError),
    /// These units go back to encoding and the job merges when they are back: the stored
    /// result of the attempt given is missing or not the bytes its encoder recorded, or (no
    /// attempt) the unit's record did not read done at the merge.
    Reissue(Vec<(Unit, Option<u32>)>),
    /// The job ended before its output could go into place (cancelled, failed, or completed by
    /// an earlier run of this merge): nothing was placed.
    Ended(ffleet_runtime::messages::JobState),
}

impl From<Failure> for MergeError {
    fn from(f: Failure) -> Self {
        MergeError::Fail(f)
    }
}

fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Merges a job whose every unit is collected; returns what was written.
#[tracing::instrument(name = "merge", skip_all, err(Debug, level = "warn"), fields(ffleet.service = crate::SERVICE, ffleet.job = %rec.job_id))]
pub async fn merge(ctx: &Ctx, rec: &JobRecord) -> Result<Merged, MergeError> {
    let (Some(plan), Some(src)) = (&rec.plan, &rec.source) else {
        return Err(internal("job has no plan").into());
    };
    // Everything this merge reads or writes locally lives here and goes when it drops.
    let dir = tempfile::Builder::new()
        .prefix("merge-")
        .tempdir_in(ctx.storage.work_dir())
        .map_err(internal)?;
    let units = results(ctx, rec).await?;
    let segments = plan.segments as usize;
    let audio_packets = src.audio.as_ref().map_or(0, |a| a.packets);
    // The tracks unit, after the segments, reports its failed decode calls.
    let audio_failures = units.get(segments).map_or(0, |u| u.decode_errors);
    // Frames before a capture's first keyframe fail no decode call in a single ffmpeg either:
    // counted as decoded here.
    mostly_undecodable(
        src.video.frames,
        audio_packets,
        units[..segments]
            .iter()
            .map(|u| u.frames + u.headless.min(u.planned_frames.saturating_sub(u.frames))),
        audio_failures,
    )?;
    let fetched = fetch_all(ctx, rec, &units, segments, src.video.time_base, dir.path()).await?;
    if fetched.entries.is_empty() {
        return Err(Failure::new(
            Reason::InputDamaged,
            "not one of the source's video frames could be decoded",
        )
        .into());
    }
    let list = dir.path().join("list.ffconcat");
    tokio::fs::write(&list, args::concat_list(&fetched.entries))
        .await
        .map_err(internal)?;

    // The output is written in the private dir first; a file output then goes into its
    // directory through the output roots' handles (`place`), re-resolved from the request now.
    let name = plan
        .output_key
        .as_deref()
        .unwrap_or(&rec.request.output)
        .rsplit('/')
        .next()
        .unwrap_or("output");
    let tmp = dir.path().join(format!(
        "out-{}",
        ffleet_runtime::storage::keys::sanitize_name(name)
    ));
    // Tagged only where every variant encodes HEVC: ffmpeg refuses `hvc1` on another codec, and
    // a profile mixing codecs could have given this job either.
    let hevc = ctx.config.profile(&rec.profile).is_some_and(|p| {
        !p.variants.is_empty() && p.variants.values().all(|v| profiles::is_hevc(&v.args))
    });
    concat(ctx, src, plan, hevc, &list, &fetched, &tmp).await?;
    // Frames the decoder dropped from damaged input are missing from the output as they are
    // from a single ffmpeg's: the encoded units say how many frames there are.
    let expected = verify::Expected {
        frames: units[..segments].iter().map(|c| c.frames).sum(),
        tracks: &plan.tracks,
        audio_lost: audio_failures,
        lead_secs: fetched.lead_us as f64 / 1e6,
        lead_frames: fetched.lead_frames,
    };
    let checked = verify::verify(&ctx.config, src, &expected, &tmp).await;
    let verified = match checked {
        Ok(v) => v,
        Err(why) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Failure::new(Reason::VerifyFailed, why.to_string()).into());
        }
    };
    let bytes = tokio::fs::metadata(&tmp).await.map_err(internal)?.len();
    // From here the job completes: a cancel is refused, so no output appears beside a
    // `cancelled` event; and one cancelled before this is not placed at all.
    match ffleet_runtime::jobs::finalize(ctx, &rec.job_id).await {
        Ok(None) => {}
        Ok(Some(state)) => return Err(MergeError::Ended(state)),
        Err(e) => return Err(MergeError::Retry(e.into())),
    }
    let stored = store_output(ctx, rec, plan, &tmp).await?;
    let moved = fetched.moved + stored.bytes_moved;
    let wall_secs = ffleet_runtime::time::age_secs(&rec.accepted_at).unwrap_or(0.0);
    let output = OutputInfo {
        uri: rec.request.output.clone(),
        frames: verified.count,
        duration_secs: verified.duration(),
        bytes,
        wall_secs,
        decode_errors: units.iter().map(|c| c.decode_errors).sum(),
        warnings: plan.warnings.clone(),
        media_bytes: rec.media_bytes + units.iter().map(|c| c.bytes_moved).sum::<u64>() + moved,
        digest: stored.digest,
    };
    Ok(Merged {
        output,
        placed: stored.placed,
    })
}

/// A merged, verified and stored output, and which file it is where it went to a file.
pub struct Merged {
    pub output: OutputInfo,
    /// The file put in place (file outputs): only this file is withdrawn if the job turns out
    /// to have been cancelled meanwhile.
    pub placed: Option<Placed>,
}

/// Removes the output of a job that was cancelled while it merged: the object it stored, or
/// the file it placed if its name still holds that file. Best effort, said in the log.
pub async fn withdraw(ctx: &Ctx, rec: &JobRecord, merged: &Merged) {
    let Some(plan) = &rec.plan else { return };
    let job = &rec.job_id;
    match (&plan.output_key, merged.placed) {
        (Some(key), _) => match ctx.storage.delete(key).await {
            Ok(()) => tracing::info!(job = %job, key, "output of a cancelled job removed"),
            Err(e) => {
                tracing::warn!(job = %job, key, error = %e, "output of a cancelled job not removed")
            }
        },
        (None, Some(placed)) => {
            let roots = output_roots(ctx, rec);
            let uri = rec.request.output.clone();
            let removed = tokio::task::spawn_blocking(move || {
                Roots::open("output", &roots).withdraw_output(&uri, placed)
            })
            .await;
            match removed {
                Ok(Ok(true)) => tracing::info!(job = %job, "output of a cancelled job removed"),
                Ok(Ok(false)) => {
                    tracing::info!(job = %job, "output of a cancelled job was replaced meanwhile; left")
                }
                Ok(Err(e)) => {
                    tracing::warn!(job = %job, error = %e, "output of a cancelled job not removed")
                }
                Err(e) => {
                    tracing::warn!(job = %job, error = %e, "output of a cancelled job not removed")
                }
            }
        }
        (None, None) => {}
    }
}

/// Refuses an output most of whose frames the decoder could not decode, as a single ffmpeg
/// does: it exits with an error once more than two thirds of its decode calls failed
/// (`-max_error_rate`, 2/3 by default), counting the audio it decodes beside the video. Each
/// unit's encoder allows any rate (a damaged stretch concentrates in one segment, and the audio
/// alone is not the file, so neither one's rate says anything of the file's), so the file's
/// rate is judged here: the video frames the units could not decode and the audio decode calls
/// that failed, against the source's video frames and audio packets.
fn mostly_undecodable(
    source_frames: u64,
    audio_packets: u64,
    encoded: impl Iterator<Item = u64>,
    audio_failures: u64,
) -> Result<(), Failure> {
    let encoded: u64 = encoded.sum();
    let dropped = source_frames.saturating_sub(encoded);
    let failed = u128::from(dropped) + u128::from(audio_failures.min(audio_packets));
    let calls = u128::from(source_frames) + u128::from(audio_packets);
    if failed * 3 > calls * 2 {
        let audio = if audio_packets > 0 {
            format!(" and {audio_failures} of its {audio_packets} audio packets")
        } else {
            String::new()
        };
        return Err(Failure::new(
            Reason::InputDamaged,
            format!(
                "{dropped} of the source's {source_frames} video frames{audio} could not be \
                 decoded (more than two thirds of what a single ffmpeg decodes, where it gives \
                 up too)"
            ),
        ));
    }
    Ok(())
}

/// Segments short of frames whose first frame time is read at once (one ffprobe each).
const GAP_PROBES: usize = 4;

/// What a merge fetched: the concat list's entries, the tracks unit's file, bytes moved.
struct Fetched {
    entries: Vec<ConcatEntry>,
    /// Source time before the first segment that has frames (segments before it decoded to
    /// nothing): the video starts that much later.
    lead_us: i64,
    /// Of the frames the segments lack, those lost before the video's first frame (`lead_us`).
    lead_frames: u64,
    tracks: Option<PathBuf>,
    moved: u64,
}

/// Fetches every unit's result into `dir`, each checked against the digest its attempt
/// recorded; the units whose result is missing or not those bytes come back in one `Reissue`.
async fn fetch_all(
    ctx: &Ctx,
    rec: &JobRecord,
    units: &[UnitResult],
    segments: usize,
    tb: Rational,
    dir: &Path,
) -> Result<Fetched, MergeError> {
    let mut fetched = Fetched {
        entries: Vec::with_capacity(segments),
        lead_us: 0,
        lead_frames: 0,
        tracks: None,
        moved: 0,
    };
    let mut bad = Vec::new();
    let (video, tracks) = units.split_at(segments);
    // Fetched in order; then where each segment short of frames starts, read a few at a time
    // (one ffprobe each: a long, heavily damaged file has many); then placed in order.
    let mut placed = Vec::with_capacity(video.len());
    let mut offset_ticks = 0_i64;
    for c in video {
        // Durations from cumulative source time, rounded once per boundary, so microsecond
        // rounding never accumulates across segments.
        let start_us = tb.micros(offset_ticks);
        offset_ticks += c.duration_ticks;
        let duration_us = tb.micros(offset_ticks) - start_us;
        if c.frames == 0 {
            placed.push((c, duration_us, None));
            continue;
        }
        let dest = dir.join(file_name(&c.result_key));
        let fetched_ok = fetch_one(ctx, rec, c, &dest, &mut fetched.moved, &mut bad).await?;
        let probe = fetched_ok && c.frames < c.planned_frames;
        placed.push((c, duration_us, Some((dest, probe))));
    }
    let probes: Vec<Option<(PathBuf, i64, Unit)>> = placed
        .iter()
        .map(|(c, duration_us, file)| match file {
            Some((dest, true)) => Some((dest.clone(), *duration_us, c.unit)),
            _ => None,
        })
        .collect();
    let gaps: Vec<i64> = futures::stream::iter(probes)
        .map(|probe| async move {
            match probe {
                Some((dest, duration_us, unit)) => {
                    first_frame_gap_us(ctx, rec, unit, &dest, duration_us).await
                }
                None => Ok(0),
            }
        })
        .buffered(GAP_PROBES)
        .try_collect()
        .await?;
    for ((c, duration_us, file), gap_us) in placed.into_iter().zip(gaps) {
        if file.is_none() {
            // Every frame of it undecodable (its encoder accepted that only with decode errors,
            // or before a capture's first keyframe): its time goes to the segment before, as a
            // single ffmpeg leaves a gap where it dropped frames, or before the first frame.
            match fetched.entries.last_mut() {
                Some(prev) => prev.duration_us += duration_us,
                None => {
                    fetched.lead_us += duration_us;
                    fetched.lead_frames += c.planned_frames;
                }
            }
            continue;
        }
        if fetched.entries.is_empty() && gap_us > 0 {
            // Frames lost at the video's start (the gap shortens it, as it does a single
            // ffmpeg's): at most the ones the result lacks.
            let frame_us = duration_us / c.planned_frames.max(1) as i64;
            let lost = (gap_us + frame_us / 2) / frame_us.max(1);
            fetched.lead_frames += (lost as u64).min(c.planned_frames - c.frames);
        }
        fetched.push(file_name(&c.result_key).to_owned(), duration_us, gap_us);
    }
    if let Some(c) = tracks.first() {
        let dest = dir.join(format!("tracks-{}", file_name(&c.result_key)));
        if fetch_one(ctx, rec, c, &dest, &mut fetched.moved, &mut bad).await? {
            fetched.tracks = Some(dest);
        }
    }
    if !bad.is_empty() {
        return Err(MergeError::Reissue(bad));
    }
    Ok(fetched)
}

impl Fetched {
    /// Adds a segment lasting `duration_us` whose first frame lies `gap_us` after its planned
    /// start (its decoder dropped its first frames). The concat demuxer places each file by its
    /// first frame, which would move the segment early by the gap: the gap goes to the segment
    /// before instead (or before the first frame), where a single ffmpeg leaves it.
    fn push(&mut self, file_name: String, duration_us: i64, gap_us: i64) {
        let gap_us = gap_us.clamp(0, duration_us.max(0));
        match self.entries.last_mut() {
            Some(prev) => prev.duration_us += gap_us,
            None => self.lead_us += gap_us,
        }
        self.entries.push(ConcatEntry {
            file_name,
            duration_us: duration_us - gap_us,
        });
    }
}

/// Where the first frame of a segment that lost frames lies after its planned start, in
/// microseconds (the encoder puts the planned start at 0). A probe that fails retries the
/// merge; a time outside the segment (an encode that could not put its start at 0) is no gap,
/// and the segment is placed by its first frame.
async fn first_frame_gap_us(
    ctx: &Ctx,
    rec: &JobRecord,
    unit: Unit,
    path: &Path,
    duration_us: i64,
) -> Result<i64, MergeError> {
    let tools = ctx.config.tools();
    let timeout = ctx.config.limits.probe_timeout();
    let start = ffleet_runtime::media::probe::first_video_pts(&tools.ffprobe, path, timeout)
        .await
        .map_err(|e| MergeError::Retry(format!("reading where unit {unit} starts: {e}").into()))?;
    let gap_us = start.map_or(0, |s| s.time_base.micros(s.pts));
    if !(0..duration_us).contains(&gap_us) {
        tracing::warn!(job = %rec.job_id, unit = %unit, gap_us, duration_us, "first frame of a segment that lost frames lies outside it; placed by its first frame");
        return Ok(0);
    }
    Ok(gap_us)
}

/// Fetches one result to `dest`: `true` when it is there, `false` (and its unit added to
/// `bad`) when the stored result was refused.
async fn fetch_one(
    ctx: &Ctx,
    rec: &JobRecord,
    c: &UnitResult,
    dest: &Path,
    moved: &mut u64,
    bad: &mut Vec<(Unit, Option<u32>)>,
) -> Result<bool, MergeError> {
    match ctx
        .storage
        .fetch_to(&c.result_key, c.digest.as_deref(), dest)
        .await
    {
        Ok(n) => {
            *moved += n;
            Ok(true)
        }
        Err(e @ (StorageError::Corrupt { .. } | StorageError::Missing(_))) => {
            tracing::warn!(job = %rec.job_id, unit = %c.unit, attempt = c.attempt, error = %e, "stored result refused, unit goes back to encoding");
            bad.push((c.unit, Some(c.attempt)));
            Ok(false)
        }
        Err(e) if e.is_transient() => Err(MergeError::Retry(e.into())),
        Err(e) => Err(e.failure("fetching an encoded unit").into()),
    }
}

/// Concatenates the segments listed in `list` (what `fetched` holds) and muxes the tracks into
/// `tmp`, in one stream-copy ffmpeg run.
async fn concat(
    ctx: &Ctx,
    src: &SourceInfo,
    plan: &Plan,
    hevc: bool,
    list: &Path,
    fetched: &Fetched,
    tmp: &Path,
) -> Result<(), MergeError> {
    // Where the first frame sat relative to the source's start, which is where a single ffmpeg
    // run would put it relative to the audio (later by segments that decoded to nothing).
    let video_offset_us =
        ((src.video.start_secs() - src.format_start_secs) * 1e6).round() as i64 + fetched.lead_us;
    let tracks = fetched.tracks.as_deref();
    let cmd = args::merge(list, tracks, video_offset_us, plan.container, hevc, tmp);
    let limits = Limits {
        timeout: Duration::from_secs_f64(600.0_f64.max(src.video.duration_secs())),
        stall: Some(ctx.config.ffmpeg.stall_timeout()),
    };
    let ran = command::run_with_progress(
        &ctx.config.tools().ffmpeg,
        &cmd,
        limits,
        &CancellationToken::new(),
        |_| {},
    )
    .await;
    if let Err(e) = ran {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(Failure::new(Reason::MergeFailed, format!("merging failed: {e}")).into());
    }
    Ok(())
}

/// Puts the verified output where the request asked for it: a file through this merger's
/// output roots, or an object. Returns the bytes moved through the storage and, for an object,
/// the digest it was stored with (its fetcher checks against it).
async fn store_output(
    ctx: &Ctx,
    rec: &JobRecord,
    plan: &Plan,
    tmp: &Path,
) -> Result<StoredOutput, MergeError> {
    match &plan.output_key {
        None => Ok(StoredOutput {
            bytes_moved: 0,
            digest: None,
            placed: Some(place(ctx, rec, tmp).await?),
        }),
        Some(key) => match ctx.storage.put_file(tmp, key).await {
            Ok(stored) => {
                expire_output(ctx, key);
                Ok(StoredOutput {
                    bytes_moved: stored.bytes_moved,
                    digest: stored.digest,
                    placed: None,
                })
            }
            Err(e) if e.is_transient() => Err(MergeError::Retry(e.into())),
            Err(e) => Err(e.failure("storing the output").into()),
        },
    }
}

/// Where `store_output` put the output.
struct StoredOutput {
    bytes_moved: u64,
    digest: Option<String>,
    placed: Option<Placed>,
}

/// Removes the stored output `key` after `storage.keep_outputs_secs`, time for its submitter to
/// fetch it (a submitter's credentials cannot remove it themselves). One this merger forgets
/// (it stopped meanwhile) goes at a splitter's next sweep.
fn expire_output(ctx: &Ctx, key: &str) {
    let keep = ctx.config.storage.keep_outputs_secs;
    let (storage, key) = (ctx.storage.clone(), key.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(keep)).await;
        match storage.delete(&key).await {
            Ok(()) => tracing::debug!(key, "kept output removed"),
            Err(e) => {
                tracing::warn!(key, error = %e, "kept output not removed (it goes at the bucket's max age)")
            }
        }
    });
}

/// A unit's accepted result, as its record keeps it.
pub struct UnitResult {
    unit: Unit,
    attempt: u32,
    result_key: String,
    digest: Option<String>,
    frames: u64,
    decode_errors: u64,
    bytes_moved: u64,
    /// The video segment's planned length, in source ticks (0 for the tracks unit).
    duration_ticks: i64,
    /// The video segment's planned frame count (0 for the tracks unit).
    planned_frames: u64,
    /// Of them, those before the source's first keyframe (a capture joined mid-GOP).
    headless: u64,
}

/// Units read from the segments bucket at once, a bounded number at a time.
const READ_AHEAD: usize = 32;

/// Every unit's accepted result, video segments in order and then the tracks unit. Each must be
/// collected and its record done. Collect marks only done units, and only the merger's own
/// refusal moves a done unit on, so a record read otherwise was read older than its collect (a
/// stream leader catching up), or its report was counted while a refusal was under way. Either
/// way the job does not fail on it: the unit is uncollected and its current attempt sent again
/// (a done attempt's encoder then reports it again).
pub async fn results(ctx: &Ctx, rec: &JobRecord) -> Result<Vec<UnitResult>, MergeError> {
    let Some(plan) = &rec.plan else {
        return Err(internal("job has no plan").into());
    };
    let job = &rec.job_id;
    futures::stream::iter(plan.units())
        .map(|unit| async move {
            if !rec.collected.contains(unit) {
                return Err(internal(format!("unit {unit} missing at merge")).into());
            }
            let key = subjects::segment_key(job, unit);
            let read = ctx.segments.get(&key).await;
            let seg = read.map_err(|e| MergeError::Retry(e.into()))?;
            match seg {
                Some((r, _)) => accepted(unit, r),
                None => Err(MergeError::Retry(
                    format!("unit {unit} has no record at merge (a read older than its collect?)")
                        .into(),
                )),
            }
        })
        .buffered(READ_AHEAD)
        .try_collect()
        .await
}

fn accepted(unit: Unit, r: SegmentRecord) -> Result<UnitResult, MergeError> {
    let key = r.result_key.filter(|_| r.state == SegmentState::Done);
    let Some(result_key) = key else {
        tracing::warn!(unit = %unit, state = ?r.state, attempt = r.attempt, "collected unit does not read done at merge; sent back to encoding");
        return Err(MergeError::Reissue(vec![(unit, None)]));
    };
    Ok(UnitResult {
        unit,
        attempt: r.attempt,
        result_key,
        digest: r.digest,
        frames: r.frames.unwrap_or(0),
        decode_errors: r.decode_errors,
        bytes_moved: r.bytes_moved,
        duration_ticks: r.cut.as_ref().map_or(0, |c| c.duration_ticks),
        planned_frames: r.cut.as_ref().map_or(0, |c| c.frames),
        headless: r.cut.as_ref().map_or(0, |c| c.headless),
    })
}

/// This merger's output roots for the job (a tenant's lie under its own directory).
fn output_roots(ctx: &Ctx, rec: &JobRecord) -> Vec<std::path::PathBuf> {
    ctx.config
        .storage
        .for_job(&rec.request.job_id)
        .output_roots
        .clone()
}

/// Copies the merged file into a fresh temporary beside the output (created inside the output
/// roots, `O_EXCL`, random name) and renames it into place once it is checked to be the same file.
async fn place(ctx: &Ctx, rec: &JobRecord, merged: &Path) -> Result<Placed, Failure> {
    let roots = output_roots(ctx, rec);
    let uri = rec.request.output.clone();
    let merged = merged.to_path_buf();
    let placed = tokio::task::spawn_blocking(move || {
        let out = Roots::open("output", &roots)
            .create_output(&uri)
            .map_err(|e| Failure::new(Reason::OutputNotAllowed, e.to_string()))?;
        let shown = out.shown().to_owned();
        let fail = |e: std::io::Error| {
            Failure::new(
                Reason::MergeFailed,
                format!("cannot move the output into place at {shown}: {e}"),
            )
        };
        let mut from = std::fs::File::open(&merged).map_err(fail)?;
        std::io::copy(&mut from, &mut out.file()).map_err(fail)?;
        out.commit().map_err(fail)
    })
    .await;
    placed.map_err(internal)?
}

#[cfg(test)]
mod tests {
    use super::{Fetched, mostly_undecodable};

    #[test]
    fn a_segment_that_lost_its_first_frames_keeps_its_place() {
        let mut f = Fetched {
            entries: Vec::new(),
            lead_us: 0,
            lead_frames: 0,
            tracks: None,
            moved: 0,
        };
        // The first segment's first 0.4 s and the third's first 0.25 s did not decode.
        f.push("a".into(), 1_000_000, 400_000);
        f.push("b".into(), 1_000_000, 0);
        f.push("c".into(), 1_000_000, 250_000);
        let durations: Vec<i64> = f.entries.iter().map(|e| e.duration_us).collect();
        assert_eq!(f.lead_us, 400_000);
        assert_eq!(durations, [600_000, 1_250_000, 750_000]);
        // Each file's first frame where it was in the source: the concat demuxer starts a file
        // where the durations before it end.
        assert_eq!(f.lead_us + durations[0] + durations[1], 2_250_000);
        assert_eq!(f.lead_us + durations.iter().sum::<i64>(), 3_000_000);
        // A gap read longer than the segment (a clock gone wrong) moves no later segment.
        f.push("d".into(), 1_000_000, 5_000_000);
        assert_eq!(f.entries[2].duration_us, 1_750_000);
        assert_eq!(f.entries[3].duration_us, 0);
    }

    #[test]
    fn a_file_is_refused_where_a_single_ffmpeg_gives_up() {
        // Two thirds exactly is still decoded; one frame more is not.
        assert!(mostly_undecodable(300, 0, [100].into_iter(), 0).is_ok());
        assert!(mostly_undecodable(300, 0, [99].into_iter(), 0).is_err());
        // Audio decoded beside the video keeps the rate down, as it does for ffmpeg.
        assert!(mostly_undecodable(200, 375, [25].into_iter(), 0).is_ok());
        // The units' frames add up; more than the source (a count gone wrong) is no damage.
        assert!(mostly_undecodable(200, 0, [20, 30, 20].into_iter(), 0).is_ok());
        assert!(mostly_undecodable(200, 0, [300].into_iter(), 0).is_ok());
    }

    #[test]
    fn failed_audio_decodes_count_with_the_video_as_ffmpeg_counts_them() {
        // 336 of 376 audio packets lost, the video whole: 58 % of the calls, decoded.
        assert!(mostly_undecodable(200, 376, [200].into_iter(), 336).is_ok());
        // Beside half the video lost, past two thirds: refused.
        assert!(mostly_undecodable(200, 376, [50].into_iter(), 336).is_err());
        // More failures than packets (a count gone wrong) count as every packet.
        assert!(mostly_undecodable(200, 376, [200].into_iter(), 10_000).is_ok());
    }
}
