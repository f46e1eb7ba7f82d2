//! Damaged sources end as a single ffmpeg ends on them, on real nats-server and ffmpeg: the
//! same video frames (±0), starting as far after the audio, where it succeeds, with the decode
//! errors reported, and a failure at
//! once (`input_damaged`, or `input_unreadable` where not even the probe reads it) where it
//! gives up. Never after a unit burned its retry budget.

mod common;

use anyhow::{Context, Result, ensure};
use common::{JobClient, TestFleet, damage, media};
use ffleet_runtime::messages::JobEvent;
use ffleet_runtime::reason::Reason;
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_damaged_corpus_ends_as_a_single_ffmpeg_ends_on_it() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let corpus = damage::corpus(fleet.media.path())?;
    for (name, src) in &corpus {
        let mut req = fleet.request(name, src, &format!("{name}.mkv"));
        req.segment_seconds = Some(1.0);
        fleet.submit(&req).await?;
    }
    let mut failures = Vec::new();
    for (name, src) in &corpus {
        let single = damage::single_ffmpeg(src)?;
        let single_frames = single.frames;
        let ended = fleet.wait_terminal(name, JOB_TIMEOUT).await?;
        let verdict = match (&ended, single.ok) {
            (JobEvent::Completed(done), true) => {
                let out = fleet.out_path(&format!("{name}.mkv"));
                let video = media::span(&out, "v:0")?.context("output video")?;
                let ours = video.count;
                // Where the video starts against the audio: frames lost at the start (a
                // destroyed first second, a capture joined mid-GOP) start it later, as they
                // start a single ffmpeg's, never earlier.
                let ours_after = media::span(&out, "a:0")?.map(|a| video.start - a.start);
                println!(
                    "{name}: {ours} frames, a single ffmpeg {single_frames}; video starts \
                     {ours_after:?} s after the audio, a single ffmpeg's {:?} s; {} decode \
                     errors reported, {} segments",
                    single.video_after_audio, done.decode_errors, done.segments
                );
                let in_sync = match (ours_after, single.video_after_audio) {
                    // One 25 fps frame, beside Matroska's millisecond clock.
                    (Some(a), Some(b)) => (a - b).abs() <= 0.041,
                    (a, b) => a.is_none() == b.is_none(),
                };
                if ours != single_frames || done.frames != single_frames {
                    Err(format!(
                        "{ours} frames, a single ffmpeg decodes {single_frames}"
                    ))
                } else if !in_sync {
                    Err(format!(
                        "video starts {ours_after:?} s after the audio, a single ffmpeg's {:?} s",
                        single.video_after_audio
                    ))
                } else {
                    Ok(())
                }
            }
            (JobEvent::Failed(f), false) => {
                println!(
                    "{name}: failed {}: {} (a single ffmpeg fails too)",
                    f.reason, f.message
                );
                if matches!(f.reason, Reason::InputDamaged | Reason::InputUnreadable) {
                    Ok(())
                } else {
                    Err(format!("failed {}: {}", f.reason, f.message))
                }
            }
            (JobEvent::Failed(f), true) => Err(format!(
                "failed {}: {}, where a single ffmpeg decodes {single_frames} frames",
                f.reason, f.message
            )),
            (other, _) => Err(format!("ended {other:?} where a single ffmpeg fails")),
        };
        if let Err(why) = verdict {
            failures.push(format!("{name}: {why}"));
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was left half-done for a service to trip over: a clean job still runs.
    let clean = fleet.media.path().join("clean.mp4");
    fleet
        .submit(&fleet.request("after", &clean, "after.mkv"))
        .await?;
    fleet.wait_completed("after", JOB_TIMEOUT).await?;
    fleet.stop().await;
    Ok(())
}
