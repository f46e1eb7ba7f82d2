//! Cut planning: where a stream-copied video can be split so that every segment decodes on its
//! own and the segments, concatenated, present exactly the source's frames in order.
//!
//! A cut before decode-order packet `i` is safe when the packet is a keyframe, every earlier
//! packet is presented before it and no later one is. Then decode order and presentation order
//! split the stream at the same place: no open-GOP leading frame refers back across the cut, and
//! the segment's frame count is simply the packet count.
//!
//! The stream is stream-copied into pieces ("spans") at safe points only, but a segment may start
//! at any frame: where no safe point lies near the length the pool asks for, a segment starts
//! inside a span and its encoder decodes the span from its first frame, dropping the frames before
//! the segment's (the lead-in) and those after it ([`Within`]). Sizing so follows the pool, not
//! the source's keyframes: a source with a keyframe every 20 s, or an open-GOP source with no safe
//! point at all, is cut as finely as one with a keyframe every second.

use super::probe::Packet;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CutError {
    #[error("the video stream has no packets")]
    Empty,
    #[error("{0} video packets carry no presentation timestamp; the source cannot be cut exactly")]
    MissingTimestamps(usize),
}

/// Where a segment lies inside its span, when it is not the whole span. Every time is the
/// frame's, counted from the span's first frame in source ticks. The encoder keeps the frames
/// whose time in the cut lies halfway or more from the lead-in's last frame to the segment's
/// first, and less than halfway from the segment's last frame to the next segment's first: a
/// tick of rounding in the cut's own time base cannot move a frame across such a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Within {
    /// Frames of the span before the segment's first (decoded, then dropped).
    pub skip_frames: u64,
    /// The segment's first frame.
    pub start_ticks: i64,
    /// The lead-in's last frame (absent: the segment starts the span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_ticks: Option<i64>,
    /// The segment's last frame.
    pub last_ticks: i64,
    /// The next segment's first frame (absent: the segment ends the span).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_ticks: Option<i64>,
    /// The source's time base, which every tick count here is in.
    pub time_base: super::Rational,
}

impl Within {
    /// Media decoded before the segment's first frame, in seconds.
    pub fn lead_secs(&self) -> f64 {
        self.time_base.seconds(self.start_ticks)
    }

    /// The kept frames' bounds in seconds from the span's first frame: from (inclusive), to
    /// (exclusive).
    pub fn bounds_secs(&self) -> (Option<f64>, Option<f64>) {
        let mid =
            |a: i64, b: i64| self.time_base.seconds(a) / 2.0 + self.time_base.seconds(b) / 2.0;
        (
            self.before_ticks.map(|b| mid(b, self.start_ticks)),
            self.next_ticks.map(|n| mid(self.last_ticks, n)),
        )
    }
}

/// One planned segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Presentation index of the segment's first frame (for a segment that starts its span, also
    /// its first packet's index in decode order).
    pub first: u64,
    pub frames: u64,
    /// Presentation timestamp of the first frame, in stream ticks.
    pub start_pts: i64,
    /// Up to the next segment's first frame, or the end of the last frame.
    pub duration_ticks: i64,
    /// The span (stream-copied piece) holding the segment.
    pub span: u32,
    /// Where in its span the segment lies, when it is not the whole span.
    pub within: Option<WithinTicks>,
    /// Frames of the segment that come before the stream's first keyframe (see `Headless`): a
    /// decoder may drop them, as a single ffmpeg's does.
    pub headless: u64,
    /// A result that lost those of them that lead the segment starts at least this long after
    /// its first frame, in stream ticks: halfway from the last of them to the first frame that
    /// can decode (the segment's whole duration when none can; 0 when none leads).
    pub headless_ticks: i64,
}

/// [`Within`] without its time base (the planner works in one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WithinTicks {
    pub skip_frames: u64,
    pub start_ticks: i64,
    pub before_ticks: Option<i64>,
    pub last_ticks: i64,
    pub next_ticks: Option<i64>,
}

impl WithinTicks {
    pub fn with_time_base(self, time_base: super::Rational) -> Within {
        Within {
            skip_frames: self.skip_frames,
            start_ticks: self.start_ticks,
            before_ticks: self.before_ticks,
            last_ticks: self.last_ticks,
            next_ticks: self.next_ticks,
            time_base,
        }
    }
}

/// A plan: the segments and the decode-order packet indices where spans begin (after the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub segments: Vec<Cut>,
    pub span_starts: Vec<u64>,
    /// Segments after the first that start on a scene change.
    pub on_scenes: usize,
}

impl Plan {
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Spans (stream-copied pieces) the plan cuts the stream into.
    pub fn spans(&self) -> usize {
        self.span_starts.len() + 1
    }
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

/// Where segments may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starts {
    /// At safe points only (as releases before cut-anywhere did): sources with few safe points
    /// get fewer, longer segments, down to one.
    SafePoints,
    /// At any frame where no safe point lies within half a target of the length asked for.
    AnyFrame,
}

/// A jump in the source's times longer than this (an MPEG-TS discontinuity, say) leaves the
/// stream cut at safe points only: the cutting ffmpeg may close such a jump, and a segment inside
/// a span is then no longer found at its source time in the cut.
const MAX_GAP_SECS_FOR_ANY_FRAME: f64 = 10.0;

/// The longest lead-in a segment may decode, in seconds and in targets (the larger holds): a
/// source with no safe point for hours (open GOP throughout) would otherwise have its last
/// segments decode the whole file to keep a few seconds of it.
const MAX_LEAD_SECS: f64 = 30.0;
const MAX_LEAD_TARGETS: i64 = 4;

/// Whether the source's times jump: forward by more than `MAX_GAP_SECS_FOR_ANY_FRAME` between
/// frames, or back in decode order (a decode timestamp lower than the one before it, or a
/// presentation time that far below an earlier one), as a splice or a reset clock makes them.
/// ffmpeg moves such times when it reads some formats, so a segment inside a span would not be
/// found at its source time.
fn jumps(packets: &[Packet], sorted: &[i64], ticks_per_sec: f64) -> bool {
    let far = (MAX_GAP_SECS_FOR_ANY_FRAME * ticks_per_sec) as i64;
    if sorted.windows(2).any(|w| w[1] - w[0] > far) {
        return true;
    }
    let (mut max_pts, mut last_dts) = (i64::MIN, None);
    for p in packets {
        if let (Some(d), Some(l)) = (p.dts, last_dts)
            && d < l
        {
            return true;
        }
        last_dts = p.dts.or(last_dts);
        let pts = p.pts.unwrap_or_default();
        if pts < max_pts.saturating_sub(far) {
            return true;
        }
        max_pts = max_pts.max(pts);
    }
    false
}

/// Plans segments of about `target_ticks` each, with no scene changes known (see
/// [`plan_with_scenes`]).
pub fn plan(
    packets: &[Packet],
    target_ticks: i64,
    starts: Starts,
    ticks_per_sec: f64,
) -> Result<Plan, CutError> {
    plan_with_scenes(packets, target_ticks, starts, ticks_per_sec, &[])
}

/// A scene change counts for a cut within this share of a target of the length asked for
/// (either way): segments then stay between three quarters and five quarters of the target.
const SCENE_WINDOW_DIV: i64 = 4;

/// Plans segments of about `target_ticks` each.
///
/// - A scene change (`scenes`: the times of frames that start a new shot, in source ticks)
///   within a quarter of a target of the length asked for is taken first, the closest: a new
///   shot costs the encoder a keyframe anyway, so a segment that starts on one costs nothing at
///   its seam. One between safe points counts only with `AnyFrame`, where no safe point lies
///   within half a target (the segment would start inside its span anyway), and within the
///   lead-in cap. None leaves a last segment shorter than three quarters of a target.
/// - Else a safe point within half a target is taken (the closest one; a segment then never
///   falls below half the target).
/// - Else `AnyFrame` starts the segment at the frame closest to the target, inside the span that
///   holds it.
///
/// A tail shorter than a quarter of the target joins the segment before it. `ticks_per_sec`
/// only judges jumps in the source's times (see `MAX_GAP_SECS_FOR_ANY_FRAME`) and how near a
/// scene change's time must lie to a frame's to name it.
pub fn plan_with_scenes(
    packets: &[Packet],
    target_ticks: i64,
    starts: Starts,
    ticks_per_sec: f64,
    scenes: &[i64],
) -> Result<Plan, CutError> {
    let pts = all_pts(packets)?;
    let safe = safe_cut_points(packets)?;
    let end = stream_end(packets)?;
    let target = target_ticks.max(1);
    // Presentation order; a safe point's decode index is also its presentation index.
    let mut sorted = pts.clone();
    sorted.sort_unstable();
    let n = sorted.len();
    let any_frame = starts == Starts::AnyFrame && !jumps(packets, &sorted, ticks_per_sec);
    let max_lead = ((MAX_LEAD_SECS * ticks_per_sec) as i64).max(MAX_LEAD_TARGETS * target);
    let scene_frames = scene_frames(&sorted, scenes, ticks_per_sec);
    let is_safe = |p: usize| safe.binary_search(&p).is_ok();

    // Segment starts, as presentation indices, each marked whether it is a safe point.
    let mut begins: Vec<(usize, bool)> = vec![(0, true)];
    let mut span_first = 0usize; // the last safe start
    let mut k = 0; // next candidate in `safe`
    loop {
        let (cur, _) = *begins.last().expect("non-empty");
        let cur_pts = sorted[cur];
        let want = cur_pts + target;
        while k < safe.len() && safe[k] <= cur {
            k += 1;
        }
        let mut hi = k;
        while hi < safe.len() && sorted[safe[hi]] < want {
            hi += 1;
        }
        let below = (hi > k).then(|| safe[hi - 1]);
        let above = safe.get(hi).copied();
        let safe_pick = if any_frame {
            // The closest safe point, if it lies within half a target.
            [below, above]
                .into_iter()
                .flatten()
                .filter(|&s| (sorted[s] - want).abs() <= target / 2)
                .min_by_key(|&s| (sorted[s] - want).abs())
        } else {
            match (below, above) {
                (Some(b), Some(a)) => {
                    let too_short = sorted[b] - cur_pts < target / 2;
                    if !too_short && want - sorted[b] <= sorted[a] - want {
                        Some(b)
                    } else {
                        Some(a)
                    }
                }
                (Some(b), None) if sorted[b] - cur_pts >= target / 2 => Some(b),
                (_, a) => a,
            }
        };
        // The scene change closest to the length asked for, within the window. One inside the
        // span (a lead-in for its segment) only where no safe point is near enough to take
        // instead, and within the lead-in cap: a run of shots just before each keyframe would
        // otherwise never start a span, and every segment would decode a longer lead-in than
        // the last. None leaves a last segment shorter than the window's lower bound.
        let window = target / SCENE_WINDOW_DIV;
        let lo_at = scene_frames.partition_point(|&f| sorted[f] < want - window);
        let inside_ok = |f: usize| {
            // The next safe point must lie half a target past the shot, else the next segment
            // would pass it by and keep decoding this span's lead-in.
            let next_safe = safe[safe.partition_point(|&s| s <= f)..].first();
            any_frame
                && safe_pick.is_none()
                && sorted[f] - sorted[span_first] <= max_lead
                && next_safe.is_none_or(|&a| sorted[a] - sorted[f] >= target / 2)
        };
        let scene_pick = scene_frames[lo_at..]
            .iter()
            .copied()
            .take_while(|&f| sorted[f] <= want + window)
            .filter(|&f| f > cur && end - sorted[f] >= target - window)
            .filter(|&f| is_safe(f) || inside_ok(f))
            .min_by_key(|&f| (sorted[f] - want).abs());
        let pick = match (scene_pick, safe_pick) {
            (Some(f), _) => Some((f, is_safe(f))),
            (None, Some(s)) => Some((s, true)),
            (None, None) if any_frame => {
                // Up to the next safe point past half a target (else the end) in pieces of about
                // the target each: even segments, not a run of full ones and a short last one.
                let next = safe[k..]
                    .iter()
                    .copied()
                    .find(|&s| sorted[s] >= cur_pts + target / 2);
                let stop = next.map_or(end, |s| sorted[s]);
                let pieces = ((stop - cur_pts) as f64 / target as f64).round() as i64;
                let inner = if pieces >= 2 {
                    nearest_frame(&sorted, cur, cur_pts + (stop - cur_pts) / pieces)
                } else {
                    None
                };
                match inner {
                    // A lead-in past the cap costs more decoding than the parallelism pays
                    // for: the span's rest is one segment, up to its next safe point.
                    Some(p) if sorted[p] - sorted[span_first] > max_lead => next.map(|s| (s, true)),
                    Some(p) => Some((p, is_safe(p))),
                    None => next.filter(|_| pieces >= 2).map(|s| (s, true)),
                }
            }
            (None, None) => None,
        };
        let Some((cut, starts_span)) = pick else {
            break;
        };
        if end - sorted[cut] < target / 4 {
            break;
        }
        if starts_span {
            span_first = cut;
        }
        begins.push((cut, starts_span));
    }

    let headless = Headless::of(packets, &sorted);
    let on_scenes = begins[1..]
        .iter()
        .filter(|(b, _)| scene_frames.binary_search(b).is_ok())
        .count();
    let mut segments = Vec::with_capacity(begins.len());
    let mut span_starts = Vec::new();
    let mut span = 0u32;
    let mut span_first = 0usize;
    for (i, &(s, is_safe)) in begins.iter().enumerate() {
        if is_safe && i > 0 {
            span += 1;
            span_first = s;
            span_starts.push(s as u64);
        }
        let next = begins.get(i + 1).copied();
        let stop = next.map_or(n, |(nx, _)| nx);
        let next_pts = next.map_or(end, |(nx, _)| sorted[nx]);
        // The span goes on past this segment when the next segment starts inside it.
        let shares_next = next.is_some_and(|(_, safe)| !safe);
        let at = |p: usize| sorted[p] - sorted[span_first];
        let within = (s > span_first || shares_next).then(|| WithinTicks {
            skip_frames: (s - span_first) as u64,
            start_ticks: at(s),
            before_ticks: (s > span_first).then(|| at(s - 1)),
            last_ticks: at(stop - 1),
            next_ticks: shares_next.then(|| at(stop)),
        });
        let (count, leading) = headless.count(s, stop);
        segments.push(Cut {
            first: s as u64,
            frames: (stop - s) as u64,
            start_pts: sorted[s],
            duration_ticks: next_pts - sorted[s],
            span,
            within,
            headless: count,
            headless_ticks: match leading as usize {
                0 => 0,
                // Halfway from the last that cannot decode to the first that can: a tick of
                // rounding in the result's time base moves no frame across it.
                l if s + l < stop => (sorted[s + l - 1] + sorted[s + l]) / 2 - sorted[s],
                _ => next_pts - sorted[s],
            },
        });
    }
    Ok(Plan {
        segments,
        span_starts,
        on_scenes,
    })
}

/// The frames a stream that starts mid-GOP (a capture cut at a random byte, a live recording
/// joined late) holds before its first keyframe: those presented before it, and those decoded
/// before it but presented after it (they refer back past the stream's start). A decoder cannot
/// reconstruct them and drops them without a failed decode call (the H.264 decoder waits for a
/// keyframe or recovery point): a single ffmpeg's output starts at the keyframe. What a
/// decoder does drop of them is allowed, not expected: one that conceals them keeps them. A
/// stream with no keyframe flagged at all allows nothing (its demuxer flags none).
struct Headless {
    /// Presentation indices before the first keyframe's: `0..before`.
    before: usize,
    /// Presentation indices of frames decoded before the first keyframe but shown after it,
    /// ascending.
    late: Vec<usize>,
}

impl Headless {
    /// `sorted`: the stream's presentation times in order.
    fn of(packets: &[Packet], sorted: &[i64]) -> Headless {
        let Some(first_key) = packets.iter().position(|p| p.key) else {
            return Headless {
                before: 0,
                late: Vec::new(),
            };
        };
        let key_pts = packets[first_key].pts.unwrap_or_default();
        let mut late: Vec<usize> = packets[..first_key]
            .iter()
            .filter_map(|p| p.pts)
            .filter(|&t| t >= key_pts)
            .map(|t| sorted.partition_point(|&x| x < t))
            .collect();
        late.sort_unstable();
        late.dedup();
        Headless {
            before: sorted.partition_point(|&t| t < key_pts),
            late,
        }
    }

    /// Of the presentation-ordered frames `from..to`: how many are headless, and how many of
    /// them lead the range (the frames before its first one that can decode).
    fn count(&self, from: usize, to: usize) -> (u64, u64) {
        let leading = self.before.min(to).saturating_sub(from);
        let late =
            self.late.partition_point(|&i| i < to) - self.late.partition_point(|&i| i < from);
        ((leading + late) as u64, leading as u64)
    }
}

/// Presentation indices (ascending, never 0) of the frames that `scenes` name: a scene change's
/// time names the frame nearest it when it lies within a millisecond of it and nearer to it than
/// to its neighbours (a scan's times are rounded to microseconds). A stream with two frames at
/// one time has none named.
fn scene_frames(sorted: &[i64], scenes: &[i64], ticks_per_sec: f64) -> Vec<usize> {
    // Two frames at one time make the decoder distrust presentation times and stamp its frames
    // from decode times instead: the scan's times then need not name the frames they were taken
    // on, so none is trusted.
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Vec::new();
    }
    let slack = (ticks_per_sec / 1000.0).ceil() as i64;
    let mut out: Vec<usize> = scenes
        .iter()
        .filter_map(|&t| {
            let at = sorted.partition_point(|&p| p < t);
            let nearest = [at.checked_sub(1), Some(at)]
                .into_iter()
                .flatten()
                .filter(|&p| p < sorted.len())
                .min_by_key(|&p| (sorted[p] - t).abs())?;
            let gap = |q: Option<usize>| {
                q.filter(|&q| q < sorted.len())
                    .map_or(i64::MAX, |q| (sorted[q] - sorted[nearest]).abs())
            };
            let off = (sorted[nearest] - t).abs();
            let near = off <= slack
                && 2 * off < gap(nearest.checked_sub(1))
                && 2 * off < gap(Some(nearest + 1));
            (near && nearest > 0).then_some(nearest)
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The frame after `cur` whose time is closest to `want`, skipping frames that share a time with
/// the frame before them (a segment must start at a time of its own). `None` past the last frame.
fn nearest_frame(sorted: &[i64], cur: usize, want: i64) -> Option<usize> {
    let distinct = |p: usize| p > cur && p < sorted.len() && sorted[p] > sorted[p - 1];
    let at = sorted.partition_point(|&t| t < want).max(cur + 1);
    let after = (at..sorted.len()).find(|&p| distinct(p));
    let before = (cur + 1..at).rev().find(|&p| distinct(p));
    match (before, after) {
        (Some(b), Some(a)) if want - sorted[b] < sorted[a] - want => Some(b),
        (_, Some(a)) => Some(a),
        (b, None) => b,
    }
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
    fn frames_before_a_capture_s_first_keyframe_are_headless() {
        // A capture joined mid-GOP (at the B-frame shown 14th of a 25-frame GOP): its first
        // keyframe, at 25, and the GOPs after it are whole.
        let whole = closed_gop(75, 25);
        let joined: Vec<Packet> = whole
            .iter()
            .skip_while(|p| p.pts != Some(14))
            .copied()
            .collect();
        assert!(!joined[0].key);
        let mut sorted: Vec<i64> = joined.iter().filter_map(|p| p.pts).collect();
        sorted.sort_unstable();
        let before_key = sorted.iter().filter(|&&t| t < 25).count() as u64;
        assert!(before_key > 5, "{sorted:?}");
        let planned = plan(&joined, 5, Starts::AnyFrame, 25.0).unwrap();
        let headless: Vec<u64> = planned.segments.iter().map(|c| c.headless).collect();
        assert_eq!(headless.iter().sum::<u64>(), before_key, "{headless:?}");
        for c in &planned.segments {
            let mine = &sorted[c.first as usize..(c.first + c.frames) as usize];
            let want = mine.iter().filter(|&&t| t < 25).count() as u64;
            assert_eq!(c.headless, want, "{c:?}");
            // The first frame that decodes is the keyframe, at 25; the last that does not, 24.
            let decodable_from = if want == 0 {
                0
            } else if want == c.frames {
                c.duration_ticks
            } else {
                (24 + 25) / 2 - c.start_pts
            };
            assert_eq!(c.headless_ticks, decodable_from, "{c:?}");
        }
        // A stream that starts on its keyframe has none; one with no keyframe flagged allows
        // nothing either.
        let plan_whole = plan_with_scenes(&whole, 5, Starts::AnyFrame, 25.0, &[]).unwrap();
        assert!(plan_whole.segments.iter().all(|c| c.headless == 0));
        let unflagged: Vec<Packet> = whole.iter().map(|p| Packet { key: false, ..*p }).collect();
        let plan_unflagged = plan_with_scenes(&unflagged, 5, Starts::AnyFrame, 25.0, &[]).unwrap();
        assert!(plan_unflagged.segments.iter().all(|c| c.headless == 0));
    }

    #[test]
    fn a_frame_decoded_before_the_first_keyframe_but_shown_after_it_is_headless() {
        // P(5) decoded first, then the keyframe at 2 and its frames: the P refers back past the
        // start, so it cannot decode though it is shown after the keyframe.
        let p = |pts: i64, key: bool| Packet {
            pts: Some(pts),
            dts: None,
            duration: Some(1),
            key,
        };
        let packets = vec![
            p(1, false),
            p(9, false),
            p(2, true),
            p(3, false),
            p(4, false),
        ]
        .into_iter()
        .chain((5..9).map(|t| p(t, false)))
        .collect::<Vec<_>>();
        let mut sorted: Vec<i64> = packets.iter().filter_map(|p| p.pts).collect();
        sorted.sort_unstable();
        let h = Headless::of(&packets, &sorted);
        // Frame 1 (shown before the keyframe) and frame 9 (decoded before it).
        assert_eq!(h.count(0, sorted.len()), (2, 1));
        assert_eq!(h.count(1, sorted.len() - 1), (0, 0));
        assert_eq!(h.count(sorted.len() - 1, sorted.len()), (1, 0));
    }

    #[test]
    fn cuts_land_on_keyframes_and_cover_every_frame_once() {
        let p = closed_gop(600, 48);
        let cuts = plan(&p, 150, Starts::SafePoints, 1.0).unwrap().segments;
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

    /// I(0) P(1) | I(4) B(2) B(3) P(5): the Bs after the second keyframe come before it.
    fn open_gop() -> Vec<Packet> {
        [
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
        .collect()
    }

    #[test]
    fn open_gop_keyframes_are_not_safe() {
        let p = open_gop();
        assert_eq!(safe_cut_points(&p).unwrap(), Vec::<usize>::new());
        assert_eq!(plan(&p, 2, Starts::SafePoints, 1.0).unwrap().len(), 1);
    }

    #[test]
    fn a_single_keyframe_gives_one_segment() {
        let p = closed_gop(132, 1000);
        let cuts = plan(&p, 10, Starts::SafePoints, 1.0).unwrap().segments;
        assert_eq!(cuts.len(), 1);
        assert_eq!(cuts[0].frames, 132);
        assert_eq!(cuts[0].duration_ticks, 132);
    }

    #[test]
    fn tiny_tails_join_the_previous_segment() {
        let p = closed_gop(105, 10);
        let cuts = plan(&p, 50, Starts::SafePoints, 1.0).unwrap().segments;
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
        for starts in [Starts::SafePoints, Starts::AnyFrame] {
            assert_eq!(
                plan(&p, 10, starts, 1.0),
                Err(CutError::MissingTimestamps(1))
            );
            assert_eq!(plan(&[], 10, starts, 1.0), Err(CutError::Empty));
        }
    }

    /// Every frame in exactly one segment, in order, each segment's times consistent with its
    /// span, and spans starting only at safe points.
    fn check_cover(p: &[Packet], plan: &Plan) {
        let safe = safe_cut_points(p).unwrap();
        let mut sorted: Vec<i64> = p.iter().map(|x| x.pts.unwrap()).collect();
        sorted.sort_unstable();
        for s in &plan.span_starts {
            assert!(
                safe.contains(&(*s as usize)),
                "span at {s} is no safe point"
            );
        }
        let mut next = 0;
        for (i, c) in plan.segments.iter().enumerate() {
            assert_eq!(c.first, next, "segment {i}");
            assert!(c.frames >= 1);
            assert_eq!(c.start_pts, sorted[c.first as usize]);
            let span_first = if c.span == 0 {
                0
            } else {
                plan.span_starts[c.span as usize - 1] as usize
            };
            match c.within {
                None => {
                    assert_eq!(c.first as usize, span_first);
                }
                Some(w) => {
                    let at = |q: usize| sorted[q] - sorted[span_first];
                    assert_eq!(w.skip_frames, c.first - span_first as u64);
                    assert_eq!(w.start_ticks, at(c.first as usize));
                    let last = (c.first + c.frames - 1) as usize;
                    assert_eq!(w.last_ticks, at(last));
                    assert_eq!(
                        w.before_ticks,
                        (w.skip_frames > 0).then(|| at(c.first as usize - 1))
                    );
                    if let Some(n) = w.next_ticks {
                        assert_eq!(n, at(last + 1));
                    }
                }
            }
            next += c.frames;
        }
        assert_eq!(next as usize, p.len());
    }

    #[test]
    fn sparse_keyframes_are_cut_as_finely_as_dense_ones() {
        // One keyframe every 500 frames, segments of about 50 wanted.
        let p = closed_gop(1500, 500);
        let sparse = plan(&p, 50, Starts::AnyFrame, 25.0).unwrap();
        check_cover(&p, &sparse);
        assert_eq!(sparse.len(), 30);
        assert_eq!(sparse.spans(), 3);
        assert!(sparse.segments.iter().all(|c| c.frames == 50));
        // Segments inside a span carry where they lie; those starting a span keep the keyframe.
        let inner = &sparse.segments[3];
        let w = inner.within.unwrap();
        assert_eq!(
            (
                w.skip_frames,
                w.start_ticks,
                w.before_ticks,
                w.last_ticks,
                w.next_ticks
            ),
            (150, 150, Some(149), 199, Some(200))
        );
        assert_eq!(sparse.segments[10].span, 1);
        assert_eq!(sparse.segments[10].within.unwrap().before_ticks, None);
        // The old rule: one segment per keyframe.
        assert_eq!(plan(&p, 50, Starts::SafePoints, 25.0).unwrap().len(), 3);
    }

    #[test]
    fn safe_points_near_the_target_are_preferred() {
        // Keyframes every 48 frames, segments of about 50 wanted: every cut on a keyframe.
        let p = closed_gop(600, 48);
        let dense = plan(&p, 50, Starts::AnyFrame, 25.0).unwrap();
        check_cover(&p, &dense);
        assert!(
            dense.segments.iter().all(|c| c.within.is_none()),
            "{dense:?}"
        );
        assert_eq!(dense.spans(), dense.len());
        // Keyframes every 100, segments of 40: a segment at a keyframe wherever one lies within
        // half a target, between keyframes elsewhere.
        let p = closed_gop(400, 100);
        let mixed = plan(&p, 40, Starts::AnyFrame, 25.0).unwrap();
        check_cover(&p, &mixed);
        assert_eq!(mixed.spans(), 4);
        assert!(mixed.segments.iter().any(|c| c.within.is_some()));
        assert!(
            mixed
                .segments
                .iter()
                .all(|c| c.frames >= 20 && c.frames <= 60),
            "{mixed:?}"
        );
    }

    #[test]
    fn open_gop_sources_and_one_frame_segments_are_cut_anywhere() {
        let p = open_gop();
        let one = plan(&p, 1, Starts::AnyFrame, 1.0).unwrap();
        check_cover(&p, &one);
        assert_eq!(one.len(), 6);
        assert_eq!(one.spans(), 1);
    }

    #[test]
    fn a_jump_in_the_source_times_keeps_cuts_on_safe_points() {
        let mut p = closed_gop(200, 200);
        for x in p.iter_mut().filter(|x| x.pts.unwrap() >= 100) {
            x.pts = x.pts.map(|t| t + 100_000);
        }
        assert_eq!(plan(&p, 20, Starts::AnyFrame, 25.0).unwrap().len(), 1);
        assert!(
            plan(&closed_gop(200, 200), 20, Starts::AnyFrame, 25.0)
                .unwrap()
                .len()
                > 1
        );
    }

    #[test]
    fn bounds_lie_halfway_between_frames() {
        let w = Within {
            skip_frames: 3,
            start_ticks: 3,
            before_ticks: Some(2),
            last_ticks: 5,
            next_ticks: Some(6),
            time_base: crate::media::Rational::new(1, 25),
        };
        let (from, to) = w.bounds_secs();
        assert!((from.unwrap() - 0.1).abs() < 1e-9);
        assert!((to.unwrap() - 0.22).abs() < 1e-9);
    }

    #[test]
    fn a_lead_in_is_capped_and_the_rest_of_the_span_is_one_segment() {
        // One keyframe in 400 s (25 ticks a second), 10 s segments: lead-ins up to 40 s.
        let p = closed_gop(10_000, 100_000);
        let capped = plan(&p, 250, Starts::AnyFrame, 25.0).unwrap();
        check_cover(&p, &capped);
        let frames: Vec<u64> = capped.segments.iter().map(|c| c.frames).collect();
        assert_eq!(frames, vec![250, 250, 250, 250, 9_000]);
    }

    #[test]
    fn times_going_back_in_decode_order_keep_cuts_on_safe_points() {
        let mut p = closed_gop(200, 200);
        for (i, x) in p.iter_mut().enumerate() {
            // A decode clock reset half way.
            x.dts = Some(if i < 100 { i as i64 } else { i as i64 - 100 });
        }
        assert_eq!(plan(&p, 20, Starts::AnyFrame, 25.0).unwrap().len(), 1);
    }

    #[test]
    fn a_frame_cut_on_a_keyframe_starts_a_span() {
        // A frame every 2 ticks, each a keyframe, segments of 1 tick: every frame its own span.
        let p: Vec<Packet> = (0..12)
            .map(|i| Packet {
                pts: Some(i * 2),
                dts: None,
                duration: Some(2),
                key: true,
            })
            .collect();
        let each = plan(&p, 1, Starts::AnyFrame, 1.0).unwrap();
        check_cover(&p, &each);
        assert_eq!((each.len(), each.spans()), (12, 12));
        assert!(each.segments.iter().all(|c| c.within.is_none()));
    }

    #[test]
    fn the_last_stretch_is_not_split_below_one_and_a_half_targets() {
        // Keyframes every 132 frames over 396, segments of 99 asked (the pipeline test's
        // sample): one segment per keyframe, none inside the last.
        let p = closed_gop(396, 132);
        let plan = plan(&p, 99, Starts::AnyFrame, 25.0).unwrap();
        check_cover(&p, &plan);
        assert_eq!(plan.len(), 3, "{plan:?}");
    }

    fn starts(plan: &Plan) -> Vec<u64> {
        plan.segments.iter().map(|c| c.first).collect()
    }

    #[test]
    fn segments_start_on_scene_changes_near_the_target() {
        // One keyframe in 250 frames; shots start at frames 60, 105, 165 and 205.
        let p = closed_gop(250, 250);
        let scenes = [60, 105, 165, 205];
        let cut = plan_with_scenes(&p, 50, Starts::AnyFrame, 25.0, &scenes).unwrap();
        check_cover(&p, &cut);
        assert_eq!(starts(&cut), [0, 60, 105, 165, 205]);
        assert_eq!((cut.spans(), cut.on_scenes), (1, 4));
        // Without them: even pieces.
        let even = plan(&p, 50, Starts::AnyFrame, 25.0).unwrap();
        assert_eq!(starts(&even), [0, 50, 100, 150, 200]);
        // A shot further than a quarter of a target from the length asked for does not count.
        let far = plan_with_scenes(&p, 50, Starts::AnyFrame, 25.0, &[63, 137]).unwrap();
        assert_eq!(starts(&far), [0, 50, 100, 150, 200]);
    }

    #[test]
    fn a_scene_change_wins_over_a_nearby_keyframe_and_keyframes_on_shots_start_spans() {
        // Keyframes every 100 frames, 50 asked: a shot at 45 starts a segment inside the span
        // (one would start there anyway); the shot at 100 is a keyframe and starts a span.
        let p = closed_gop(300, 100);
        let cut = plan_with_scenes(&p, 50, Starts::AnyFrame, 25.0, &[45, 100]).unwrap();
        check_cover(&p, &cut);
        assert_eq!(starts(&cut), [0, 45, 100, 150, 200, 250]);
        assert_eq!(cut.span_starts, [100, 200]);
        assert!(cut.segments[1].within.is_some());
        // With a keyframe near enough to take, a shot inside the span is not taken.
        let p = closed_gop(300, 50);
        let near = plan_with_scenes(&p, 50, Starts::AnyFrame, 25.0, &[45]).unwrap();
        assert_eq!(starts(&near), [0, 50, 100, 150, 200, 250]);
        // Keyframe cuts only: a shot counts where it is a safe point.
        let p = closed_gop(300, 10);
        let safe = plan_with_scenes(&p, 50, Starts::SafePoints, 25.0, &[40, 95, 105]).unwrap();
        check_cover(&p, &safe);
        assert_eq!(starts(&safe), [0, 40, 90, 140, 190, 240]);
    }

    #[test]
    fn scene_cuts_keep_segments_within_a_quarter_of_the_target() {
        // A "scene change" at every frame: the window bounds every segment but the last (all
        // within the lead-in cap, 30 s).
        let p = closed_gop(600, 600);
        let every: Vec<i64> = (1..600).collect();
        let cut = plan_with_scenes(&p, 40, Starts::AnyFrame, 25.0, &every).unwrap();
        check_cover(&p, &cut);
        let (last, rest) = cut.segments.split_last().unwrap();
        assert!(
            rest.iter().all(|c| (30..=50).contains(&c.frames)),
            "{cut:?}"
        );
        assert!(last.frames <= 60);
        // Past the lead-in cap a shot inside the span is not taken: the span's rest is one
        // segment, as without shots.
        let capped = plan_with_scenes(&p, 100, Starts::AnyFrame, 1.0, &every).unwrap();
        let plain = plan(&p, 100, Starts::AnyFrame, 1.0).unwrap();
        assert_eq!(capped.segments, plain.segments);
    }

    #[test]
    fn shots_just_before_each_keyframe_do_not_grow_the_lead_ins() {
        // Keyframes every 50 frames and a shot 5 frames before each: the keyframes are taken,
        // so spans still start and no segment decodes a lead-in.
        let p = closed_gop(300, 50);
        let scenes = [45, 95, 145, 195, 245];
        let cut = plan_with_scenes(&p, 50, Starts::AnyFrame, 25.0, &scenes).unwrap();
        check_cover(&p, &cut);
        let lead: u64 = cut
            .segments
            .iter()
            .filter_map(|c| c.within.map(|w| w.skip_frames))
            .sum();
        assert_eq!((lead, cut.spans()), (0, 6), "{cut:?}");
    }

    #[test]
    fn a_shot_inside_a_span_does_not_pass_by_the_next_keyframe() {
        // Keyframes every 65 frames, 40 asked, a shot at 48: the keyframe at 65 would be passed
        // by, and the span's lead-in carried on; the shot is not taken.
        let p = closed_gop(260, 65);
        let with = plan_with_scenes(&p, 40, Starts::AnyFrame, 25.0, &[48]).unwrap();
        let without = plan(&p, 40, Starts::AnyFrame, 25.0).unwrap();
        assert_eq!(with.segments, without.segments);
        assert!(with.span_starts.contains(&65), "{with:?}");
    }

    #[test]
    fn a_shot_never_leaves_a_short_last_segment() {
        // One keyframe, 110 frames, 100 asked: one segment, shot at 80 or not.
        let p = closed_gop(110, 110);
        let cut = plan_with_scenes(&p, 100, Starts::AnyFrame, 25.0, &[80]).unwrap();
        assert_eq!(cut.len(), 1, "{cut:?}");
    }

    #[test]
    fn a_scene_time_names_the_frame_within_a_millisecond_of_it() {
        let sorted: Vec<i64> = (0..100).map(|i| i * 3600).collect();
        let t = 60 * 3600;
        assert_eq!(scene_frames(&sorted, &[t + 40], 90000.0), [60]);
        assert_eq!(scene_frames(&sorted, &[t - 80, t + 80], 90000.0), [60]);
        assert!(scene_frames(&sorted, &[t + 200, 0, 100 * 3600], 90000.0).is_empty());
        // Two frames at one time anywhere: the decoder's times may follow decode times, so no
        // time is trusted.
        assert!(scene_frames(&[0, 10, 10, 20, 30], &[10, 30], 1000.0).is_empty());
    }
}
