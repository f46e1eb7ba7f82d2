//! Throughput over the last 15 minutes: segments and frames encoded, in all and per node, in
//! 10-second bins. Counted from the segment-done reports the events stream keeps (read from 15
//! minutes back when the dashboard starts, so one started late draws the same picture), each at
//! the time the stream stored it. Only encodes count: a failed attempt encoded nothing, and a
//! retry's reused unit was encoded by an earlier run.

use ffleet_runtime::NodeId;
use ffleet_runtime::messages::{SegmentDone, SegmentOutcome};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// One bin's width.
pub const BIN: Duration = Duration::from_secs(10);
const BINS: u64 = WINDOW.as_secs() / BIN.as_secs();

/// Segments and frames encoded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub segments: u64,
    pub frames: u64,
}

impl Count {
    fn add(&mut self, o: Count) {
        self.segments += o.segments;
        self.frames += o.frames;
    }
}

/// The bins of the last `WINDOW`, each keyed by its number (seconds since the epoch / `BIN`).
#[derive(Debug, Default)]
pub struct Bins {
    bins: VecDeque<(u64, HashMap<NodeId, Count>)>,
}

/// One node's (or the fleet's) counts, one per bin, oldest first, with their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub counts: Vec<Count>,
    pub total: Count,
}

impl Line {
    fn new() -> Line {
        Line {
            counts: vec![Count::default(); BINS as usize],
            total: Count::default(),
        }
    }
}

/// What the charts draw: the fleet's line, and each node's, most frames first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// When the oldest bin starts.
    pub from: SystemTime,
    pub fleet: Line,
    pub nodes: Vec<(NodeId, Line)>,
}

fn bin_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / BIN.as_secs()
}

impl Bins {
    /// Counts a segment-done report stored at `at` (not an encode: nothing).
    pub fn record(&mut self, done: &SegmentDone, at: SystemTime, now: SystemTime) {
        let SegmentOutcome::Encoded {
            frames,
            encode_secs,
            ..
        } = &done.outcome
        else {
            return;
        };
        if *encode_secs <= 0.0 {
            return;
        }
        let bin = bin_of(at);
        let newest = bin_of(now);
        if bin + BINS <= newest || bin > newest + 1 {
            return;
        }
        // Reports come in stream order, so nearly always into the newest bin.
        let at = match self.bins.iter().rposition(|(b, _)| *b <= bin) {
            Some(i) if self.bins[i].0 == bin => i,
            Some(i) => {
                self.bins.insert(i + 1, (bin, HashMap::new()));
                i + 1
            }
            None => {
                self.bins.push_front((bin, HashMap::new()));
                0
            }
        };
        self.bins[at]
            .1
            .entry(done.node.clone())
            .or_default()
            .add(Count {
                segments: 1,
                frames: *frames,
            });
        self.forget(newest);
    }

    fn forget(&mut self, newest: u64) {
        while self.bins.front().is_some_and(|(b, _)| b + BINS <= newest) {
            self.bins.pop_front();
        }
    }

    /// The last `WINDOW` as of `now`.
    pub fn series(&self, now: SystemTime) -> Series {
        let newest = bin_of(now);
        let first = (newest + 1).saturating_sub(BINS);
        let mut fleet = Line::new();
        let mut nodes: BTreeMap<&NodeId, Line> = BTreeMap::new();
        for (bin, counts) in &self.bins {
            let Some(i) = bin.checked_sub(first).filter(|i| *i < BINS) else {
                continue;
            };
            for (node, c) in counts {
                fleet.counts[i as usize].add(*c);
                fleet.total.add(*c);
                let line = nodes.entry(node).or_insert_with(Line::new);
                line.counts[i as usize].add(*c);
                line.total.add(*c);
            }
        }
        let mut nodes: Vec<(NodeId, Line)> =
            nodes.into_iter().map(|(n, l)| (n.clone(), l)).collect();
        nodes.sort_by(|a, b| b.1.total.frames.cmp(&a.1.total.frames).then(a.0.cmp(&b.0)));
        Series {
            from: UNIX_EPOCH + BIN * first as u32,
            fleet,
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffleet_runtime::messages::CURRENT;
    use ffleet_runtime::{JobId, Unit};

    fn done(node: &str, frames: u64, encode_secs: f64) -> SegmentDone {
        SegmentDone {
            version: CURRENT,
            job_id: JobId::new("j").unwrap(),
            unit: Unit::Video(0),
            attempt: 1,
            node: NodeId::new(node).unwrap(),
            outcome: SegmentOutcome::Encoded {
                result_key: "k".into(),
                frames,
                encode_secs,
            },
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn encodes_are_binned_per_node_and_old_ones_forgotten() {
        let mut b = Bins::default();
        let now = at(100_000);
        b.record(&done("n1", 100, 2.0), at(99_995), now);
        b.record(&done("n2", 50, 1.0), at(99_991), now);
        b.record(&done("n1", 30, 1.0), at(99_201), now);
        // A reused unit (no encode), and one older than the window: not counted.
        b.record(&done("n1", 999, 0.0), at(99_999), now);
        b.record(&done("n1", 999, 1.0), at(100_000 - 901), now);
        let s = b.series(now);
        assert_eq!(
            s.fleet.total,
            Count {
                segments: 3,
                frames: 180
            }
        );
        assert_eq!(s.nodes[0].0.as_str(), "n1");
        assert_eq!(
            s.nodes[0].1.total,
            Count {
                segments: 2,
                frames: 130
            }
        );
        // The last bin is the one now fills; both came in the one before it.
        assert_eq!(
            s.fleet.counts.iter().rev().nth(1),
            Some(&Count {
                segments: 2,
                frames: 150
            })
        );
        assert_eq!(s.fleet.counts.len(), BINS as usize);
        // Fifteen minutes on, all of it is gone.
        let later = at(100_000 + 901);
        b.record(&done("n3", 1, 1.0), later, later);
        let s = b.series(later);
        assert_eq!(
            s.fleet.total,
            Count {
                segments: 1,
                frames: 1
            }
        );
        assert_eq!(s.nodes.len(), 1);
    }
}
