//! Property tests of the job state machine: random sequences of every service's steps, as they
//! reach a job record in a fleet (reports repeated and out of order, units foreign to the plan,
//! results refused at merge and collected again, late plans, completes and fails from any
//! state), checked against the machine's promises after every step.

use super::*;
use crate::messages::records::OutputInfo;
use crate::messages::{JobRequest, UnitSet};
use crate::reason::Reason;
use proptest::prelude::*;

/// Planned frames of a unit in these tests: distinct per unit, so a wrong sum shows.
fn frames(unit: Unit) -> u64 {
    match unit {
        Unit::Video(i) => 100 + u64::from(i) * 7,
        Unit::Audio => 0,
    }
}

/// A unit index as generated: in the plan or past its end (foreign), or the audio unit.
#[derive(Debug, Clone, Copy)]
struct Pick(u8);

impl Pick {
    fn unit(self) -> Unit {
        if self.0 == u8::MAX {
            Unit::Audio
        } else {
            Unit::Video(u32::from(self.0))
        }
    }
}

#[derive(Debug, Clone)]
enum Action {
    Plan,
    Collect(Vec<Pick>),
    Uncollect(Vec<Pick>),
    Complete,
    Finalize,
    Fail,
    Cancel,
    Prioritize(i32),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![8 => (0u8..8).prop_map(Pick), 1 => Just(Pick(u8::MAX))]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        1 => Just(Action::Plan),
        8 => prop::collection::vec(pick(), 1..4).prop_map(Action::Collect),
        2 => prop::collection::vec(pick(), 1..3).prop_map(Action::Uncollect),
        2 => Just(Action::Complete),
        1 => Just(Action::Finalize),
        1 => Just(Action::Fail),
        1 => Just(Action::Cancel),
        1 => (-100i32..=100).prop_map(Action::Prioritize),
    ]
}

fn splitting() -> JobRecord {
    let request: JobRequest = serde_json::from_value(serde_json::json!({
        "version": 1,
        "job_id": "j",
        "input": "file:///in.mp4",
        "output": "file:///out.mp4",
    }))
    .expect("request");
    JobRecord::new(request, "h264".into())
}

fn source() -> SourceInfo {
    serde_json::from_value(serde_json::json!({
        "format": "mov,mp4,m4a,3gp,3g2,mj2",
        "size_bytes": 1000,
        "format_start_secs": 0.0,
        "video": {
            "codec": "h264", "width": 320, "height": 240,
            "frame_rate": {"num": 30, "den": 1}, "time_base": {"num": 1, "den": 30},
            "frames": 1000, "start_pts": 0, "duration_ticks": 1000
        }
    }))
    .expect("source")
}

fn plan(segments: u32, audio: bool) -> Plan {
    serde_json::from_value(serde_json::json!({
        "segments": segments,
        "audio": audio,
        "container": "mp4",
        "source_path": "/in.mp4",
        "output_path": "/out.mp4",
    }))
    .expect("plan")
}

fn output() -> OutputInfo {
    OutputInfo {
        uri: "file:///out.mp4".into(),
        frames: 1000,
        duration_secs: 1.0,
        bytes: 1,
        wall_secs: 1.0,
        decode_errors: 0,
        warnings: Vec::new(),
        media_bytes: 0,
        digest: None,
    }
}

fn with_frames(picks: &[Pick]) -> Vec<(Unit, u64)> {
    picks.iter().map(|p| (p.unit(), frames(p.unit()))).collect()
}

fn checked_sum(set: &UnitSet) -> u64 {
    set.iter().map(frames).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn promises_hold_after_every_step(
        segments in 1u32..6,
        audio in any::<bool>(),
        actions in prop::collection::vec(action(), 1..40),
    ) {
        let source = source();
        let plan = plan(segments, audio);
        let fail = Failure::new(Reason::EncodeFailed, "x");
        let out = output();
        let mut rec = splitting();
        let mut entered_merging = 0usize;
        let mut told_to_merge = 0usize;
        for (i, a) in actions.iter().enumerate() {
            let now = format!("t{i}");
            let units;
            let step = match a {
                Action::Plan => JobStep::Plan { source: &source, plan: &plan, media_bytes: 5 },
                Action::Collect(p) => {
                    units = with_frames(p);
                    JobStep::Collect { units: &units }
                }
                Action::Uncollect(p) => {
                    units = with_frames(p);
                    JobStep::Uncollect { units: &units }
                }
                Action::Complete => JobStep::Complete { output: &out },
                Action::Finalize => JobStep::Finalize,
                Action::Fail => JobStep::Fail { failure: &fail },
                Action::Cancel => JobStep::Cancel,
                Action::Prioritize(p) => JobStep::Prioritize { priority: *p },
            };
            let before = rec.clone();
            match apply(Some(&rec), &step, &now) {
                Err(why) => {
                    // A refusal writes nothing; a terminal record refuses everything.
                    if before.state.is_terminal() {
                        prop_assert_eq!(why, JobRefused::Terminal(before.state));
                    }
                }
                Ok((next, applied)) => {
                    prop_assert!(!before.state.is_terminal(), "{:?} changed a {:?} job", a, before.state);
                    if let JobApplied::Collected { outcomes, changed } = &applied {
                        prop_assert_eq!(outcomes.len(), units_of(a));
                        let merges = outcomes.iter().filter(|o| **o == Collected::Merge).count();
                        prop_assert!(merges <= 1, "{} units told to merge at once", merges);
                        told_to_merge += merges;
                        if !changed {
                            prop_assert_eq!(&next, &before, "an unchanged collect wrote");
                        }
                    }
                    // Merging is entered only from encoding, by a collect, with the set full.
                    if next.state == JobState::Merging && before.state != JobState::Merging {
                        prop_assert_eq!(before.state, JobState::Encoding);
                        prop_assert!(matches!(a, Action::Collect(_)), "{:?} entered merging", a);
                        entered_merging += 1;
                    }
                    if next.state == JobState::Completed {
                        prop_assert!(matches!(before.state, JobState::Merging | JobState::Finalizing));
                        prop_assert!(next.output.is_some());
                    }
                    // Finalizing only from merging; once finalizing, no cancel.
                    if next.state == JobState::Finalizing && before.state != JobState::Finalizing {
                        prop_assert_eq!(before.state, JobState::Merging);
                    }
                    if before.state == JobState::Finalizing {
                        prop_assert!(next.state != JobState::Cancelled, "a finalizing job was cancelled");
                    }
                    if next.state == JobState::Failed {
                        prop_assert!(next.failure.is_some());
                    }
                    // A cancel ends any unfinished job, and says what it stopped; nothing
                    // else cancels.
                    prop_assert_eq!(
                        next.state == JobState::Cancelled,
                        matches!(a, Action::Cancel),
                        "{:?} led to {:?}", a, next.state
                    );
                    // A new priority changes the priority alone.
                    if let Action::Prioritize(p) = a {
                        prop_assert_eq!(next.priority(), *p);
                        let mut same = next.clone();
                        same.priority = before.priority;
                        same.updated_at.clone_from(&before.updated_at);
                        prop_assert_eq!(&same, &before);
                    }
                    if let JobApplied::Cancelled { during } = applied {
                        prop_assert_eq!(during, before.state);
                        prop_assert!(next.output.is_none(), "a cancelled job has an output");
                    }
                    rec = next;
                }
            }
            // The collected units are units of the plan, their frames exactly the sum.
            match &rec.plan {
                Some(p) => {
                    for u in rec.collected.iter() {
                        prop_assert!(p.contains(u), "{} collected, not in the plan", u);
                    }
                }
                None => prop_assert!(rec.collected.is_empty()),
            }
            prop_assert_eq!(rec.frames_collected, checked_sum(&rec.collected));
            if matches!(rec.state, JobState::Merging | JobState::Finalizing) {
                let p = rec.plan.as_ref().expect("a merging job has a plan");
                prop_assert_eq!(rec.collected.len(), p.unit_count());
            }
            // Exactly one collect is told to merge for each entry into merging.
            prop_assert_eq!(told_to_merge, entered_merging);
        }
    }
}

fn units_of(a: &Action) -> usize {
    match a {
        Action::Collect(p) | Action::Uncollect(p) => p.len(),
        _ => 0,
    }
}

#[test]
fn a_repeated_report_changes_nothing_and_a_foreign_one_is_ignored() {
    let (rec, _) = apply(
        Some(&splitting()),
        &JobStep::Plan {
            source: &source(),
            plan: &plan(2, false),
            media_bytes: 0,
        },
        "t0",
    )
    .expect("plan");
    let one = [(Unit::Video(0), 10)];
    let (rec, _) = apply(Some(&rec), &JobStep::Collect { units: &one }, "t1").expect("collect");
    let (again, applied) =
        apply(Some(&rec), &JobStep::Collect { units: &one }, "t2").expect("repeat");
    assert_eq!(again, rec);
    assert!(matches!(
        applied,
        JobApplied::Collected { changed: false, .. }
    ));
    let foreign = [(Unit::Video(7), 10), (Unit::Audio, 0)];
    let (_, applied) =
        apply(Some(&rec), &JobStep::Collect { units: &foreign }, "t3").expect("foreign");
    assert_eq!(
        applied,
        JobApplied::Collected {
            outcomes: vec![Collected::Foreign, Collected::Foreign],
            changed: false
        }
    );
}

#[test]
fn a_collect_on_a_record_behind_the_report_is_told_apart() {
    let step = JobStep::Collect {
        units: &[(Unit::Video(0), 1)],
    };
    assert!(apply(None, &step, "t").unwrap_err().behind());
    assert!(apply(Some(&splitting()), &step, "t").unwrap_err().behind());
    let mut failed = splitting();
    failed.state = JobState::Failed;
    assert!(!apply(Some(&failed), &step, "t").unwrap_err().behind());
}

#[test]
fn a_cancel_and_a_complete_racing_on_one_merging_record_end_it_once() {
    let (mut rec, _) = apply(
        Some(&splitting()),
        &JobStep::Plan {
            source: &source(),
            plan: &plan(1, false),
            media_bytes: 0,
        },
        "t0",
    )
    .expect("plan");
    let one = [(Unit::Video(0), 10)];
    rec = apply(Some(&rec), &JobStep::Collect { units: &one }, "t1")
        .expect("collect")
        .0;
    assert_eq!(rec.state, JobState::Merging);
    // Both decide on the same read; the store takes the first write and the other one reads
    // again, where it is refused.
    let (cancelled, applied) = apply(Some(&rec), &JobStep::Cancel, "t2").expect("cancel");
    assert_eq!(
        applied,
        JobApplied::Cancelled {
            during: JobState::Merging
        }
    );
    let out = output();
    assert_eq!(
        apply(Some(&cancelled), &JobStep::Complete { output: &out }, "t3").unwrap_err(),
        JobRefused::Terminal(JobState::Cancelled)
    );
    let (completed, _) =
        apply(Some(&rec), &JobStep::Complete { output: &out }, "t2").expect("complete");
    assert_eq!(
        apply(Some(&completed), &JobStep::Cancel, "t3").unwrap_err(),
        JobRefused::Terminal(JobState::Completed)
    );
    assert_eq!(
        apply(None, &JobStep::Cancel, "t").unwrap_err(),
        JobRefused::Missing
    );
    // Once the output is going into place, a cancel is refused and the job completes.
    let (finalizing, _) = apply(Some(&rec), &JobStep::Finalize, "t2").expect("finalize");
    assert_eq!(
        apply(Some(&finalizing), &JobStep::Cancel, "t3").unwrap_err(),
        JobRefused::State(JobState::Finalizing)
    );
    assert!(apply(Some(&finalizing), &JobStep::Complete { output: &out }, "t3").is_ok());
}

#[test]
fn only_a_failed_or_cancelled_job_is_retried_and_only_once() {
    let mut rec = splitting();
    let again = JobId::new("j-r1").unwrap();
    assert_eq!(
        super::retry(Some(&rec), &again, None, "t").unwrap_err(),
        super::RetryRefused::NotEnded(JobState::Splitting)
    );
    assert_eq!(
        super::retry(None, &again, None, "t").unwrap_err(),
        super::RetryRefused::Missing
    );
    for ended in [JobState::Failed, JobState::Cancelled] {
        rec.state = ended;
        let retried = super::retry(Some(&rec), &again, None, "t1").expect("retry");
        assert_eq!(retried.retried_as.as_ref(), Some(&again));
        assert_eq!(retried.state, ended);
        let other = JobId::new("j-r2").unwrap();
        assert_eq!(
            super::retry(Some(&retried), &other, None, "t2").unwrap_err(),
            super::RetryRefused::Retried(again.clone())
        );
        // Only the retry named as stale is replaced.
        assert_eq!(
            super::retry(Some(&retried), &other, Some(&other), "t2").unwrap_err(),
            super::RetryRefused::Retried(again.clone())
        );
        let replaced = super::retry(Some(&retried), &other, Some(&again), "t3").expect("replace");
        assert_eq!(replaced.retried_as.as_ref(), Some(&other));
    }
    rec.state = JobState::Completed;
    assert!(matches!(
        super::retry(Some(&rec), &again, None, "t").unwrap_err(),
        super::RetryRefused::NotEnded(JobState::Completed)
    ));
}
