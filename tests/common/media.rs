//! Test media: synthetic sources made with ffmpeg's lavfi generators, the real 720p sample from
//! `../shared/media` when it is there (a generated 720p stand-in when not), and broken files.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn ffmpeg(args: &[&str]) -> Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .context("running ffmpeg")?;
    if !out.status.success() {
        bail!(
            "ffmpeg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A 29.97 fps H.264 source with B-frames and AAC audio, keyframes every 48 frames.
pub fn ntsc_source(dir: &Path, name: &str, secs: u32, size: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30000/1001"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        &secs.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "3",
        "-g",
        "48",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        p.to_str().expect("utf-8 path"),
    ])?;
    Ok(p)
}

/// A tiny, quick job: 2 s at 160x120, 25 fps, with audio.
pub fn tiny_source(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=44100",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-c:a",
        "aac",
        p.to_str().expect("utf-8 path"),
    ])?;
    Ok(p)
}

/// A long but tiny video-only source: `secs` seconds of 64x64 at 10 fps, a keyframe every
/// second, so 1 s segments make `secs` units at almost no encode cost. (At 1 or 2 fps the
/// merged output comes out twice as long: a separate, known defect.)
pub fn long_tiny_source(dir: &Path, name: &str, secs: u32) -> Result<PathBuf> {
    let p = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64:rate=10",
        "-t",
        &secs.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "10",
        "-pix_fmt",
        "yuv420p",
        p.to_str().expect("utf-8 path"),
    ])?;
    Ok(p)
}

/// The real sample clip, unless absent or `FFLEET_TEST_NO_SHARED` is set (to exercise the
/// fallback that machines without `../shared` take).
pub fn shared_sample() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/media/bigbuckbunny.mp4");
    (p.is_file() && std::env::var_os("FFLEET_TEST_NO_SHARED").is_none()).then_some(p)
}

/// `../shared/media/bigbuckbunny.mp4` (one keyframe, 132 frames) played `loops` times by stream
/// copy, so each loop starts on a keyframe; where that folder is absent, a generated 720p 25 fps
/// H.264 + AAC clip of the same length and keyframe spacing.
pub fn sample_720p(dir: &Path, loops: u32) -> Result<PathBuf> {
    let p = dir.join("sample720.mp4");
    if let Some(shared) = shared_sample() {
        ffmpeg(&[
            "-stream_loop",
            &(loops - 1).to_string(),
            "-i",
            shared.to_str().expect("utf-8 path"),
            "-c",
            "copy",
            p.to_str().expect("utf-8 path"),
        ])?;
    } else {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=500:sample_rate=48000",
            "-t",
            &format!("{:.2}", 5.28 * f64::from(loops)),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "132",
            "-x264-params",
            "scenecut=0",
            "-c:a",
            "aac",
            p.to_str().expect("utf-8 path"),
        ])?;
    }
    Ok(p)
}

/// ffprobe's text for `entries` of `stream` in output format `format`.
pub fn ffprobe_text(path: &Path, stream: &str, entries: &str, format: &str) -> Result<String> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            entries,
            "-of",
            format,
        ])
        .arg(path)
        .output()
        .context("running ffprobe")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// First line of ffprobe's CSV answer for `entries` of `stream`.
pub fn ffprobe_value(path: &Path, stream: &str, entries: &str) -> Result<Option<String>> {
    let text = ffprobe_text(path, stream, entries, "csv=p=0")?;
    // A stream with side data (a display matrix) gets an empty trailing field.
    Ok(text
        .lines()
        .next()
        .map(|l| l.trim().trim_end_matches(',').to_owned()))
}

/// Frames and span of one stream of a file, via ffprobe.
pub fn span(path: &Path, stream: &str) -> Result<Option<ffleet_runtime::media::probe::Span>> {
    let Some(tb) = ffprobe_value(path, stream, "stream=time_base")?.and_then(|t| t.parse().ok())
    else {
        return Ok(None);
    };
    let text = ffprobe_text(path, stream, "packet=pts,dts,duration,flags", "compact=p=0")?;
    let packets = ffleet_runtime::media::probe::parse_packets(&text);
    Ok(ffleet_runtime::media::probe::span_of(&packets, tb))
}

pub fn frame_rate(path: &Path) -> Result<f64> {
    let r: ffleet_runtime::media::Rational = ffprobe_value(path, "v:0", "stream=r_frame_rate")?
        .context("no frame rate")?
        .parse()?;
    Ok(r.as_f64())
}

/// A 4 s 160x120 25 fps clip with AAC audio, every audio packet's payload random and the
/// video's third second (one whole GOP) zeroed: it probes and cuts like any file, but its audio
/// decodes to nothing, so the tracks unit's ffmpeg fails (exit 69, the error rate) on every
/// node, every time.
pub fn poison_source(dir: &Path, name: &str) -> Result<PathBuf> {
    let good = dir.join(format!("{name}.good.mp4"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        good.to_str().expect("utf-8 path"),
    ])?;
    // ffprobe prints a packet's fields in its own order: size, then pos.
    let packets = |stream: &str| -> Result<Vec<(usize, usize)>> {
        ffprobe_text(&good, stream, "packet=pos,size", "csv=p=0")?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut f = l.trim().split(',');
                let size = f.next().context("size")?.parse()?;
                let pos = f.next().context("pos")?.parse()?;
                Ok((pos, size))
            })
            .collect()
    };
    let mut data = std::fs::read(&good)?;
    for (pos, size) in packets("v:0")?.into_iter().skip(50).take(25) {
        data[pos..pos + size].fill(0);
    }
    let mut seed = 0x1234_5678_u32;
    for (pos, size) in packets("a:0")? {
        for b in &mut data[pos..pos + size] {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
    }
    let p = dir.join(name);
    std::fs::write(&p, data)?;
    std::fs::remove_file(good)?;
    Ok(p)
}
