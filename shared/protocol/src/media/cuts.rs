//! Cut planning: where a stream-copied video can be split so that every segment decodes on its
//! own and the segments, concatenated, present exactly the source's frames in order.
//!
//! A cut before decode-order packet `i` is safe when the packet is a keyframe, every earlier
//! packet is presented before it and no later one is. Then decode order and presentation order
//! split the stream at the same place: no open-GOP leading frame refers back across the cut, and
//! the segment's frame count is simply the packet count. Sources with few safe points get fewer,
//! longer segments, down to one.

use super::probe::Packet;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CutError {
    #[error("the video stream has no packets")]
    Empty,
    #[error("{0} video packets carry no presentation timestamp; the source cannot be cut exactly")]
    MissingTimestamps(usize),
}

/// One planned segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Index of the segment's first packet in decode order, which for a safe cut is also its
    /// first frame's presentation index.
    pub first: u64,
    pub frames: u64,
    /// Presentation timestamp of the first frame, in stream ticks.
    pub start_pts: i64,
    /// Up to the next segment's first frame, or the end of the last frame.
    pub duration_ticks: i64,
}

/// Decode-order indices where a cut is safe (never 0).
pub fn safe_cut_points(packets: &[Packet]) -> Result<Vec<usize>, CutError> {
    let pts = all_pts(packets)?;
    let n = pts.len();
    let mut suffix_min = vec![i64::MAX; n + 1];
    for i in (0..n).rev() {
        suffix_min[i] = suffix_min[i + 1].min(pts[i]);
    }
    let mut out = Vec::new();
    let mut prefix_max = i64::MIN;
    for i in 0..n {
        if i > 0 && packets[i].key && prefix_max < pts[i] && suffix_min[i] >= pts[i] {
            out.push(i);
        }
        prefix_max = prefix_max.max(pts[i]);
    }
    Ok(out)
}

fn all_pts(packets: &[Packet]) -> Result<Vec<i64>, CutError> {
    if packets.is_empty() {
        return Err(CutError::Empty);
    }
    let missing = packets.iter().filter(|p| p.pts.is_none()).count();
    if missing > 0 {
        return Err(CutError::MissingTimestamps(missing));
    }
    Ok(packets.iter().map(|p| p.pts.unwrap_or_default()).collect())
}

/// The end of the stream: last presentation timestamp plus that frame's duration (or the
/// typical frame spacing when the container does not say).
pub fn stream_end(packets: &[Packet]) -> Result<i64, CutError> {
    let pts = all_pts(packets)?;
    let last = packets
        .iter()
        .max_by_key(|p| p.pts)
        .ok_or(CutError::Empty)?;
    let last_pts = last.pts.unwrap_or_default();
    let dur = match last.duration {
        Some(d) if d > 0 => d,
        _ => {
            let mut sorted = pts.clone();
            sorted.sort_unstable();
            sorted
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|d| *d > 0)
                .min()
                .unwrap_or(0)
        }
    };
    Ok(last_pts + dur)
}

/// Plans segments of about `target_ticks` each, cutting only at safe points. A cut is taken at
/// the safe point closest to the target, never making a segment shorter than half the target,
/// and a tail shorter than a quarter of the target joins the segment before it.
pub fn plan(packets: &[Packet], target_ticks: i64) -> Result<Vec<Cut>, CutError> {
    let pts = all_pts(packets)?;
    let safe = safe_cut_points(packets)?;
    let first_pts = *pts.iter().min().expect("non-empty");
    let end = stream_end(packets)?;
    let target = target_ticks.max(1);

    let mut starts: Vec<usize> = vec![0];
    let mut seg_start_pts = first_pts;
    let mut k = 0; // next candidate in `safe`
    loop {
        let want = seg_start_pts + target;
        while k < safe.len() && pts[safe[k]] <= seg_start_pts {
            k += 1;
        }
        // Candidates around `want`: the last one before it and the first one at or after it.
        let mut hi = k;
        while hi < safe.len() && pts[safe[hi]] < want {
            hi += 1;
        }
        let below = (hi > k).then(|| safe[hi - 1]);
        let above = safe.get(hi).copied();
        let pick = match (below, above) {
            (Some(b), Some(a)) => {
                let too_short = pts[b] - seg_start_pts < target / 2;
                if !too_short && want - pts[b] <= pts[a] - want {
                    Some(b)
                } else {
                    Some(a)
                }
            }
            (Some(b), None) if pts[b] - seg_start_pts >= target / 2 => Some(b),
            (_, a) => a,
        };
        let Some(cut) = pick else { break };
        if end - pts[cut] < target / 4 {
            break;
        }
        starts.push(cut);
        seg_start_pts = pts[cut];
    }

    let n = packets.len();
    Ok(starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let next = starts.get(i + 1).copied();
            let stop = next.unwrap_or(n);
            let next_pts = next.map_or(end, |nx| pts[nx]);
            let start_pts = if i == 0 { first_pts } else { pts[s] };
            Cut {
                first: s as u64,
                frames: (stop - s) as u64,
                start_pts,
                duration_ticks: next_pts - start_pts,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed-GOP stream with B-frames (decode order I P B B P B B ...), keyframes every `gop`.
    fn closed_gop(frames: i64, gop: i64) -> Vec<Packet> {
        let mut out = Vec::new();
        let mut g = 0;
        while g < frames {
            let len = gop.min(frames - g);
            out.push(Packet {
                pts: Some(g),
                dts: None,
                duration: Some(1),
                key: true,
            });
            let mut i = 1;
            while i < len {
                let p = (i + 2).min(len - 1);
                out.push(Packet {
                    pts: Some(g + p),
                    dts: None,
                    duration: Some(1),
                    key: false,
                });
                for b in i..p {
                    out.push(Packet {
                        pts: Some(g + b),
                        dts: None,
                        duration: Some(1),
                        key: false,
                    });
                }
                i = p + 1;
            }
            g += len;
        }
        out
    }

    #[test]
    fn cuts_land_on_keyframes_and_cover_every_frame_once() {
        let p = closed_gop(600, 48);
        let cuts = plan(&p, 150).unwrap();
        assert!(cuts.len() >= 3, "{cuts:?}");
        let mut next = 0;
        for c in &cuts {
            assert_eq!(c.first, next);
            assert_eq!(c.first % 48, 0);
            assert_eq!(c.start_pts, c.first as i64);
            assert_eq!(c.duration_ticks, c.frames as i64);
            next += c.frames;
        }
        assert_eq!(next, 600);
    }

    #[test]
    fn open_gop_keyframes_are_not_safe() {
        // I(4) B(2) B(3) | I(8) B(6) B(7) with the Bs of the second GOP before its I: open GOP.
        let p: Vec<Packet> = [
            (0, true),
            (1, false),
            (4, true),
            (2, false),
            (3, false),
            (5, false),
        ]
        .iter()
        .map(|&(pts, key)| Packet {
            pts: Some(pts),
            dts: None,
            duration: Some(1),
            key,
        })
        .collect();
        assert_eq!(safe_cut_points(&p).unwrap(), Vec::<usize>::new());
        assert_eq!(plan(&p, 2).unwrap().len(), 1);
    }

    #[test]
    fn a_single_keyframe_gives_one_segment() {
        let p = closed_gop(132, 1000);
        let cuts = plan(&p, 10).unwrap();
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].frames, 132);
        assert_eq!(cuts[0].duration_ticks, 132);
    }

    #[test]
    fn tiny_tails_join_the_previous_segment() {
        let p = closed_gop(105, 10);
        let cuts = plan(&p, 50).unwrap();
        assert_eq!(
            cuts.iter().map(|c| c.frames).collect::<Vec<_>>(),
            vec![50, 55]
        );
    }

    #[test]
    fn missing_timestamps_are_refused() {
        let p = vec![Packet {
            pts: None,
            dts: Some(0),
            duration: None,
            key: true,
        }];
        assert_eq!(plan(&p, 10), Err(CutError::MissingTimestamps(1)));
        assert_eq!(plan(&[], 10), Err(CutError::Empty));
    }
}
