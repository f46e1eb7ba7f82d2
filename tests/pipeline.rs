//! The pipeline end to end, real nats-server and ffmpeg: frame-exact output against a single
//! ffmpeg process, determinism, exactly-once under duplicate submissions, concurrent jobs.

mod common;

use anyhow::Result;
use common::{JobClient, TestFleet, media, quality};
use ffleet_runtime::messages::JobEvent;
use ffleet_runtime::messages::events::SegmentOutcome;
use ffleet_runtime::{profiles, subjects};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Encodes `src` with one ffmpeg process and exactly the settings the encoders use for the
/// default profile (video and audio), for comparison.
fn single_process_baseline(fleet: &TestFleet, src: &Path, out: &Path) -> Result<()> {
    let profile = &fleet.config.profiles[&fleet.config.default_profile];
    let video = profiles::video_settings(&profile.variants["cpu"], None);
    let mut args: Vec<&str> = vec![
        "-i",
        src.to_str().unwrap(),
        "-map",
        "0:v:0",
        "-map",
        "0:a:0?",
    ];
    args.extend(video.iter().map(String::as_str));
    args.extend(profile.audio.iter().map(String::as_str));
    args.push(out.to_str().unwrap());
    media::ffmpeg(&args)
}

/// Asserts the frame-exactness bar and prints the measured figures.
fn assert_frame_exact(fleet: &TestFleet, src: &Path, out: &Path) -> Result<()> {
    let baseline = fleet.out_path("baseline.mp4");
    single_process_baseline(fleet, src, &baseline)?;
    let frame = 1.0 / media::frame_rate(src)?;
    let sv = media::span(src, "v:0")?.expect("source video");
    let ov = media::span(out, "v:0")?.expect("output video");
    assert_eq!(ov.count, sv.count, "frame count");
    let dv = (ov.duration() - sv.duration()).abs();
    assert!(
        dv <= frame + 1e-3,
        "video duration off by {dv:.4} s (one frame is {frame:.4} s)"
    );

    let sa = media::span(src, "a:0")?.expect("source audio");
    let oa = media::span(out, "a:0")?.expect("output must keep the audio");
    let da = (oa.duration() - sa.duration()).abs();
    assert!(da <= frame + 1e-3, "audio duration off by {da:.4} s");
    let offset = ((oa.start - ov.start) - (sa.start - sv.start)).abs();
    let base_a = media::span(&baseline, "a:0")?.expect("baseline audio");
    let base_v = media::span(&baseline, "v:0")?.expect("baseline video");
    let base_offset = ((base_a.start - base_v.start) - (sa.start - sv.start)).abs();
    assert!(
        offset <= frame + 1e-3,
        "A/V start offset moved by {offset:.4} s (a single ffmpeg moves it {base_offset:.4} s)"
    );

    let psnr = quality::per_frame_psnr(src, &[out, &baseline])?;
    let (ours, single) = (&psnr[0], &psnr[1]);
    assert_eq!(ours.len() as u64, sv.count);
    let (worst_i, worst) = ours
        .iter()
        .zip(single)
        .map(|(o, s)| o - s)
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |a, (i, d)| if d < a.1 { (i, d) } else { a },
        );
    let min = ours.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "{}: frames {}/{}, video dur Δ {dv:.4} s, audio dur Δ {da:.4} s, A/V offset Δ {offset:.4} s, \
         min PSNR {min:.2} dB, worst per-frame Δ vs single ffmpeg {worst:+.3} dB at frame {worst_i}",
        src.file_name().unwrap().to_string_lossy(),
        ov.count,
        sv.count
    );
    for (i, (o, s)) in ours.iter().zip(single).enumerate() {
        assert!(
            *o >= s - 0.5,
            "frame {i}: PSNR {o:.2} dB is more than 0.5 dB below the single-process {s:.2} dB"
        );
    }
    Ok(())
}

fn nodes_used(events: &[JobEvent]) -> BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| match e {
            JobEvent::SegmentDone(d) if matches!(d.outcome, SegmentOutcome::Encoded { .. }) => {
                Some(d.node.to_string())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ntsc_source_with_b_frames_is_frame_exact() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::ntsc_source(fleet.media.path(), "ntsc.mp4", 20, "320x240")?;
    let mut req = fleet.request("ntsc", &src, "ntsc_out.mp4");
    req.segment_seconds = Some(4.0);
    fleet.submit(&req).await?;
    let done = fleet.wait_completed("ntsc", JOB_TIMEOUT).await?;
    assert!(
        done.segments >= 4,
        "expected several segments, got {}",
        done.segments
    );
    assert_eq!(done.frames, 599);
    let events = fleet.events(Some("ntsc")).await?;
    let nodes = nodes_used(&events);
    assert!(
        nodes.len() >= 2,
        "work should spread over the encoders: {nodes:?}"
    );
    assert_frame_exact(&fleet, &src, &fleet.out_path("ntsc_out.mp4"))?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sample_720p_is_frame_exact() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::sample_720p(fleet.media.path(), 3)?;
    let mut req = fleet.request("hd", &src, "hd_out.mp4");
    req.segment_seconds = Some(4.0);
    fleet.submit(&req).await?;
    let done = fleet.wait_completed("hd", JOB_TIMEOUT).await?;
    assert_eq!(
        done.segments, 3,
        "one segment per keyframe of the looped sample"
    );
    let nodes = nodes_used(&fleet.events(Some("hd")).await?);
    assert!(
        nodes.len() >= 2,
        "work should spread over the encoders: {nodes:?}"
    );
    assert_frame_exact(&fleet, &src, &fleet.out_path("hd_out.mp4"))?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_input_and_profile_give_byte_identical_outputs() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::ntsc_source(fleet.media.path(), "det.mp4", 6, "320x240")?;
    for id in ["det-a", "det-b"] {
        let mut req = fleet.request(id, &src, &format!("{id}.mp4"));
        req.segment_seconds = Some(2.0);
        fleet.submit(&req).await?;
    }
    fleet.wait_completed("det-a", JOB_TIMEOUT).await?;
    fleet.wait_completed("det-b", JOB_TIMEOUT).await?;
    let a = std::fs::read(fleet.out_path("det-a.mp4"))?;
    let b = std::fs::read(fleet.out_path("det-b.mp4"))?;
    assert!(!a.is_empty());
    assert!(a == b, "outputs differ ({} vs {} bytes)", a.len(), b.len());
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_job_event_yields_one_output_and_one_completed_event() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::tiny_source(fleet.media.path(), "dup.mp4")?;
    let req = fleet.request("dup", &src, "dup.mp4");
    let body = serde_json::to_vec(&req)?;
    // Twice within the duplicate window (same Nats-Msg-Id) ...
    fleet.submit_raw(&body, Some("dup")).await?;
    fleet.submit_raw(&body, Some("dup")).await?;
    fleet.wait_completed("dup", JOB_TIMEOUT).await?;
    // ... and once more as if it came back after the window (another message id): counted once
    // the splitter has handled it.
    let seq = fleet.submit_raw_seq(&body, Some("dup-again")).await?;
    fleet
        .wait_processed(
            subjects::STREAM_JOBS,
            subjects::CONSUMER_SPLITTER,
            seq,
            Duration::from_secs(60),
        )
        .await?;
    let events = fleet.events(Some("dup")).await?;
    let completed = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Completed(_)))
        .count();
    let failed = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Failed(_)))
        .count();
    let accepted = events
        .iter()
        .filter(|e| matches!(e, JobEvent::Accepted(_)))
        .count();
    assert_eq!((completed, failed, accepted), (1, 0, 1), "{events:#?}");
    let outputs: Vec<_> = std::fs::read_dir(fleet.out.path())?.collect();
    assert_eq!(outputs.len(), 1, "exactly one output file, no leftovers");
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_jobs_submitted_at_once_all_complete() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = media::ntsc_source(fleet.media.path(), "five.mp4", 3, "160x120")?;
    for i in 0..5 {
        let mut req = fleet.request(&format!("five-{i}"), &src, &format!("five-{i}.mp4"));
        req.segment_seconds = Some(1.0);
        fleet.submit(&req).await?;
    }
    for i in 0..5 {
        let id = format!("five-{i}");
        let c = fleet.wait_completed(&id, JOB_TIMEOUT).await?;
        assert_eq!(c.frames, 90);
        let terminal = fleet
            .events(Some(&id))
            .await?
            .into_iter()
            .filter(JobEvent::is_terminal)
            .count();
        assert_eq!(terminal, 1, "{id}: one terminal event");
    }
    let left = fleet.scratch.path().join("jobs");
    let leftovers: Vec<_> = std::fs::read_dir(&left)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "scratch media removed after the jobs: {leftovers:?}"
    );
    fleet.stop().await;
    Ok(())
}

/// Units of the long job: 400 by default (about a minute on two cores);
/// `FFLEET_TEST_LONG_UNITS=2000` (or more) runs the full-size check.
fn long_job_units() -> u32 {
    std::env::var("FFLEET_TEST_LONG_UNITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_of_hundreds_of_one_second_units_completes_with_small_records() -> Result<()> {
    let units = long_job_units();
    let fleet = TestFleet::spawn().await?;
    let src = media::long_tiny_source(fleet.media.path(), "long.mp4", units)?;
    let mut req = fleet.request("long", &src, "long.mp4");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    let timeout = JOB_TIMEOUT.max(Duration::from_millis(u64::from(units) * 500));
    let done = fleet.wait_completed("long", timeout).await?;
    assert_eq!(done.segments, units as usize, "one unit per keyframe");
    assert_eq!(done.frames, 10 * u64::from(units));
    // Every value in KV is small whatever the length: the job record holds one bit per unit,
    // each unit record only its own cut and result.
    let job = fleet
        .ctx()
        .jobs
        .store()
        .entry("long")
        .await?
        .expect("job record");
    let limit = 2_000 + units as usize / 4;
    assert!(
        job.value.len() < limit,
        "job record of {} bytes for {units} units",
        job.value.len()
    );
    fleet.stop().await;
    Ok(())
}
