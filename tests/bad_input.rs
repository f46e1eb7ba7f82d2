//! Bad input, one test each: the job fails with a clear reason (or the request is refused with
//! one), no service stops, and a good job submitted right after still completes.

mod common;

use anyhow::Result;
use common::{FleetOptions, JobClient, TestFleet, media};
use ffleet_runtime::messages::JobEvent;
use ffleet_runtime::reason::Reason;
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Submits `bad` (a request body and message id), expects a failed event for `job` (or for the
/// unnamed-request subject when `None`) with `reason`, then proves the fleet still works.
async fn refused(
    fleet: &mut TestFleet,
    body: &[u8],
    msg_id: Option<&str>,
    job: Option<&str>,
    reason: Reason,
) -> Result<String> {
    fleet.submit_raw(body, msg_id).await?;
    let failed = match job {
        Some(j) => fleet.wait_failed(j, TIMEOUT).await?,
        None => {
            let deadline = tokio::time::Instant::now() + TIMEOUT;
            loop {
                if let Some(JobEvent::Failed(f)) = fleet.events(None).await?.into_iter().next() {
                    break f;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no failed event for the unnamed request"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(failed.reason, reason, "message: {}", failed.message);
    assert!(!failed.message.is_empty());
    println!("{reason}: {}", failed.message);
    if let Some(j) = job {
        let terminal = fleet
            .events(Some(j))
            .await?
            .into_iter()
            .filter(JobEvent::is_terminal)
            .count();
        assert_eq!(terminal, 1, "exactly one terminal event");
    }
    still_works(fleet).await?;
    Ok(failed.message)
}

/// A good job right after completes, and every service is still up.
async fn still_works(fleet: &mut TestFleet) -> Result<()> {
    let good = media::tiny_source(fleet.media.path(), "good.mp4")?;
    let id = format!("good-{}", uuid::Uuid::new_v4().simple());
    fleet
        .submit(&fleet.request(&id, &good, &format!("{id}.mp4")))
        .await?;
    fleet.wait_completed(&id, TIMEOUT).await?;
    fleet.assert_running()
}

async fn bad_file(name: &str, contents: &[u8], reason: Reason) -> Result<String> {
    let mut fleet = TestFleet::spawn().await?;
    let path = fleet.media.path().join(name);
    std::fs::write(&path, contents)?;
    let body = serde_json::to_vec(&fleet.request("bad", &path, "bad.mp4"))?;
    let msg = refused(&mut fleet, &body, Some("bad"), Some("bad"), reason).await?;
    assert!(
        !fleet.out_path("bad.mp4").exists(),
        "no output for a failed job"
    );
    fleet.stop().await;
    Ok(msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_file() -> Result<()> {
    let mut fleet = TestFleet::spawn().await?;
    let path = fleet.media.path().join("nope.mp4");
    let body = serde_json::to_vec(&fleet.request("bad", &path, "bad.mp4"))?;
    let msg = refused(
        &mut fleet,
        &body,
        Some("bad"),
        Some("bad"),
        Reason::InputMissing,
    )
    .await?;
    assert!(msg.contains("does not exist"), "{msg}");
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_file() -> Result<()> {
    bad_file("empty.mp4", b"", Reason::InputEmpty)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hard_link_to_a_file_outside_the_roots() -> Result<()> {
    let mut fleet = TestFleet::spawn().await?;
    // A playable video outside every root, on the same file system as the input root (a hard
    // link cannot cross file systems).
    let outside = tempfile::Builder::new()
        .prefix("ffleet-outside-")
        .tempdir_in(fleet.media.path().parent().expect("a parent"))?;
    let secret = media::tiny_source(outside.path(), "secret.mp4")?;
    let path = fleet.media.path().join("linked.mp4");
    std::fs::hard_link(&secret, &path)?;
    let body = serde_json::to_vec(&fleet.request("bad", &path, "bad.mp4"))?;
    let msg = refused(
        &mut fleet,
        &body,
        Some("bad"),
        Some("bad"),
        Reason::InputNotAllowed,
    )
    .await?;
    assert!(msg.contains("hard links"), "{msg}");
    assert!(
        !fleet.out_path("bad.mp4").exists(),
        "no output for a failed job"
    );
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_file_named_mp4() -> Result<()> {
    let msg = bad_file(
        "notes.mp4",
        b"these are my notes, not a video\nline two\n",
        Reason::InputUnreadable,
    )
    .await?;
    assert!(msg.contains("ffprobe"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncated_mp4() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = media::ntsc_source(dir.path(), "whole.mp4", 4, "160x120")?;
    let bytes = std::fs::read(src)?;
    bad_file(
        "truncated.mp4",
        &bytes[..bytes.len() / 2],
        Reason::InputUnreadable,
    )
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncated_faststart_mp4_fails_or_completes_consistently() -> Result<()> {
    // moov first: ffprobe reads the index, but half the media is gone. Whatever ffleet decides,
    // it must be a clear failure, never a short output passed off as complete.
    let dir = tempfile::tempdir()?;
    let whole = dir.path().join("fs.mp4");
    media::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-movflags",
        "+faststart",
        whole.to_str().unwrap(),
    ])?;
    let bytes = std::fs::read(&whole)?;
    let mut fleet = TestFleet::spawn().await?;
    let path = fleet.media.path().join("cut.mp4");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3])?;
    fleet
        .submit(&fleet.request("cut", &path, "cut.mp4"))
        .await?;
    match fleet.wait_terminal("cut", TIMEOUT).await? {
        JobEvent::Failed(f) => println!("{}: {}", f.reason, f.message),
        JobEvent::Completed(c) => {
            let span = media::span(&fleet.out_path("cut.mp4"), "v:0")?.expect("video");
            assert_eq!(
                span.count, c.frames,
                "the completed event must describe the output"
            );
            println!("completed with the {} readable frames", c.frames);
        }
        other => panic!("unexpected {other:?}"),
    }
    still_works(&mut fleet).await?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audio_only_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = dir.path().join("a.m4a");
    media::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440",
        "-t",
        "2",
        "-c:a",
        "aac",
        a.to_str().unwrap(),
    ])?;
    let msg = bad_file("audio.mp4", &std::fs::read(a)?, Reason::NoVideoStream).await?;
    assert!(msg.contains("audio"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn playlist_pointing_elsewhere() -> Result<()> {
    // An HLS playlist named .mp4 that references a file outside the roots: the demuxer
    // whitelist refuses HLS, so nothing outside is opened.
    let outside = tempfile::tempdir()?;
    let target = media::tiny_source(outside.path(), "secret.mp4")?;
    let playlist = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{}\n#EXT-X-ENDLIST\n",
        target.display()
    );
    bad_file("list.mp4", playlist.as_bytes(), Reason::InputUnreadable)
        .await
        .map(drop)
}

/// Submits a good request for a tiny source, edited by `edit`, as job `id`; expects `reason`.
async fn refuse_edited(
    fleet: &mut TestFleet,
    id: &str,
    edit: impl FnOnce(&TestFleet, &mut Value),
    reason: Reason,
) -> Result<String> {
    let src = media::tiny_source(fleet.media.path(), "in.mp4")?;
    let mut req = serde_json::to_value(fleet.request(id, &src, "bad.mp4"))?;
    edit(fleet, &mut req);
    refused(
        fleet,
        &serde_json::to_vec(&req)?,
        Some(id),
        Some(id),
        reason,
    )
    .await
}

/// `refuse_edited` on a fleet of its own.
async fn bad_request(edit: impl FnOnce(&TestFleet, &mut Value), reason: Reason) -> Result<String> {
    let mut fleet = TestFleet::spawn().await?;
    let msg = refuse_edited(&mut fleet, "bad", edit, reason).await?;
    fleet.stop().await;
    Ok(msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_profile() -> Result<()> {
    let msg = bad_request(
        |_, r| r["profile"] = "h266-ultra".into(),
        Reason::UnknownProfile,
    )
    .await?;
    assert!(msg.contains("h264"), "lists the available profiles: {msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quality_override_out_of_range() -> Result<()> {
    let msg = bad_request(
        |_, r| r["overrides"] = json!({"quality": 99}),
        Reason::OverrideOutOfRange,
    )
    .await?;
    assert!(msg.contains("10..=40"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segment_length_out_of_range() -> Result<()> {
    bad_request(
        |_, r| r["segment_seconds"] = json!(0.01),
        Reason::OverrideOutOfRange,
    )
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn input_outside_the_roots() -> Result<()> {
    let mut fleet = TestFleet::spawn().await?;
    let outside = tempfile::tempdir()?;
    let elsewhere = media::tiny_source(outside.path(), "elsewhere.mp4")?;
    let direct = elsewhere.display().to_string();
    refuse_edited(
        &mut fleet,
        "bad1",
        |_, r| r["input"] = direct.into(),
        Reason::InputNotAllowed,
    )
    .await?;
    // Climbing out with ../ from inside the root.
    let dir = outside
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let climb = |f: &TestFleet, r: &mut Value| {
        r["input"] = format!("{}/../{dir}/elsewhere.mp4", f.media.path().display()).into()
    };
    refuse_edited(&mut fleet, "bad2", climb, Reason::InputNotAllowed).await?;
    // ffmpeg protocol tricks.
    for (i, uri) in [
        "concat:/etc/passwd|/etc/hosts",
        "http://127.0.0.1:1/x.mp4",
        "pipe:0",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("bad-proto-{i}");
        refuse_edited(
            &mut fleet,
            &id,
            |_, r| r["input"] = (*uri).into(),
            Reason::InputNotAllowed,
        )
        .await?;
    }
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_outside_the_roots() -> Result<()> {
    let mut fleet = TestFleet::spawn().await?;
    let up = |f: &TestFleet, r: &mut Value| {
        r["output"] = format!("{}/../escaped.mp4", f.out.path().display()).into()
    };
    refuse_edited(&mut fleet, "bad1", up, Reason::OutputNotAllowed).await?;
    let into_input = |f: &TestFleet, r: &mut Value| {
        r["output"] = f
            .media
            .path()
            .join("into-the-input-root.mp4")
            .display()
            .to_string()
            .into()
    };
    refuse_edited(&mut fleet, "bad2", into_input, Reason::OutputNotAllowed).await?;
    let avi = |f: &TestFleet, r: &mut Value| {
        r["output"] = f.out_path("x.avi").display().to_string().into()
    };
    refuse_edited(&mut fleet, "bad3", avi, Reason::OutputNotAllowed).await?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_json() -> Result<()> {
    let mut fleet = TestFleet::spawn().await?;
    // Named by its Nats-Msg-Id...
    refused(
        &mut fleet,
        b"{\"version\": 1, \"job_id\": ",
        Some("broken"),
        Some("broken"),
        Reason::MalformedRequest,
    )
    .await?;
    // ... and with no usable name at all.
    refused(
        &mut fleet,
        b"\x00\xffnot json",
        Some("has.dots"),
        None,
        Reason::MalformedRequest,
    )
    .await?;
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_schema_version() -> Result<()> {
    let msg = bad_request(|_, r| r["version"] = 9.into(), Reason::UnsupportedVersion).await?;
    assert!(msg.contains("version 1"), "{msg}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_ffmpeg_arguments_are_refused() -> Result<()> {
    let edit = |_: &TestFleet, r: &mut Value| {
        r["overrides"] = json!({"args": ["-vf", "movie=/etc/passwd"]})
    };
    bad_request(edit, Reason::InvalidRequest).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn absurd_dimensions_and_duration() -> Result<()> {
    let mut fleet = TestFleet::spawn_with(FleetOptions {
        tweak: Box::new(|c| {
            c.limits.max_width = 320;
            c.limits.max_duration_secs = 3.0;
        }),
        ..Default::default()
    })
    .await?;
    let wide = media::ntsc_source(fleet.media.path(), "wide.mp4", 1, "640x360")?;
    let req = fleet.request("wide", &wide, "wide.mp4");
    refused(
        &mut fleet,
        &serde_json::to_vec(&req)?,
        Some("wide"),
        Some("wide"),
        Reason::LimitsExceeded,
    )
    .await?;
    let long = media::ntsc_source(fleet.media.path(), "long.mp4", 5, "160x120")?;
    let req = fleet.request("long", &long, "long.mp4");
    refused(
        &mut fleet,
        &serde_json::to_vec(&req)?,
        Some("long"),
        Some("long"),
        Reason::LimitsExceeded,
    )
    .await?;
    fleet.stop().await;
    Ok(())
}
