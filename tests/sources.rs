//! Sources as users have them, end to end on real nats-server and ffmpeg: rotated and mirrored
//! phone video, odd sizes and chroma layouts, colour tags and full range, several audio and
//! subtitle tracks with chapters, damaged packets, HDR10 metadata, segments of one or two
//! frames, and segments that start between keyframes (sparse keyframes, open GOP). Every output is compared frame by frame
//! with the source as displayed (and with `../shared/tools/check-output.py` where present).

mod common;

use anyhow::{Context, Result, ensure};
use common::{FleetOptions, JobClient, TestFleet, media, quality, sources};
use ffleet_runtime::profiles;
use std::path::Path;
use std::time::Duration;

const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Submits every `(id, source, output)` at once, with 1 s segments so each job has several.
async fn run_all(fleet: &TestFleet, jobs: &[(&str, &Path, &str)]) -> Result<()> {
    for (id, src, out) in jobs {
        let mut req = fleet.request(id, src, out);
        req.segment_seconds = Some(1.0);
        fleet.submit(&req).await?;
    }
    for (id, ..) in jobs {
        let done = fleet.wait_completed(id, JOB_TIMEOUT).await?;
        ensure!(done.segments >= 3, "{id}: only {} segments", done.segments);
    }
    Ok(())
}

/// The judge's checks: same frame count, every frame within 30 dB of the source as displayed,
/// and check-output.py where it can run.
fn assert_displays_like(src: &Path, out: &Path) -> Result<()> {
    assert_frames_within_30_db(src, out)?;
    if let Some(verdict) = sources::check_output_tool(src, out) {
        println!("{}", verdict?);
    }
    Ok(())
}

/// Same frame count, every frame within 30 dB of the source as displayed.
fn assert_frames_within_30_db(src: &Path, out: &Path) -> Result<()> {
    let psnr = quality::per_frame_psnr(src, &[out])?;
    let min = psnr[0].iter().copied().fold(f64::INFINITY, f64::min);
    let frames = media::span(src, "v:0")?.context("source video")?.count;
    ensure!(
        psnr[0].len() as u64 == frames,
        "{} frames of {frames}",
        psnr[0].len()
    );
    ensure!(min >= 30.0, "{}: min PSNR {min:.2} dB", out.display());
    Ok(())
}

fn probe(path: &Path, entries: &str) -> Result<String> {
    media::ffprobe_value(path, "v:0", entries)?.context("no video stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_and_mirrored_sources_display_as_a_single_ffmpeg_shows_them() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let dir = fleet.media.path();
    let base = sources::clip(dir, "upright.mp4", "192x108", "", &["-pix_fmt", "yuv420p"])?;
    let cases = [
        ("rot90", [0, -1, 1, 0]),
        ("rot180", [-1, 0, 0, -1]),
        ("rot270", [0, 1, -1, 0]),
        ("mirror", [-1, 0, 0, 1]),
        ("mirror90", [0, 1, 1, 0]),
    ];
    let mut jobs = Vec::new();
    for (id, m) in &cases {
        let src = dir.join(format!("{id}.mp4"));
        sources::with_display_matrix(&base, &src, *m)?;
        jobs.push((*id, src, format!("{id}_out.mp4")));
    }
    let refs: Vec<(&str, &Path, &str)> = jobs
        .iter()
        .map(|(i, s, o)| (*i, s.as_path(), o.as_str()))
        .collect();
    run_all(&fleet, &refs).await?;

    let profile = &fleet.config.profiles[&fleet.config.default_profile];
    let video = profiles::video_settings(&profile.variants["cpu"], None);
    for (id, src, out) in &jobs {
        let out = fleet.out_path(out);
        // A single ffmpeg with the same settings: it autorotates as it decodes.
        let single = fleet.out_path(&format!("{id}_single.mp4"));
        let mut args = vec!["-i", src.to_str().unwrap()];
        args.extend(video.iter().map(String::as_str));
        args.push(single.to_str().unwrap());
        media::ffmpeg(&args)?;
        ensure!(
            quality::size(&out)? == quality::size(&single)?,
            "{id}: displayed size differs from a single ffmpeg's"
        );
        let psnr = quality::per_frame_psnr(src, &[&out, &single])?;
        for (i, (o, s)) in psnr[0].iter().zip(&psnr[1]).enumerate() {
            ensure!(
                *o >= s - 0.5,
                "{id} frame {i}: {o:.2} dB, single ffmpeg {s:.2} dB"
            );
        }
        assert_displays_like(src, &out)?;
    }
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_sizes_and_chroma_layouts_are_converted_the_same_way_on_every_segment() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let dir = fleet.media.path();
    let odd444 = sources::clip(
        dir,
        "odd444.mp4",
        "320x180",
        "format=yuv444p,crop=319:179:0:0",
        &["-pix_fmt", "yuv444p"],
    )?;
    let p422 = sources::clip(dir, "p422.mp4", "318x178", "", &["-pix_fmt", "yuv422p10le"])?;
    let oddw = dir.join("oddw.mkv");
    media::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=322x180:rate=25",
        "-t",
        "3",
        "-vf",
        "format=rgb24,crop=321:180:0:0,format=yuv420p",
        "-c:v",
        "ffv1",
        oddw.to_str().unwrap(),
    ])?;
    let cases = [
        ("odd444", odd444.as_path(), "odd444_out.mp4", "318,178"),
        ("p422", p422.as_path(), "p422_out.mp4", "318,178"),
        ("oddw", oddw.as_path(), "oddw_out.mkv", "320,180"),
    ];
    let jobs: Vec<(&str, &Path, &str)> = cases.iter().map(|(i, s, o, _)| (*i, *s, *o)).collect();
    run_all(&fleet, &jobs).await?;
    for (id, src, out, size) in cases {
        let out = fleet.out_path(out);
        ensure!(probe(&out, "stream=width,height")? == size, "{id}: size");
        ensure!(
            probe(&out, "stream=pix_fmt")? == "yuv420p",
            "{id}: pixel format"
        );
        assert_displays_like(src, &out)?;
    }
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colour_tags_and_full_range_are_kept() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let dir = fleet.media.path();
    let tags = |p: &str, t: &str, m: &str| {
        [
            "-color_primaries".to_owned(),
            p.to_owned(),
            "-color_trc".to_owned(),
            t.to_owned(),
            "-colorspace".to_owned(),
            m.to_owned(),
        ]
    };
    let bt709 = tags("bt709", "bt709", "bt709");
    let mut extra: Vec<&str> = vec!["-pix_fmt", "yuv420p"];
    extra.extend(bt709.iter().map(String::as_str));
    let sdr = sources::clip(dir, "bt709.mp4", "192x108", "", &extra)?;
    let pq = tags("bt2020", "smpte2084", "bt2020nc");
    let mut extra: Vec<&str> = vec!["-pix_fmt", "yuv420p10le"];
    extra.extend(pq.iter().map(String::as_str));
    let hdr = sources::clip(dir, "pq.mkv", "192x108", "", &extra)?;
    let full = sources::clip(dir, "full.mp4", "192x108", "", &["-pix_fmt", "yuvj420p"])?;
    let cases = [
        (
            "bt709",
            sdr.as_path(),
            "bt709_out.mp4",
            "tv,bt709,bt709,bt709",
        ),
        (
            "pq",
            hdr.as_path(),
            "pq_out.mkv",
            "tv,bt2020nc,smpte2084,bt2020",
        ),
        ("full", full.as_path(), "full_out.mp4", "pc"),
    ];
    let jobs: Vec<(&str, &Path, &str)> = cases.iter().map(|(i, s, o, _)| (*i, *s, *o)).collect();
    run_all(&fleet, &jobs).await?;
    let entries = "stream=color_range,color_space,color_transfer,color_primaries";
    for (id, src, out, want) in cases {
        let out = fleet.out_path(out);
        let got = probe(&out, entries)?;
        ensure!(got.starts_with(want), "{id}: tags {got:?}, want {want:?}");
        let source_tags = probe(src, entries)?;
        println!("{id}: source {source_tags}, output {got}");
        assert_displays_like(src, &out)?;
    }
    fleet.stop().await;
    Ok(())
}

/// `(codec, language, title)` of every stream of `kind` (`a`, `s`).
fn tracks(path: &Path, kind: &str) -> Result<Vec<String>> {
    let text = media::ffprobe_text(
        path,
        kind,
        "stream=codec_name:stream_tags=language,title",
        "csv=p=0",
    )?;
    Ok(text.lines().map(|l| l.trim().to_owned()).collect())
}

fn chapters(path: &Path) -> Result<usize> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_chapters", "-of", "csv=p=0"])
        .arg(path)
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_audio_and_subtitle_track_chapters_and_metadata_are_kept() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = sources::multitrack(fleet.media.path(), "multi.mkv")?;
    let jobs = [
        ("tracks-mkv", src.as_path(), "multi_out.mkv"),
        ("tracks-mp4", src.as_path(), "multi_out.mp4"),
    ];
    run_all(&fleet, &jobs).await?;
    for (id, subtitle) in [("mkv", "subrip"), ("mp4", "mov_text")] {
        let out = fleet.out_path(&format!("multi_out.{id}"));
        let audio = tracks(&out, "a")?;
        ensure!(audio.len() == 2, "{id}: audio tracks {audio:?}");
        ensure!(
            audio[0].contains("eng") && audio[1].contains("fra"),
            "{id}: {audio:?}"
        );
        // ffmpeg's MP4 muxer has no place for a track title; Matroska keeps it.
        if id == "mkv" {
            ensure!(audio[0].contains("English"), "{id}: {audio:?}");
            ensure!(audio[1].contains("Français"), "{id}: {audio:?}");
        }
        let subs = tracks(&out, "s")?;
        ensure!(
            subs.len() == 1 && subs[0].starts_with(subtitle),
            "{id}: subtitles {subs:?}"
        );
        ensure!(
            subs[0].contains("eng"),
            "{id}: subtitle language lost: {subs:?}"
        );
        ensure!(chapters(&out)? == 2, "{id}: chapters");
        let title = media::ffprobe_text(&out, "v:0", "format_tags=title", "csv=p=0")?;
        ensure!(title.contains("A test film"), "{id}: title {title:?}");
        assert_displays_like(&src, &out)?;
    }
    let done = fleet.wait_completed("tracks-mp4", JOB_TIMEOUT).await?;
    ensure!(done.warnings.is_empty(), "{:?}", done.warnings);
    fleet.stop().await;
    Ok(())
}

/// The mastering display and content light levels of a 10-bit PQ source, as x265 writes them.
const MASTER_DISPLAY: &str = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)";

/// HDR10 side data of the first frame of `path`, as `type: key=value,...` lines.
fn hdr_side_data(path: &Path) -> Result<Vec<String>> {
    let text = media::ffprobe_text(path, "v:0", "frame=side_data_list:side_data", "default")?;
    // Only the first frame's: ffprobe was not told to stop, so cut at the second frame.
    Ok(text
        .split("[/FRAME]")
        .next()
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| {
            [
                "side_data_type=",
                "red_",
                "green_",
                "blue_",
                "white_point",
                "max_",
                "min_",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .filter(|l| !l.contains("User Data Unregistered"))
        .map(str::to_owned)
        .collect())
}

/// A 10-bit HEVC source with PQ tags and HDR10 static metadata comes out of the `hevc` profile
/// 10-bit, with its tags and the same mastering display and light levels in every segment's
/// bitstream; through `h264` (8-bit) the completed event says what was narrowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hdr10_metadata_and_bit_depth_are_kept_or_said_lost() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = fleet.media.path().join("hdr10.mp4");
    let params = format!("log-level=error:master-display={MASTER_DISPLAY}:max-cll=1000,400");
    media::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x90:rate=25",
        "-t",
        "3",
        "-pix_fmt",
        "yuv420p10le",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
        "-x265-params",
        &params,
        src.to_str().context("utf-8 path")?,
    ])?;
    let want = hdr_side_data(&src)?;
    ensure!(
        want.iter().any(|l| l.contains("Mastering display"))
            && want.iter().any(|l| l.contains("Content light level")),
        "the source has no HDR10 side data: {want:?}"
    );
    for (id, profile, out) in [
        ("hdr-hevc", "hevc", "hdr_hevc.mkv"),
        ("hdr-hevc-mp4", "hevc", "hdr_hevc.mp4"),
        ("hdr-h264", "h264", "hdr_h264.mp4"),
    ] {
        let mut req = fleet.request(id, &src, out);
        req.segment_seconds = Some(1.0);
        req.profile = Some(profile.into());
        fleet.submit(&req).await?;
    }

    let done = fleet.wait_completed("hdr-hevc", JOB_TIMEOUT).await?;
    let out = fleet.out_path("hdr_hevc.mkv");
    ensure!(done.segments >= 3, "only {} segments", done.segments);
    ensure!(done.warnings.is_empty(), "hevc warned: {:?}", done.warnings);
    ensure!(
        probe(&out, "stream=pix_fmt")? == "yuv420p10le",
        "not kept 10-bit"
    );
    let tags = probe(&out, "stream=color_primaries,color_transfer,color_space")?;
    ensure!(tags == "bt2020nc,smpte2084,bt2020", "tags: {tags}");
    ensure!(
        hdr_side_data(&out)? == want,
        "output side data differs: {:?}",
        hdr_side_data(&out)?
    );
    // Every segment's bitstream carries it, not only the first (a decoder carries it over to
    // later frames, so the SEI messages themselves are counted).
    let sei = |kind: &str| -> Result<usize> {
        let traced = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "info", "-i"])
            .arg(&out)
            .args([
                "-map",
                "0:v:0",
                "-c",
                "copy",
                "-bsf:v",
                "trace_headers",
                "-f",
                "null",
                "-",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&traced.stderr)
            .matches(kind)
            .count())
    };
    for kind in ["Mastering Display Colour Volume", "Content Light Level"] {
        let n = sei(kind)?;
        ensure!(
            n >= done.segments,
            "{n} {kind} SEI messages, {} segments",
            done.segments
        );
    }
    // The source's keyframes stay keyframes.
    let keys = |p: &Path| -> Result<Vec<String>> {
        Ok(
            media::ffprobe_text(p, "v:0", "packet=pts_time,flags", "csv=p=0")?
                .lines()
                .filter(|l| l.contains(",K"))
                .filter_map(|l| l.split(',').next().map(str::to_owned))
                .collect(),
        )
    };
    let (src_keys, out_keys) = (keys(&src)?, keys(&out)?);
    for k in &src_keys {
        let t: f64 = k.parse()?;
        ensure!(
            out_keys
                .iter()
                .any(|o| o.parse::<f64>().is_ok_and(|o| (o - t).abs() < 1e-3)),
            "source keyframe at {k} s is no keyframe in the output ({out_keys:?})"
        );
    }
    assert_displays_like(&src, &out)?;

    // HEVC in MP4 is tagged as Apple's players require it.
    fleet.wait_completed("hdr-hevc-mp4", JOB_TIMEOUT).await?;
    let tag = probe(&fleet.out_path("hdr_hevc.mp4"), "stream=codec_tag_string")?;
    ensure!(tag == "hvc1", "HEVC in MP4 tagged {tag}");

    let done = fleet.wait_completed("hdr-h264", JOB_TIMEOUT).await?;
    println!("h264 warnings: {:?}", done.warnings);
    ensure!(
        done.warnings
            .iter()
            .any(|w| w.contains("10-bit pictures are encoded as 8-bit")),
        "no bit-depth warning: {:?}",
        done.warnings
    );
    ensure!(
        done.warnings
            .iter()
            .any(|w| w.contains("not written by h264_nvenc")),
        "no warning for the nvenc variant: {:?}",
        done.warnings
    );
    fleet.stop().await;
    Ok(())
}

/// Every video packet's time from the first, in order; packets a program stream left unstamped
/// get the time their decode order gives them (`+genpts`, as a single ffmpeg gives them).
fn frame_times(path: &Path) -> Result<Vec<f64>> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-fflags",
            "+genpts",
            "-select_streams",
            "v:0",
        ])
        .args(["-show_entries", "packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()?;
    ensure!(out.status.success(), "ffprobe {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut t: Vec<f64> = text
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    t.sort_by(f64::total_cmp);
    let first = t.first().copied().unwrap_or(0.0);
    Ok(t.iter().map(|x| x - first).collect())
}

/// Every frame of `out` at its time in `src` (from each one's first frame), within a millisecond.
fn assert_same_frame_times(name: &str, src: &Path, out: &Path) -> Result<()> {
    let (want, got) = (frame_times(src)?, frame_times(out)?);
    ensure!(
        want.len() == got.len(),
        "{name}: {} frames, the source {}",
        got.len(),
        want.len()
    );
    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
        ensure!(
            (a - b).abs() < 1e-3,
            "{name}: frame {i} at {b:.3} s, in the source at {a:.3} s"
        );
    }
    Ok(())
}

/// A picture size that changes inside a segment (a stream spliced from two sizes, the change
/// on a keyframe too close to the segment's start to cut at) keeps every frame's time: ffmpeg
/// rebuilds the filter graph there, so the segment's offset must not be taken from the graph's
/// first frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_size_change_inside_a_segment_keeps_every_frames_time() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let dir = fleet.media.path();
    let part = |name: &str, size: &str, frames: &str| -> Result<()> {
        let pattern = format!("testsrc2=size={size}:rate=25");
        let out = dir.join(name);
        media::ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &pattern,
            "-frames:v",
            frames,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            out.to_str().context("utf-8 path")?,
        ])
    };
    part("small.ts", "160x120", "10")?;
    part("large.ts", "320x240", "75")?;
    let list = dir.join("parts.txt");
    std::fs::write(&list, "file small.ts\nfile large.ts\n")?;
    let src = dir.join("resized.ts");
    media::ffmpeg(&[
        "-f",
        "concat",
        "-i",
        list.to_str().context("utf-8 path")?,
        "-c",
        "copy",
        src.to_str().context("utf-8 path")?,
    ])?;
    let mut req = fleet.request("resized", &src, "resized.mkv");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    fleet.wait_completed("resized", JOB_TIMEOUT).await?;
    assert_same_frame_times("resized", &src, &fleet.out_path("resized.mkv"))?;
    fleet.stop().await;
    Ok(())
}

/// A segment of one or two frames merges to its own place and length: the NUT demuxer leaves
/// such a short file's start time unknown, which once doubled every segment's offset (a 1 fps
/// source cut into 1 s segments merged to 119 s for 60).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_of_one_or_two_frames_merge_frame_exact() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let dir = fleet.media.path();
    // (name, frame rate, seconds, x264 options, segment seconds, segments wanted)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], f64, u32);
    let cases: [Case; 3] = [
        ("fps1", "1", "12", &["-g", "1"], 1.0, 12),
        ("fps2", "2", "12", &["-g", "2", "-bf", "1"], 1.0, 12),
        ("fps05", "1/2", "24", &["-g", "1"], 1.0, 12),
    ];
    for (name, rate, secs, x264, seg, _) in &cases {
        let src = dir.join(format!("{name}.mp4"));
        let pattern = format!("testsrc2=size=96x64:rate={rate}");
        let mut args = vec!["-f", "lavfi", "-i", &pattern, "-t", secs];
        args.extend([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        ]);
        args.extend(x264.iter().copied());
        args.push(src.to_str().context("utf-8 path")?);
        media::ffmpeg(&args)?;
        let mut req = fleet.request(name, &src, &format!("{name}_out.mp4"));
        req.segment_seconds = Some(*seg);
        fleet.submit(&req).await?;
    }
    for (name, _, _, _, _, segments) in &cases {
        let done = fleet.wait_completed(name, JOB_TIMEOUT).await?;
        ensure!(
            done.segments as u32 == *segments,
            "{name}: {} segments, wanted {segments}",
            done.segments
        );
        let src = dir.join(format!("{name}.mp4"));
        let out = fleet.out_path(&format!("{name}_out.mp4"));
        let (a, b) = (
            media::span(&src, "v:0")?.context("source video")?,
            media::span(&out, "v:0")?.context("output video")?,
        );
        ensure!(
            a.count == b.count && (a.duration() - b.duration()).abs() < 1e-3,
            "{name}: {} frames over {:.3} s, the source {} over {:.3} s",
            b.count,
            b.duration(),
            a.count,
            a.duration()
        );
        assert_displays_like(&src, &out)?;
    }
    fleet.stop().await;
    Ok(())
}

/// Segments start at any frame: a source with one keyframe, open-GOP sources (MPEG-2 with
/// B-frames in MPEG-TS and in a program stream that leaves some packets unstamped, x265 with
/// `open-gop`: no keyframe is a safe cut) and a 1 fps source cut into one-frame segments between
/// its keyframes each get as many segments as a source with a keyframe every second would, and
/// come out frame-exact: every frame at its source time and within 30 dB of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_start_between_keyframes_and_merge_frame_exact() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let dir = fleet.media.path();
    // (name, frame rate, seconds, encoder options, segment seconds, segments wanted)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], f64, u32);
    let cases: [Case; 5] = [
        (
            "sparse.mp4",
            "25",
            "6",
            &[
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-bf",
                "2",
                "-pix_fmt",
                "yuv420p",
                "-x264-params",
                "keyint=1000:min-keyint=1000:scenecut=0",
            ],
            1.0,
            6,
        ),
        (
            "open.ts",
            "25",
            "4",
            &["-c:v", "mpeg2video", "-g", "50", "-bf", "2", "-q:v", "4"],
            1.0,
            4,
        ),
        (
            // An MPEG program stream stamps only some of these frames' packets.
            "partly-stamped.mpg",
            "25",
            "4",
            &["-c:v", "mpeg2video", "-g", "50", "-bf", "2", "-q:v", "4"],
            1.0,
            4,
        ),
        (
            "open265.mkv",
            "25",
            "4",
            &[
                "-c:v",
                "libx265",
                "-pix_fmt",
                "yuv420p",
                "-x265-params",
                "keyint=50:min-keyint=50:open-gop=1:scenecut=0:log-level=error",
            ],
            1.0,
            4,
        ),
        (
            "slow.mp4",
            "1",
            "12",
            &[
                "-c:v", "libx264", "-preset", "veryfast", "-g", "12", "-bf", "1", "-pix_fmt",
                "yuv420p",
            ],
            1.0,
            12,
        ),
    ];
    for (name, rate, secs, enc, seg, _) in &cases {
        let src = dir.join(name);
        let pattern = format!("testsrc2=size=160x96:rate={rate}");
        let mut args = vec!["-f", "lavfi", "-i", &pattern, "-t", secs];
        args.extend(enc.iter().copied());
        args.push(src.to_str().context("utf-8 path")?);
        media::ffmpeg(&args)?;
        let mut req = fleet.request(&name.replace('.', "-"), &src, &format!("{name}.out.mkv"));
        req.segment_seconds = Some(*seg);
        fleet.submit(&req).await?;
    }
    for (name, _, _, _, _, segments) in &cases {
        let src = dir.join(name);
        let keyframes = media::ffprobe_text(&src, "v:0", "packet=flags", "csv=p=0")?
            .lines()
            .filter(|l| l.contains('K'))
            .count();
        let done = fleet
            .wait_completed(&name.replace('.', "-"), JOB_TIMEOUT)
            .await?;
        ensure!(
            done.segments as u32 == *segments && done.segments as usize > keyframes,
            "{name}: {} segments from {keyframes} keyframes, wanted {segments}",
            done.segments
        );
        let out = fleet.out_path(&format!("{name}.out.mkv"));
        assert_same_frame_times(name, &src, &out)?;
        if name.ends_with(".mpg") {
            // check-output.py counts the source's stamped packets only (98 of these 100
            // frames), where ffmpeg decodes every frame.
            assert_frames_within_30_db(&src, &out)?;
        } else {
            assert_displays_like(&src, &out)?;
        }
    }
    fleet.stop().await;
    Ok(())
}

/// Presentation times (s) of a file's video keyframes, from its first frame's.
fn keyframe_times(path: &Path) -> Result<Vec<f64>> {
    let text = media::ffprobe_text(path, "v:0", "packet=pts_time,flags", "csv=p=0")?;
    let times: Vec<(f64, bool)> = text
        .lines()
        .filter_map(|l| Some((l.split(',').next()?.parse().ok()?, l.contains('K'))))
        .collect();
    let first = times.iter().map(|t| t.0).fold(f64::INFINITY, f64::min);
    let mut out: Vec<f64> = times.iter().filter(|t| t.1).map(|t| t.0 - first).collect();
    out.sort_by(f64::total_cmp);
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_start_on_shot_changes_near_the_length_asked_for() -> Result<()> {
    // x264 as `h264-fast`, but without keyframes of its own at scene changes: the output's
    // keyframes are then exactly the segments' first frames.
    let fleet = TestFleet::spawn_with(FleetOptions {
        tweak: Box::new(|cfg| {
            let mut p = cfg.profiles["h264-fast"].clone();
            let cpu = p.variants.get_mut("cpu").expect("a cpu variant");
            let at = cpu
                .args
                .iter()
                .position(|a| a == "-x264-params")
                .expect("x264 params");
            cpu.args[at + 1].push_str(":scenecut=0:keyint=1000");
            p.variants.retain(|k, _| k == "cpu");
            cfg.profiles.insert("shots".into(), p);
        }),
        ..Default::default()
    })
    .await?;
    let dir = fleet.media.path();
    let mp4 = sources::shots(dir, "shots.mp4")?;
    // The same stream in MPEG-TS, whose times start at 1.4 s: the scan's times are the source's.
    let ts = dir.join("shots.ts");
    media::ffmpeg(&[
        "-i",
        mp4.to_str().context("utf-8")?,
        "-c",
        "copy",
        ts.to_str().context("utf-8")?,
    ])?;
    for src in [&mp4, &ts] {
        let name = src
            .file_name()
            .context("name")?
            .to_string_lossy()
            .replace('.', "-");
        let mut req = fleet.request(&name, src, &format!("{name}.out.mkv"));
        req.segment_seconds = Some(2.0);
        req.profile = Some("shots".into());
        fleet.submit(&req).await?;
    }
    for src in [&mp4, &ts] {
        let name = src
            .file_name()
            .context("name")?
            .to_string_lossy()
            .replace('.', "-");
        let done = fleet.wait_completed(&name, JOB_TIMEOUT).await?;
        let out = fleet.out_path(&format!("{name}.out.mkv"));
        // Without the shots: even 2 s pieces (0, 2, 4, 6, 8). Each change lies within a quarter
        // of a target of the length asked for, so every one starts a segment.
        let mut wanted = vec![0.0];
        wanted.extend(sources::SHOT_CHANGES);
        let got = keyframe_times(&out)?;
        ensure!(
            done.segments as usize == wanted.len()
                && got.len() == wanted.len()
                && got.iter().zip(&wanted).all(|(g, w)| (g - w).abs() < 0.001),
            "{name}: {} segments starting at {got:?}, wanted {wanted:?}",
            done.segments
        );
        assert_same_frame_times(&name, src, &out)?;
        assert_displays_like(src, &out)?;
    }
    fleet.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damaged_packets_are_concealed_as_a_single_ffmpeg_conceals_them() -> Result<()> {
    let fleet = TestFleet::spawn().await?;
    let src = sources::damaged(fleet.media.path(), "damaged.mp4")?;
    let mut req = fleet.request("damaged", &src, "damaged_out.mkv");
    req.segment_seconds = Some(1.0);
    fleet.submit(&req).await?;
    let done = fleet.wait_completed("damaged", JOB_TIMEOUT).await?;
    let single = sources::decoded_frames(&src)?;
    let out = fleet.out_path("damaged_out.mkv");
    let ours = media::span(&out, "v:0")?.context("output video")?.count;
    println!(
        "damaged: {} decode errors, {ours} frames out, a single ffmpeg decodes {single}",
        done.decode_errors
    );
    ensure!(done.decode_errors > 0, "no decode errors reported");
    ensure!(
        ours == single && done.frames == single,
        "{ours} frames, single ffmpeg {single}"
    );
    ensure!(media::span(&out, "a:0")?.is_some(), "audio lost");
    fleet.stop().await;
    Ok(())
}
