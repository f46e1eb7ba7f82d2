//! The unit protocol under reads that go back in time. A model of one unit record in a KV
//! bucket keeps every revision it ever had; every read of it (by any node, at any step) may come
//! back at any earlier revision, as a stream leader catching up after an election can answer.
//! Writes are revision-checked against the newest revision, as the server checks them.
//!
//! The services' read-then-act rules are modelled as they are written: a revision-checked
//! update decided on a read (`Typed::modify_known`: from the caller's copy first, then reads no
//! older than the copy or a revision that refused its write), ownership checks judged by
//! `holding`, reports judged by `judge_report`. After every step the model checks that no
//! decision was taken on a stale read: no encode cancelled, no step refused, no report dropped
//! while the newest record still says otherwise; failures recorded only by failure steps, so
//! fleet faults (releases, re-reads) never spend the budget; and no result counted twice or
//! counted from a superseded attempt.

use super::*;
use crate::messages::SegmentRecord;
use proptest::prelude::*;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const BUDGET: Budget = Budget {
    retry_nodes: 3,
    max_attempts: 5,
};

/// One unit record with its whole history: what a lagging server may still answer with.
struct Kv {
    history: Vec<(u64, SegmentRecord)>,
}

impl Kv {
    fn newest(&self) -> &(u64, SegmentRecord) {
        self.history.last().expect("a record")
    }

    /// A read no older than `floor`: `pick` chooses among the revisions a lagging server could
    /// still answer with (any of them when `floor` is 0).
    fn read(&self, floor: u64, pick: u16) -> (u64, SegmentRecord) {
        let eligible: Vec<&(u64, SegmentRecord)> =
            self.history.iter().filter(|(r, _)| *r >= floor).collect();
        let (r, rec) = eligible[usize::from(pick) % eligible.len()];
        (*r, rec.clone())
    }

    /// The server's revision check; `gap` stands for writes to other keys of the stream.
    fn update(&mut self, revision: u64, rec: SegmentRecord, gap: u64) -> Option<u64> {
        let newest = self.newest().0;
        if revision != newest {
            return None;
        }
        let r = newest + 1 + gap;
        self.history.push((r, rec));
        Some(r)
    }

    /// `modify_known` as written: decide on the copy, then on reads no older than a revision
    /// that refused a write. `picks` drives which (possibly stale) revision each read returns.
    fn modify(
        &mut self,
        known: Option<(u64, SegmentRecord)>,
        step: &Step,
        picks: &[u16],
        gap: u64,
    ) -> Modified {
        let mut floor = known.as_ref().map_or(0, |(r, _)| *r);
        let mut known = known;
        for i in 0.. {
            let guessed = known.is_some();
            let (rev, rec) = match known.take() {
                Some(k) => k,
                None => self.read(floor, picks[i % picks.len()]),
            };
            match apply(Some(&rec), step, "t") {
                Err(why) if guessed => {
                    let _ = why;
                    continue;
                }
                Err(why) => return Modified::Refused { why, read: rev },
                Ok((new, applied)) => match self.update(rev, new.clone(), gap) {
                    Some(_) => return Modified::Written(Box::new(new), applied),
                    None => floor = floor.max(rev + 1),
                },
            }
        }
        unreachable!()
    }
}

enum Modified {
    Written(Box<SegmentRecord>, Applied),
    Refused { why: Refused, read: u64 },
}

/// A unit this node claimed.
#[derive(Clone)]
struct Claim {
    attempt: u32,
    /// The revision its claim wrote, and the record as it wrote it.
    copy: (u64, SegmentRecord),
    cancelled: bool,
}

#[derive(Debug, Clone)]
enum Action {
    Route {
        pick: u16,
    },
    Claim {
        node: usize,
        pick: u16,
        lag: u8,
    },
    Check {
        node: usize,
        pick: u16,
    },
    Encoded {
        node: usize,
        key: u8,
        picks: Vec<u16>,
    },
    Failed {
        node: usize,
        conclusive: bool,
        picks: Vec<u16>,
    },
    Release {
        node: usize,
        picks: Vec<u16>,
    },
    Reissue {
        pick: u16,
        picks: Vec<u16>,
    },
    Report {
        which: u8,
        pick: u16,
    },
    Refuse {
        picks: Vec<u16>,
    },
}

fn picks() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(any::<u16>(), 1..6)
}

fn action() -> impl Strategy<Value = Action> {
    let node = 0..NODES.len();
    prop_oneof![
        1 => any::<u16>().prop_map(|pick| Action::Route { pick }),
        1 => (node.clone(), any::<u16>(), 0u8..2).prop_map(|(node, pick, lag)| Action::Claim {
            node,
            pick,
            lag
        }),
        3 => (node.clone(), any::<u16>()).prop_map(|(node, pick)| Action::Check { node, pick }),
        2 => (node.clone(), 0u8..2, picks()).prop_map(|(node, key, picks)| Action::Encoded {
            node,
            key,
            picks
        }),
        1 => (node.clone(), any::<bool>(), picks()).prop_map(|(node, conclusive, picks)| {
            Action::Failed {
                node,
                conclusive,
                picks,
            }
        }),
        1 => (node, picks()).prop_map(|(node, picks)| Action::Release { node, picks }),
        1 => (any::<u16>(), picks()).prop_map(|(pick, picks)| Action::Reissue { pick, picks }),
        2 => (any::<u8>(), any::<u16>()).prop_map(|(which, pick)| Action::Report { which, pick }),
        1 => picks().prop_map(|picks| Action::Refuse { picks }),
    ]
}

fn describe(v: Final, _: &SegmentRecord) -> Failure {
    Failure::new(Reason::EncodeFailed, format!("{v:?}"))
}

/// Whether `rec` is still `node`'s running claim of `attempt`.
fn still_ours(rec: &SegmentRecord, node: &NodeId, attempt: u32) -> bool {
    rec.attempt == attempt && rec.owner.as_ref() == Some(node) && rec.state == SegmentState::Running
}

struct World {
    kv: Kv,
    nodes: Vec<NodeId>,
    claims: Vec<Option<Claim>>,
    /// Results reported to the merger and not yet judged: (attempt, key).
    reports: Vec<(u32, String)>,
    /// Failure steps accepted, which alone may add to the record's failures.
    failures_recorded: usize,
    /// The job record's collected bit for the unit (with the result it counted), how often a
    /// result was counted since the last refusal, and the attempts whose results the merger
    /// refused (their bytes failed its check).
    collected: Option<(u32, String)>,
    merges: u32,
    refused: std::collections::HashSet<u32>,
    gap: u64,
}

impl World {
    fn new() -> Self {
        World {
            kv: Kv {
                history: vec![(1, SegmentRecord::planned(None))],
            },
            nodes: NODES.iter().map(|n| NodeId::new(*n).unwrap()).collect(),
            claims: vec![None; NODES.len()],
            reports: Vec::new(),
            failures_recorded: 0,
            collected: None,
            merges: 0,
            refused: Default::default(),
            gap: 0,
        }
    }

    fn step(&mut self, a: &Action) -> Result<(), TestCaseError> {
        self.gap = (self.gap + 1) % 3;
        match a {
            Action::Route { pick } => {
                let (rev, rec) = self.kv.read(0, *pick);
                let cap = Capability::cpu();
                let step = Step::Route {
                    attempt: rec.attempt,
                    capability: &cap,
                };
                if let Ok((new, _)) = apply(Some(&rec), &step, "t") {
                    self.kv.update(rev, new, self.gap);
                }
            }
            Action::Claim { node, pick, lag } => self.claim(*node, *pick, *lag)?,
            Action::Check { node, pick } => self.check(*node, *pick)?,
            Action::Encoded { node, key, picks } => self.encoded(*node, *key, picks)?,
            Action::Failed {
                node,
                conclusive,
                picks,
            } => self.failed(*node, *conclusive, picks)?,
            Action::Release { node, picks } => self.release(*node, picks)?,
            Action::Reissue { pick, picks } => {
                // The scheduler judges a node dead on a read that may be stale; its re-issue
                // names what it saw and is revision-checked.
                let (_, seen) = self.kv.read(0, *pick);
                let step = Step::Reissue {
                    attempt: seen.attempt,
                    seen: Seen {
                        state: seen.state,
                        owner: seen.owner.as_ref(),
                    },
                };
                let _ = self.kv.modify(None, &step, picks, self.gap);
            }
            Action::Report { which, pick } => self.report(*which, *pick)?,
            Action::Refuse { picks } => {
                // The merger refuses the collected result (its bytes failed the check): the
                // unit record moves on, then the job record uncollects the unit.
                if let Some((attempt, _)) = self.collected.take() {
                    let _ = self.kv.modify(None, &Step::Refuse, picks, self.gap);
                    self.refused.insert(attempt);
                    self.merges = 0;
                }
            }
        }
        // Only failure steps record failures: releases and re-issues never spend the budget.
        prop_assert_eq!(self.kv.newest().1.failures.len(), self.failures_recorded);
        prop_assert!(
            self.merges <= 1,
            "a unit counted twice without a refusal between"
        );
        Ok(())
    }

    fn claim(&mut self, node: usize, pick: u16, lag: u8) -> Result<(), TestCaseError> {
        if self.claims[node].is_some() {
            return Ok(());
        }
        // The task's attempt, as the message carried it (possibly an older one).
        let (rev, rec) = self.kv.read(0, pick);
        let attempt = rec.attempt.saturating_sub(u32::from(lag)).max(1);
        let step = Step::Claim {
            attempt,
            node: &self.nodes[node],
            gpu_class: None,
        };
        if let Ok((new, _)) = apply(Some(&rec), &step, "t")
            && let Some(r) = self.kv.update(rev, new.clone(), self.gap)
        {
            self.claims[node] = Some(Claim {
                attempt,
                copy: (r, new),
                cancelled: false,
            });
        }
        Ok(())
    }

    /// The heartbeat loop's ownership check: one read, any revision.
    fn check(&mut self, node: usize, pick: u16) -> Result<(), TestCaseError> {
        let Some(c) = self.claims[node].clone() else {
            return Ok(());
        };
        let (rev, rec) = self.kv.read(0, pick);
        let judged = holding(Some((&rec, rev)), &self.nodes[node], c.attempt, c.copy.0);
        if judged == Holding::Moved {
            let newest = &self.kv.newest().1;
            prop_assert!(
                !still_ours(newest, &self.nodes[node], c.attempt),
                "encode cancelled on a read at {} while the record (at {}) is still the claim",
                rev,
                self.kv.newest().0
            );
            if let Some(c) = self.claims[node].as_mut() {
                c.cancelled = true;
            }
        }
        Ok(())
    }

    /// A step of `node`'s claimed attempt: a refusal must be true of the newest record.
    fn own_step(
        &mut self,
        node: usize,
        step: &Step,
        picks: &[u16],
    ) -> Result<Option<(SegmentRecord, Applied)>, TestCaseError> {
        let c = self.claims[node].take().expect("a claim");
        match self.kv.modify(Some(c.copy.clone()), step, picks, self.gap) {
            Modified::Written(new, applied) => Ok(Some((*new, applied))),
            Modified::Refused { why, read } => {
                let newest = &self.kv.newest().1;
                prop_assert!(
                    !still_ours(newest, &self.nodes[node], c.attempt),
                    "{:?} refused on a read at {} though the newest record is still the claim",
                    why,
                    read
                );
                prop_assert!(read >= c.copy.0, "decided on a read older than the claim");
                Ok(None)
            }
        }
    }

    fn encoded(&mut self, node: usize, key: u8, picks: &[u16]) -> Result<(), TestCaseError> {
        let me = self.nodes[node].clone();
        let Some(c) = self.claims[node].clone().filter(|c| !c.cancelled) else {
            return Ok(());
        };
        let result = UnitResult {
            key: format!("a{}k{key}", c.attempt),
            frames: 1,
            decode_errors: 0,
            digest: None,
            bytes_moved: 0,
        };
        let step = Step::Encoded {
            attempt: c.attempt,
            node: &me,
            result: &result,
        };
        if self.own_step(node, &step, picks)?.is_some() {
            self.reports.push((c.attempt, result.key.clone()));
        }
        Ok(())
    }

    fn failed(
        &mut self,
        node: usize,
        conclusive: bool,
        picks: &[u16],
    ) -> Result<(), TestCaseError> {
        let me = self.nodes[node].clone();
        let Some(c) = self.claims[node].clone() else {
            return Ok(());
        };
        let f = Failure::new(Reason::EncodeFailed, "ffmpeg failed (exit code 1): x");
        let step = Step::Failed(Failing {
            attempt: c.attempt,
            node: &me,
            failure: &f,
            on_gpu: false,
            conclusive,
            budget: BUDGET,
            describe: &describe,
        });
        if self.own_step(node, &step, picks)?.is_some() {
            self.failures_recorded += 1;
        }
        Ok(())
    }

    /// A hand-back for the fleet's sake (a drain, a broker error, a cancelled encode).
    fn release(&mut self, node: usize, picks: &[u16]) -> Result<(), TestCaseError> {
        let me = self.nodes[node].clone();
        if self.claims[node].is_none() {
            return Ok(());
        }
        let step = Step::Release {
            attempt: self.claims[node].as_ref().unwrap().attempt,
            node: &me,
        };
        if let Some((new, applied)) = self.own_step(node, &step, picks)? {
            prop_assert!(matches!(applied, Applied::Reissued(_)));
            prop_assert_eq!(new.state, SegmentState::Planned);
        }
        Ok(())
    }

    /// The merger judges one report on a read that may be stale.
    fn report(&mut self, which: u8, pick: u16) -> Result<(), TestCaseError> {
        if self.reports.is_empty() {
            return Ok(());
        }
        let i = usize::from(which) % self.reports.len();
        let (attempt, key) = self.reports[i].clone();
        let (_, rec) = self.kv.read(0, pick);
        let newest = self.kv.newest().1.clone();
        let current = newest.attempt == attempt
            && newest.state == SegmentState::Done
            && newest.result_key.as_deref() == Some(key.as_str());
        match judge_report(&rec, attempt, &key) {
            Report::Behind => {}
            Report::Ignore => {
                prop_assert!(!current, "a current result dropped on a stale read");
                self.reports.remove(i);
            }
            Report::Count => {
                // A result superseded by anything but the merger's own refusal is never
                // counted. A refused one can be, by a report judged while the refusal was
                // under way (no read can order the two): the merge checks every result's bytes
                // again and refuses it again.
                prop_assert!(
                    current || self.refused.contains(&attempt),
                    "a superseded result counted"
                );
                if self.collected.is_none() {
                    self.collected = Some((attempt, key));
                    self.merges += 1;
                }
                self.reports.remove(i);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_decision_is_taken_on_a_read_older_than_what_the_reader_knows(
        actions in proptest::collection::vec(action(), 1..80)
    ) {
        let mut world = World::new();
        for a in &actions {
            world.step(a)?;
        }
    }
}

/// The failure seen in a compose run: an encoder's ownership check read the record from before
/// its own claim (still queued) and cancelled its own encode. Judged now, that read is behind.
#[test]
fn a_read_from_before_the_claim_does_not_cancel_the_encode() {
    let n1 = NodeId::new("n1").unwrap();
    let cap = Capability::cpu();
    let planned = SegmentRecord::planned(None);
    let route = Step::Route {
        attempt: 1,
        capability: &cap,
    };
    let (queued, _) = apply(Some(&planned), &route, "t").unwrap();
    let claim = Step::Claim {
        attempt: 1,
        node: &n1,
        gpu_class: None,
    };
    let (running, _) = apply(Some(&queued), &claim, "t").unwrap();
    // Queued at revision 7, claimed at 9.
    assert_eq!(holding(Some((&queued, 7)), &n1, 1, 9), Holding::Behind);
    assert_eq!(holding(Some((&running, 9)), &n1, 1, 9), Holding::Ours);
    // Moved on after the claim: another attempt, at a later revision.
    let mut moved = running.clone();
    moved.attempt = 2;
    moved.owner = None;
    assert_eq!(holding(Some((&moved, 12)), &n1, 1, 9), Holding::Moved);
    // Deleted (the job ended) at a revision past the claim.
    assert_eq!(holding(None, &n1, 1, 9), Holding::Moved);
    // A release by the owner: a new attempt with no failure recorded.
    let release = Step::Release {
        attempt: 1,
        node: &n1,
    };
    let (next, applied) = apply(Some(&running), &release, "t").unwrap();
    assert_eq!(applied, Applied::Reissued(2));
    assert!(next.failures.is_empty() && next.owner.is_none());
    // Nobody else may release it.
    let n2 = NodeId::new("n2").unwrap();
    let foreign = Step::Release {
        attempt: 1,
        node: &n2,
    };
    assert_eq!(
        apply(Some(&running), &foreign, "t").unwrap_err(),
        Refused::NotOwner
    );
}

/// A run cut short (a stall) spends the budget but is no verdict on the input: two nodes
/// stalling alike do not fail the unit as damaged input.
#[test]
fn cut_short_runs_spend_the_budget_without_judging_the_input() {
    let f = Failure::new(Reason::EncodeFailed, "ffmpeg made no progress for 30s");
    let mut rec = SegmentRecord::planned(None);
    for node in ["n1", "n2"] {
        let node = NodeId::new(node).unwrap();
        let claim = Step::Claim {
            attempt: rec.attempt,
            node: &node,
            gpu_class: None,
        };
        rec = apply(Some(&rec), &claim, "t").unwrap().0;
        let fail = Step::Failed(Failing {
            attempt: rec.attempt,
            node: &node,
            failure: &f,
            on_gpu: false,
            conclusive: false,
            budget: BUDGET,
            describe: &describe,
        });
        let (next, applied) = apply(Some(&rec), &fail, "t").unwrap();
        assert!(matches!(applied, Applied::Reissued(_)), "{applied:?}");
        rec = next;
    }
    assert_eq!(rec.failures.len(), 2);
}
