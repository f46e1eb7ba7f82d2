//! Real-world source shapes made in the test: display-matrix rotation and mirroring, odd sizes
//! and chroma layouts, colour tags, several audio and subtitle tracks with chapters, and
//! damaged packets. Each is small and short, with a keyframe every second so a 3 s clip cuts
//! into three 1 s segments.

use super::media::{ffmpeg, ffprobe_text};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Shot changes (s) of [`shots`]: five unlike test patterns, each a whole number of frames.
pub const SHOT_CHANGES: [f64; 4] = [2.4, 4.2, 6.6, 8.2];

/// 10 s at 25 fps in five shots (changes at [`SHOT_CHANGES`]) with a single keyframe and
/// B-frames: where its segments start is up to the planner, not the source's GOP.
pub fn shots(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    let mut ends = SHOT_CHANGES.to_vec();
    ends.push(10.0);
    let patterns = [
        "testsrc2",
        "smptehdbars",
        "mandelbrot",
        "rgbtestsrc",
        "testsrc",
    ];
    let mut inputs: Vec<String> = Vec::new();
    let mut start = 0.0;
    for (pattern, end) in patterns.iter().zip(&ends) {
        inputs.extend([
            "-f".into(),
            "lavfi".into(),
            "-i".into(),
            format!(
                "{pattern}=size=160x96:rate=25,trim=duration={:.2}",
                end - start
            ),
        ]);
        start = *end;
    }
    let mut args: Vec<&str> = inputs.iter().map(String::as_str).collect();
    args.extend([
        "-filter_complex",
        "[0][1][2][3][4]concat=n=5:v=1:a=0,format=yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "2",
        "-x264-params",
        "keyint=1000:min-keyint=1000:scenecut=0",
        s(&p),
    ]);
    ffmpeg(&args)?;
    Ok(p)
}

/// A 3 s 25 fps H.264 clip of `size`, made from `filters` (after the test pattern), with extra
/// encoder options.
pub fn clip(dir: &Path, name: &str, size: &str, filters: &str, extra: &[&str]) -> Result<PathBuf> {
    let p = dir.join(name);
    let pattern = format!("testsrc2=size={size}:rate=25");
    let mut args = vec!["-f", "lavfi", "-i", &pattern, "-t", "3"];
    if !filters.is_empty() {
        args.extend(["-vf", filters]);
    }
    args.extend([
        "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "2",
    ]);
    args.extend(extra);
    args.push(s(&p));
    ffmpeg(&args)?;
    Ok(p)
}

/// Rewrites the video track's display matrix (MP4 `tkhd`) to `[a b; c d]` in whole units,
/// as phones and editors write it for rotated or mirrored video.
pub fn with_display_matrix(src: &Path, dst: &Path, m: [i32; 4]) -> Result<()> {
    let mut data = std::fs::read(src)?;
    let i = data
        .windows(4)
        .position(|w| w == b"tkhd")
        .context("no tkhd box")?;
    let version = data[i + 4];
    let matrix = i + 8 + if version == 0 { 20 } else { 32 } + 16;
    let values = [
        m[0] << 16,
        m[1] << 16,
        0,
        m[2] << 16,
        m[3] << 16,
        0,
        0,
        0,
        1 << 30,
    ];
    for (k, v) in values.iter().enumerate() {
        data[matrix + 4 * k..matrix + 4 * k + 4].copy_from_slice(&v.to_be_bytes());
    }
    std::fs::write(dst, data)?;
    Ok(())
}

/// A Matroska source with two audio languages (titled), a SubRip subtitle track, two chapters
/// and a container title.
pub fn multitrack(dir: &Path, name: &str) -> Result<PathBuf> {
    let srt = dir.join(format!("{name}.srt"));
    std::fs::write(
        &srt,
        "1\n00:00:00,200 --> 00:00:00,900\nHello\n\n2\n00:00:01,000 --> 00:00:01,800\nWorld\n",
    )?;
    let meta = dir.join(format!("{name}.ffmeta"));
    std::fs::write(
        &meta,
        ";FFMETADATA1\ntitle=A test film\n\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=One\n\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=Two\n",
    )?;
    let p = dir.join(name);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=192x108:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660:sample_rate=48000",
        "-i",
        s(&srt),
        "-i",
        s(&meta),
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-map",
        "3:s",
        "-map_metadata",
        "4",
        "-map_chapters",
        "4",
        "-t",
        "3",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-c:s",
        "subrip",
        "-metadata:s:a:0",
        "language=eng",
        "-metadata:s:a:0",
        "title=English",
        "-metadata:s:a:1",
        "language=fra",
        "-metadata:s:a:1",
        "title=Français",
        "-metadata:s:s:0",
        "language=eng",
        s(&p),
    ])?;
    Ok(p)
}

/// A 4 s 320x240 clip with audio whose packets 40-42 and 60 (non-key frames in its middle) have
/// all but their first 8 bytes (length and NAL header) overwritten: the decoder conceals what it can and drops what it cannot,
/// exit status 0, as it would for a file damaged in storage or transfer.
pub fn damaged(dir: &Path, name: &str) -> Result<PathBuf> {
    let good = dir.join(format!("{name}.good.mp4"));
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-c:a",
        "aac",
        s(&good),
    ])?;
    let text = ffprobe_text(&good, "v:0", "packet=pos,size,flags", "csv=p=0")?;
    let packets: Vec<&str> = text.lines().collect();
    let mut data = std::fs::read(&good)?;
    let mut seed = 0x2545_f491_u32;
    for idx in [40, 41, 42, 60] {
        // ffprobe prints a packet's fields in its own order: size, pos, flags.
        let mut f = packets.get(idx).context("packet")?.trim().split(',');
        let size: usize = f.next().context("size")?.parse()?;
        let pos: usize = f.next().context("pos")?.parse()?;
        if f.next().unwrap_or("").starts_with('K') {
            bail!("packet {idx} is a keyframe");
        }
        // All but the NAL unit's length and header: the slice data itself.
        for b in &mut data[pos + 8..pos + size] {
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

/// Video frames a single ffmpeg decodes from `path` (frame timing passed through).
pub fn decoded_frames(path: &Path) -> Result<u64> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "quiet", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "framecrc",
            "-",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count() as u64)
}

/// `../shared/tools/check-output.py SRC OUT`, the reviewers' judge, where it and a Python with
/// numpy are present: `None` when they are not (the tests' own checks still run).
pub fn check_output_tool(src: &Path, out: &Path) -> Option<Result<String>> {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/check-output.py");
    if std::env::var_os("FFLEET_TEST_NO_SHARED").is_some() || !tool.is_file() {
        return None;
    }
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let run = Command::new(python).arg(&tool).arg(src).arg(out).output();
    Some(match run {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        Ok(o) => Err(anyhow::anyhow!(
            "check-output.py: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(e.into()),
    })
}
