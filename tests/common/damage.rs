//! A corpus of damaged media, generated from one clean clip with a seeded generator: random
//! bytes over the middle, a zeroed range, a truncated file, a destroyed keyframe, corrupt audio
//! packets (one in ten, and nine in ten), the first or the last second's video destroyed, and a
//! file mostly destroyed (with and without audio). What a single ffmpeg makes of each is the reference.

use super::media::{ffmpeg, ffprobe_text};
use anyhow::{Context, Result};
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

/// An 8 s 320x240 25 fps H.264 + AAC clip, one keyframe a second, its index at the front (so a
/// truncated copy still opens, as a streamed or interrupted upload's would).
pub fn clean(dir: &Path) -> Result<PathBuf> {
    let p = dir.join("clean.mp4");
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
        "8",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-movflags",
        "+faststart",
        s(&p),
    ])?;
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
    Ok(out)
}

/// What a single ffmpeg makes of `path`, decoding its video and audio as a transcode does:
/// whether it succeeds, and the video frames it decodes (frame timing passed through).
pub fn single_ffmpeg(path: &Path) -> Result<(bool, u64)> {
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
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("0,"))
        .count() as u64;
    Ok((out.status.success(), frames))
}
