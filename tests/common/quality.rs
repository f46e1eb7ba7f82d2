//! Per-frame quality against the source, frames paired by position: every file is decoded to
//! raw luma frames and the n-th output frame is compared with the n-th source frame (ffmpeg's
//! psnr filter pairs by timestamp and misreports outputs whose timestamps were rounded).

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The size as displayed: ffmpeg's decoder applies a display matrix's rotation (autorotate).
pub fn size(path: &Path) -> Result<(usize, usize)> {
    let line = super::media::ffprobe_value(path, "v:0", "stream=width,height")?
        .context("no video size")?;
    let mut fields = line.split(',').map(str::trim);
    let (w, h) = (
        fields.next().context("no width")?,
        fields.next().context("no height")?,
    );
    let (w, h) = (w.parse()?, h.parse()?);
    let rotation = super::media::ffprobe_text(path, "v:0", "stream_side_data=rotation", "csv=p=0")?;
    let quarter = rotation
        .lines()
        .filter_map(|l| l.trim().trim_matches(',').parse::<i64>().ok())
        .any(|r| r.rem_euclid(180) == 90);
    Ok(if quarter { (h, w) } else { (w, h) })
}

fn decoder(path: &Path, w: usize, h: usize) -> Result<Child> {
    Ok(Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-fps_mode", "passthrough", "-vf"])
        .arg(format!("scale={w}:{h}:flags=bicubic"))
        .args(["-pix_fmt", "gray", "-f", "rawvideo", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?)
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        99.0
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Luma PSNR of each frame of every `outputs[i]` against `source`, by position. Fails if any
/// output has a different number of frames than the source.
pub fn per_frame_psnr(source: &Path, outputs: &[&Path]) -> Result<Vec<Vec<f64>>> {
    let (w, h) = size(source)?;
    let n = w * h;
    let mut src = decoder(source, w, h)?;
    let mut outs: Vec<Child> = outputs
        .iter()
        .map(|o| decoder(o, w, h))
        .collect::<Result<_>>()?;
    let mut result = vec![Vec::new(); outputs.len()];
    let mut frame = vec![0u8; n];
    let mut other = vec![0u8; n];
    loop {
        let got = read_frame(&mut src, &mut frame)?;
        for (i, o) in outs.iter_mut().enumerate() {
            let got_o = read_frame(o, &mut other)?;
            if got != got_o {
                bail!(
                    "{} has a different frame count than the source (differs at frame {})",
                    outputs[i].display(),
                    result[i].len()
                );
            }
            if got {
                result[i].push(psnr(&frame, &other));
            }
        }
        if !got {
            break;
        }
    }
    for c in outs.iter_mut().chain(std::iter::once(&mut src)) {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(result)
}

fn read_frame(child: &mut Child, buf: &mut [u8]) -> Result<bool> {
    let out = child.stdout.as_mut().context("no stdout")?;
    let mut filled = 0;
    while filled < buf.len() {
        let k = out.read(&mut buf[filled..])?;
        if k == 0 {
            return Ok(false);
        }
        filled += k;
    }
    Ok(true)
}
