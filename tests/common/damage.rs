//! A corpus of damaged media, generated from one clean clip with a seeded generator: random
//! bytes over the middle, a zeroed range, a truncated file, a destroyed keyframe, corrupt audio
//! packets (one in ten, and nine in ten), the first or the last second's video destroyed, a
//! file mostly destroyed (with and without audio), and MPEG-TS captures joined mid-GOP. What a
//! single ffmpeg makes of each is the reference.

use super::media::{ffmpeg, ffprobe_text};
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// xorshift32: the same bytes on every run.
struct Noise(u32);

impl Noise {
    fn fill(&mut self, bytes: &mut [u8]) {
        for b in bytes {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 17;
            self.0 ^= self.0 << 5;
            *b = self.0 as u8;
        }
    }
}

/// An 8 s 320x240 25 fps H.264 (x264 `veryfast`, `video` added) + AAC clip, written with the
/// output options `container` to `out`.
fn clip(out: &Path, video: &[&str], container: &[&str]) -> Result<()> {
    let mut args = vec![
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-pix_fmt",
        "yuv420p",
    ];
    args.extend_from_slice(video);
    args.extend_from_slice(&["-c:a", "aac"]);
    args.extend_from_slice(container);
    args.push(s(out));
    ffmpeg(&args)
}

/// The clip with one keyframe a second, in MP4 with its index at the front (so a truncated
/// copy still opens, as a streamed or interrupted upload's would).
pub fn clean(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("clean.mp4");
    clip(&p, &["-g", "25"], &["-movflags", "+faststart"])?;
    Ok(p)
}

/// Byte position and size of each packet of `stream` (`v:0`, `a:0`), with its keyframe flag.
fn packets(path: &Path, stream: &str) -> Result<Vec<(usize, usize, bool)>> {
    // ffprobe prints a packet's fields in its own order: size, pos, flags.
    let text = ffprobe_text(path, stream, "packet=pos,size,flags", "csv=p=0")?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.trim().split(',');
            let size = f.next().context("size")?.parse()?;
            let pos = f.next().context("pos")?.parse()?;
            Ok((pos, size, f.next().unwrap_or("").starts_with('K')))
        })
        .collect()
}

/// The corpus: `(name, file)` for each kind of damage.
pub fn corpus(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let clean = clean(dir)?;
    let data = std::fs::read(&clean)?;
    let n = data.len();
    let mut noise = Noise(0x9e37_79b9);
    let mut out = Vec::new();
    let mut write = |name: &'static str, bytes: &[u8]| -> Result<()> {
        let p = dir.join(format!("{name}.mp4"));
        std::fs::write(&p, bytes)?;
        out.push((name, p));
        Ok(())
    };
    // A quarter of the file, random, from its middle: several GOPs lose their keyframes, so
    // one segment holds the whole damaged stretch.
    let mut d = data.clone();
    noise.fill(&mut d[n * 3 / 8..n * 5 / 8]);
    write("random-middle", &d)?;
    let mut d = data.clone();
    d[n * 3 / 8..n * 5 / 8].fill(0);
    write("zeroed-range", &d)?;
    write("truncated", &data[..n * 3 / 5])?;
    // The keyframe of the fifth second, every byte of it random.
    let video = packets(&clean, "v:0")?;
    let (pos, size, _) = *video
        .iter()
        .filter(|p| p.2)
        .nth(4)
        .context("a fifth keyframe")?;
    let mut d = data.clone();
    noise.fill(&mut d[pos..pos + size]);
    write("keyframe-lost", &d)?;
    // Every tenth audio packet, random.
    let mut d = data.clone();
    for (pos, size, _) in packets(&clean, "a:0")?.into_iter().step_by(10) {
        noise.fill(&mut d[pos..pos + size]);
    }
    write("audio-corrupt", &d)?;
    // Nine audio packets in ten, random: past two thirds of the audio's decodes, not of the
    // file's (the video's count too).
    let mut d = data.clone();
    for (i, (pos, size, _)) in packets(&clean, "a:0")?.into_iter().enumerate() {
        if i % 10 != 0 {
            noise.fill(&mut d[pos..pos + size]);
        }
    }
    write("audio-mostly-corrupt", &d)?;
    // Every video packet of the first second, and of the last, random: the first (or last)
    // 1 s segment decodes no frame at all, and the output starts (or ends) a second in.
    let keys: Vec<usize> = video
        .iter()
        .enumerate()
        .filter(|(_, p)| p.2)
        .map(|(i, _)| i)
        .collect();
    let last_gop = *keys.last().context("a keyframe")?;
    for (name, range) in [
        ("first-second-lost", 0..keys[1]),
        ("last-second-lost", last_gop..video.len()),
    ] {
        let mut d = data.clone();
        for &(pos, size, _) in &video[range] {
            noise.fill(&mut d[pos..pos + size]);
        }
        write(name, &d)?;
    }
    // All but the first second destroyed: a single ffmpeg gives up on it.
    let (first_gop_end, ..) = video.iter().filter(|p| p.2).nth(1).context("keyframe")?;
    let mut d = data.clone();
    noise.fill(&mut d[*first_gop_end..]);
    write("mostly-destroyed", &d)?;
    // The same without audio: only the video's rate is left for the merge to judge.
    let video_only = dir.join("video-only.mp4");
    ffmpeg(&[
        "-i",
        s(&clean),
        "-map",
        "0:v",
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        s(&video_only),
    ])?;
    let mut d = std::fs::read(&video_only)?;
    let (first_gop_end, ..) = *packets(&video_only, "v:0")?
        .iter()
        .filter(|p| p.2)
        .nth(1)
        .context("keyframe")?;
    noise.fill(&mut d[first_gop_end..]);
    write("video-destroyed", &d)?;
    for (name, path) in captures(dir)? {
        out.push((name, path));
    }
    Ok(out)
}

/// MPEG-TS recordings joined mid-GOP, as a capture cut at a random byte is: the same clip with
/// a keyframe every 2 s, its first bytes gone up to a 188-byte packet. The frames before the
/// first keyframe cannot be decoded, and no decode call fails on them.
/// - `capture-joined-mid-gop`: joined 30 % in, 1.44 s before a keyframe: with 1 s segments the
///   first segment holds no frame that decodes.
/// - `capture-joined-before-keyframe`: joined at the video packet four before the third
///   keyframe: the first segment holds those frames and the keyframe's first ones, and its
///   video must start where the keyframe was (the concat demuxer places a file by its first
///   frame, which would move it early by the frames lost).
/// - `capture-joined-open-gop`: as the first, from an open-GOP encode.
fn captures(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let closed = capture_source(dir, "capture.ts", false)?;
    let open = capture_source(dir, "capture-open.ts", true)?;
    let data = std::fs::read(&closed)?;
    let video = packets(&closed, "v:0")?;
    let third_key = video
        .iter()
        .enumerate()
        .filter(|(_, p)| p.2)
        .nth(2)
        .context("a third keyframe")?
        .0;
    let open_data = std::fs::read(&open)?;
    let mut out = Vec::new();
    for (name, bytes, at) in [
        ("capture-joined-mid-gop", &data, data.len() * 30 / 100),
        (
            "capture-joined-before-keyframe",
            &data,
            video[third_key - 4].0,
        ),
        (
            "capture-joined-open-gop",
            &open_data,
            open_data.len() * 30 / 100,
        ),
    ] {
        let at = at / 188 * 188;
        let p = dir.join(format!("{name}.ts"));
        std::fs::write(&p, &bytes[at..])?;
        let first = packets(&p, "v:0")?;
        ensure!(
            first.first().is_some_and(|p| !p.2),
            "{name}: the cut should land mid-GOP"
        );
        out.push((name, p));
    }
    Ok(out)
}

/// The clip as an MPEG-TS recording with a keyframe every 2 s; `open`: open GOPs (the
/// B-frames after each keyframe refer back to the GOP before it, as broadcast encoders make
/// them), so the first keyframe's leading frames cannot decode either.
fn capture_source(dir: &Path, name: &str, open: bool) -> Result<PathBuf> {
    let ts = dir.join(name);
    let x264 = if open { "open-gop=1" } else { "open-gop=0" };
    let gop = [
        "-g",
        "50",
        "-keyint_min",
        "50",
        "-sc_threshold",
        "0",
        "-bf",
        "3",
        "-x264-params",
        x264,
    ];
    clip(&ts, &gop, &["-f", "mpegts"])?;
    Ok(ts)
}

/// What a single ffmpeg made of a file.
pub struct Single {
    pub ok: bool,
    /// Video frames decoded (frame timing passed through).
    pub frames: u64,
    /// Where the first video frame lies after the first audio sample, in seconds (none
    /// without both).
    pub video_after_audio: Option<f64>,
}

/// What a single ffmpeg makes of `path`, decoding its video and audio as a transcode does.
pub fn single_ffmpeg(path: &Path) -> Result<Single> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "quiet", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-map",
            "0:a?",
            "-fps_mode",
            "passthrough",
            "-f",
            "framecrc",
            "-",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let frames = text.lines().filter(|l| l.starts_with("0,")).count() as u64;
    // `#tb 0: 1/25` heads each stream; each frame line is `stream, dts, pts, duration, ...`.
    let time_base = |stream: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("#tb {stream}: ")))
            .and_then(|r| r.trim().parse::<ffleet_runtime::media::Rational>().ok())
    };
    let first = |stream: &str| {
        let tb = time_base(stream)?;
        text.lines()
            .filter(|l| l.starts_with(&format!("{stream},")))
            .filter_map(|l| l.split(',').nth(2)?.trim().parse::<i64>().ok())
            .min()
            .map(|pts| tb.seconds(pts))
    };
    let video_after_audio = first("0").zip(first("1")).map(|(v, a)| v - a);
    Ok(Single {
        ok: out.status.success(),
        frames,
        video_after_audio,
    })
}
