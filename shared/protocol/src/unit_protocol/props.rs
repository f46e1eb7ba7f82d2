//! Property tests of the unit protocol: random interleavings of every service's steps, as they
//! happen in a fleet (kills and re-issues, late results of superseded attempts, duplicate
//! deliveries, concurrent claims by several nodes, tasks from the future that a lagging read
//! produces), checked against the protocol's promises after every step.

use super::*;
use crate::messages::SegmentRecord;
use proptest::prelude::*;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const BUDGET: Budget = Budget {
    retry_nodes: 3,
    max_attempts: 5,
};

/// One step as generated: `lag` is how far behind the record's attempt the caller's attempt
/// is (−1: one ahead, a caller whose read came from the future of a lagging reader).
#[derive(Debug, Clone)]
enum Action {
    Route {
        lag: i64,
    },
    Claim {
        lag: i64,
        node: usize,
        gpu: bool,
    },
    Encoded {
        lag: i64,
        node: usize,
        key: u8,
    },
    Failed {
        lag: i64,
        node: usize,
        kind: u8,
        on_gpu: bool,
    },
    GiveUp {
        lag: i64,
    },
    Reissue {
        lag: i64,
        state: u8,
        owner: Option<usize>,
    },
    HandBack {
        lag: i64,
    },
    Release {
        lag: i64,
        node: usize,
    },
    Refuse,
    /// The splitter writes a fresh first attempt (another try of the split, its cut `key`).
    Replan {
        key: u8,
    },
}

fn lag() -> impl Strategy<Value = i64> {
    prop_oneof![4 => Just(0i64), 2 => Just(1i64), 1 => Just(2i64), 1 => Just(-1i64)]
}

fn action() -> impl Strategy<Value = Action> {
    let node = 0..NODES.len();
    prop_oneof![
        lag().prop_map(|lag| Action::Route { lag }),
        (lag(), node.clone(), any::<bool>()).prop_map(|(lag, node, gpu)| Action::Claim {
            lag,
            node,
            gpu
        }),
        (lag(), node.clone(), 0u8..3).prop_map(|(lag, node, key)| Action::Encoded {
            lag,
            node,
            key
        }),
        (lag(), node.clone(), 0u8..4, any::<bool>()).prop_map(|(lag, node, kind, on_gpu)| {
            Action::Failed {
                lag,
                node,
                kind,
                on_gpu,
            }
        }),
        lag().prop_map(|lag| Action::GiveUp { lag }),
        (lag(), 0u8..5, proptest::option::of(node.clone()))
            .prop_map(|(lag, state, owner)| { Action::Reissue { lag, state, owner } }),
        lag().prop_map(|lag| Action::HandBack { lag }),
        (lag(), node.clone()).prop_map(|(lag, node)| Action::Release { lag, node }),
        Just(Action::Refuse),
        (0u8..3).prop_map(|key| Action::Replan { key }),
    ]
}

fn state(i: u8) -> SegmentState {
    [
        SegmentState::Planned,
        SegmentState::Queued,
        SegmentState::Running,
        SegmentState::Done,
        SegmentState::Failed,
    ][usize::from(i % 5)]
}

fn failure(kind: u8) -> Failure {
    match kind {
        0 => Failure::new(
            Reason::EncodeFailed,
            "ffmpeg failed (exit code 69): [h264 @ 0x1] Invalid NAL unit size",
        ),
        1 => Failure::new(Reason::EncodeFailed, "ffmpeg failed (exit code 1): other"),
        2 => Failure::new(Reason::StorageFull, "the media bucket is full"),
        _ => Failure::new(Reason::Internal, "node trouble"),
    }
}

fn describe(v: Final, _: &SegmentRecord) -> Failure {
    Failure::new(Reason::EncodeFailed, format!("{v:?}"))
}

/// Applies one generated action to `rec`; returns the step's attempt (if any), what it did, and
/// the action's node.
fn run(
    rec: &SegmentRecord,
    a: &Action,
) -> (Option<u32>, Result<(SegmentRecord, Applied), Refused>) {
    let at = |lag: i64| (i64::from(rec.attempt) - lag).max(1) as u32;
    let nodes: Vec<NodeId> = NODES.iter().map(|n| NodeId::new(*n).unwrap()).collect();
    let class = GpuClass {
        model: "L4".into(),
        driver: "550".into(),
    };
    let cap = Capability::cpu();
    let result;
    let fail;
    let fresh;
    let step = match *a {
        Action::Route { lag } => Step::Route {
            attempt: at(lag),
            capability: &cap,
        },
        Action::Claim { lag, node, gpu } => Step::Claim {
            attempt: at(lag),
            node: &nodes[node],
            gpu_class: gpu.then_some(&class),
        },
        Action::Encoded { lag, node, key } => {
            result = UnitResult {
                key: format!("k{key}"),
                frames: 10,
                decode_errors: 0,
                digest: None,
                bytes_moved: 1,
            };
            Step::Encoded {
                attempt: at(lag),
                node: &nodes[node],
                result: &result,
            }
        }
        Action::Failed {
            lag,
            node,
            kind,
            on_gpu,
        } => {
            fail = failure(kind);
            Step::Failed(Failing {
                attempt: at(lag),
                node: &nodes[node],
                failure: &fail,
                on_gpu,
                conclusive: true,
                budget: BUDGET,
                describe: &describe,
            })
        }
        Action::GiveUp { lag } => {
            fail = failure(3);
            Step::GiveUp {
                attempt: at(lag),
                failure: &fail,
            }
        }
        Action::Reissue {
            lag,
            state: s,
            owner,
        } => Step::Reissue {
            attempt: at(lag),
            seen: Seen {
                state: state(s),
                owner: owner.map(|o| &nodes[o]),
            },
        },
        Action::HandBack { lag } => Step::HandBack { attempt: at(lag) },
        Action::Release { lag, node } => Step::Release {
            attempt: at(lag),
            node: &nodes[node],
        },
        Action::Refuse => Step::Refuse,
        Action::Replan { key } => {
            fresh = SegmentRecord::planned(Some(crate::messages::SegmentPlan {
                index: 0,
                first_frame: 0,
                frames: 10,
                start_pts: 0,
                duration_ticks: 10,
                source_key: format!("cut{key}"),
                source_digest: None,
                within: None,
                headless: 0,
                headless_ticks: 0,
            }));
            Step::Replan { fresh: &fresh }
        }
    };
    (step.attempt(), apply(Some(rec), &step, "t"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_interleaving_keeps_the_protocols_promises(
        actions in proptest::collection::vec(action(), 1..60)
    ) {
        let mut rec = SegmentRecord::planned(None);
        // Results accepted for each attempt.
        let mut results: std::collections::HashMap<u32, u32> = Default::default();
        for a in &actions {
            let before = rec.clone();
            let (attempt, outcome) = run(&rec, a);
            let Ok((after, applied)) = outcome else {
                continue;
            };
            // Fencing: only the current attempt's steps apply.
            if let Some(at) = attempt {
                prop_assert_eq!(at, before.attempt, "{:?} applied to another attempt", a);
            }
            // Attempts only go up, one at a time, and only by a re-issue.
            match applied {
                Applied::Reissued(n) => {
                    prop_assert_eq!(n, before.attempt + 1);
                    prop_assert_eq!(after.attempt, n);
                    prop_assert_eq!(after.state, SegmentState::Planned);
                    prop_assert!(after.owner.is_none() && after.result_key.is_none());
                }
                _ => prop_assert_eq!(after.attempt, before.attempt),
            }
            if let Applied::Recorded = applied {
                // A result only from the running attempt's owner, once per attempt.
                prop_assert_eq!(before.state, SegmentState::Running);
                let Action::Encoded { node, .. } = a else {
                    return Err(TestCaseError::fail("a result from a non-result step"));
                };
                prop_assert_eq!(before.owner.as_ref().map(|o| o.as_str()), Some(NODES[*node]));
                let n = results.entry(after.attempt).or_default();
                *n += 1;
                prop_assert_eq!(*n, 1, "two results accepted for attempt {}", after.attempt);
            }
            // A replan replaces only what a split left; a release never spends the budget.
            if let Action::Replan { .. } = a {
                prop_assert!(
                    before.state == SegmentState::Planned
                        && before.attempt == 1
                        && before.failures.is_empty(),
                    "a replan overwrote {:?}",
                    before
                );
                prop_assert_eq!((after.attempt, after.state), (1, SegmentState::Planned));
            }
            if let Action::Release { .. } = a {
                prop_assert_eq!(after.failures.len(), before.failures.len());
            }
            // Failed is final; done changes only by a refusal.
            prop_assert!(before.state != SegmentState::Failed, "a failed unit changed: {:?}", a);
            if before.state == SegmentState::Done {
                prop_assert!(matches!(a, Action::Refuse), "a done unit changed by {:?}", a);
            }
            // The budget: a unit still in play has some left; spending it fails the unit.
            let nodes = after.failed_nodes().len() as u32;
            let fails = after.failures.len() as u32;
            prop_assert!(nodes <= BUDGET.retry_nodes && fails <= BUDGET.max_attempts);
            if after.state != SegmentState::Failed {
                prop_assert!(nodes < BUDGET.retry_nodes && fails < BUDGET.max_attempts);
            } else {
                prop_assert!(after.failure.is_some());
            }
            match after.state {
                SegmentState::Running => prop_assert!(after.owner.is_some()),
                SegmentState::Done => {
                    prop_assert!(after.owner.is_some() && after.result_key.is_some())
                }
                _ => {}
            }
            rec = after;
        }
    }

    /// A refused step says why, and a step of a superseded attempt is always refused.
    #[test]
    fn superseded_attempts_are_refused(a in action(), moved_on in 1u32..4) {
        let mut rec = SegmentRecord::planned(None);
        rec.attempt += moved_on;
        let (attempt, outcome) = run(&rec, &a);
        if let Some(at) = attempt
            && at != rec.attempt
        {
            prop_assert_eq!(outcome.err(), Some(Refused::OtherAttempt { current: rec.attempt }));
        }
    }
}

/// Two nodes, the CPU capability and a result: what the hand-written cases share.
fn two_nodes() -> (NodeId, NodeId, Capability, UnitResult) {
    let result = UnitResult {
        key: "k".into(),
        frames: 1,
        decode_errors: 0,
        digest: None,
        bytes_moved: 0,
    };
    (
        NodeId::new("n1").unwrap(),
        NodeId::new("n2").unwrap(),
        Capability::cpu(),
        result,
    )
}

#[test]
fn a_late_result_of_a_superseded_attempt_is_refused() {
    let (n1, n2, cap, result) = two_nodes();
    let rec = SegmentRecord::planned(None);
    let (rec, _) = apply(
        Some(&rec),
        &Step::Route {
            attempt: 1,
            capability: &cap,
        },
        "t",
    )
    .unwrap();
    let claim = |rec: &SegmentRecord, attempt, node| {
        apply(
            Some(rec),
            &Step::Claim {
                attempt,
                node,
                gpu_class: None,
            },
            "t",
        )
        .unwrap()
        .0
    };
    let rec = claim(&rec, 1, &n1);
    // n1 goes silent: the scheduler moves the unit on, n2 takes attempt 2.
    let (rec, applied) = apply(
        Some(&rec),
        &Step::Reissue {
            attempt: 1,
            seen: Seen {
                state: SegmentState::Running,
                owner: Some(&n1),
            },
        },
        "t",
    )
    .unwrap();
    assert_eq!(applied, Applied::Reissued(2));
    let rec = claim(&rec, 2, &n2);
    let late = Step::Encoded {
        attempt: 1,
        node: &n1,
        result: &result,
    };
    assert_eq!(
        apply(Some(&rec), &late, "t").unwrap_err(),
        Refused::OtherAttempt { current: 2 }
    );
    // n1 wakes up and claims its old task again: refused too.
    let reclaim = Step::Claim {
        attempt: 1,
        node: &n1,
        gpu_class: None,
    };
    assert!(apply(Some(&rec), &reclaim, "t").is_err());
    let mine = Step::Encoded {
        attempt: 2,
        node: &n2,
        result: &result,
    };
    let (done, applied) = apply(Some(&rec), &mine, "t").unwrap();
    assert_eq!(applied, Applied::Recorded);
    assert_eq!(done.state, SegmentState::Done);
}

/// A result refused on a read taken before the node's own claim (or before the re-issue that
/// made its attempt) says so, and no refusal on a current record does.
#[test]
fn refusals_only_a_read_older_than_the_claim_gives_are_told_apart() {
    let (n1, n2, cap, result) = two_nodes();
    let encoded = |attempt, node| Step::Encoded {
        attempt,
        node,
        result: &result,
    };
    let planned = SegmentRecord::planned(None);
    let route = Step::Route {
        attempt: 1,
        capability: &cap,
    };
    let (queued, _) = apply(Some(&planned), &route, "t").unwrap();
    for old in [&planned, &queued] {
        let why = apply(Some(old), &encoded(1, &n1), "t").unwrap_err();
        assert!(why.predates(1), "{why:?} on a {:?} record", old.state);
    }
    let claim = |attempt, node| Step::Claim {
        attempt,
        node,
        gpu_class: None,
    };
    let (running, _) = apply(Some(&queued), &claim(1, &n1), "t").unwrap();
    // Attempt 2 is n2's; a read still at attempt 1 predates it.
    let why = apply(Some(&running), &claim(2, &n2), "t").unwrap_err();
    assert_eq!(why, Refused::OtherAttempt { current: 1 });
    assert!(why.predates(2));
    // Taken over, superseded, finished: current records, believed.
    let (taken, _) = apply(Some(&running), &claim(1, &n2), "t").unwrap();
    let why = apply(Some(&taken), &encoded(1, &n1), "t").unwrap_err();
    assert_eq!(why, Refused::NotOwner);
    assert!(!why.predates(1));
    let (done, _) = apply(Some(&taken), &encoded(1, &n2), "t").unwrap();
    assert!(
        !apply(Some(&done), &encoded(1, &n1), "t")
            .unwrap_err()
            .predates(1)
    );
    let mut moved_on = running.clone();
    moved_on.attempt = 3;
    assert!(
        !apply(Some(&moved_on), &encoded(1, &n1), "t")
            .unwrap_err()
            .predates(1)
    );
    assert!(!apply(None, &encoded(1, &n1), "t").unwrap_err().predates(1));
}

#[test]
fn failing_the_same_way_on_two_cpu_nodes_is_the_inputs_fault() {
    let f = failure(0);
    let mut rec = SegmentRecord::planned(None);
    for (i, node) in ["n1", "n2"].into_iter().enumerate() {
        let node = NodeId::new(node).unwrap();
        rec = apply(
            Some(&rec),
            &Step::Claim {
                attempt: rec.attempt,
                node: &node,
                gpu_class: None,
            },
            "t",
        )
        .unwrap()
        .0;
        let (next, applied) = apply(
            Some(&rec),
            &Step::Failed(Failing {
                attempt: rec.attempt,
                node: &node,
                failure: &f,
                on_gpu: false,
                conclusive: true,
                budget: BUDGET,
                describe: &describe,
            }),
            "t",
        )
        .unwrap();
        if i == 0 {
            assert_eq!(applied, Applied::Reissued(2));
        } else {
            assert_eq!(applied, Applied::Failed);
            assert_eq!(next.failure.as_ref().unwrap().message, "InputDamaged");
        }
        rec = next;
    }
}

#[test]
fn failures_compare_without_process_addresses() {
    let a = "v00002 of job j failed: ffmpeg failed (exit code 1): [h264 @ 0x55d0c3a1b2c0] Invalid NAL unit size";
    let b = "v00002 of job j failed: ffmpeg failed (exit code 1): [h264 @ 0x5611aa00ff10] Invalid NAL unit size";
    assert!(same_failure(a, b));
    assert!(!same_failure(
        a,
        "v00002 of job j failed: ffmpeg failed (exit code 1): other"
    ));
    // One run folds a repeat that the other prints twice.
    let c = "failed (exit code 69): [h264 @ 0x1a] Error splitting\nError while decoding\n    Last message repeated 1 times\n[h264 @ 0x2b] Error splitting";
    let d = "failed (exit code 69): [h264 @ 0x3c] Error splitting\nError while decoding\nError while decoding\n[h264 @ 0x4d] Error splitting\n[h264 @ 0x5e] Error splitting";
    assert!(same_failure(c, d));
    // The kept tail may hold different lines of the same failure.
    let e = "failed (exit code 69): [h264 @ 0x1a] Error splitting\n[h264 @ 0x2a] Error splitting";
    assert!(same_failure(c, e));
    assert!(!same_failure(
        e,
        "failed (exit code 1): [h264 @ 0x1a] Error splitting"
    ));
    let f = "v00001 of job j: encoded 0 frames, the segment should hold 25";
    assert!(same_failure(f, f));
    assert!(!same_failure(
        f,
        "v00001 of job j: encoded 3 frames, the segment should hold 25"
    ));
}

/// A split tried again replans what an earlier try left (planned, first attempt, no failure)
/// and nothing further along: a routed, claimed, re-issued or failed unit stays as it is.
#[test]
fn a_replan_replaces_only_what_a_split_left() {
    let n1 = NodeId::new("n1").unwrap();
    let cap = Capability::cpu();
    let left = SegmentRecord::planned(None);
    let fresh = SegmentRecord::planned(None);
    let replan = Step::Replan { fresh: &fresh };
    let (n, applied) = apply(Some(&left), &replan, "t2").unwrap();
    assert_eq!(applied, Applied::Planned);
    assert_eq!(
        (n.state, n.attempt, &n.updated_at[..]),
        (SegmentState::Planned, 1, "t2")
    );
    let routed = apply(
        Some(&left),
        &Step::Route {
            attempt: 1,
            capability: &cap,
        },
        "t",
    )
    .unwrap()
    .0;
    let claimed = apply(
        Some(&routed),
        &Step::Claim {
            attempt: 1,
            node: &n1,
            gpu_class: None,
        },
        "t",
    )
    .unwrap()
    .0;
    let reissued = apply(
        Some(&claimed),
        &Step::Reissue {
            attempt: 1,
            seen: Seen {
                state: SegmentState::Running,
                owner: Some(&n1),
            },
        },
        "t",
    )
    .unwrap()
    .0;
    for past in [&routed, &claimed, &reissued] {
        assert!(apply(Some(past), &replan, "t").is_err(), "{past:?}");
    }
    assert_eq!(apply(None, &replan, "t").unwrap_err(), Refused::Missing);
}
