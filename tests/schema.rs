//! The published JSON Schemas and the code agree: whatever the job request schema
//! (`schemas/job-request.v1.json`) or the status request schema
//! (`schemas/job-status-request.v1.json`) accepts, the parser accepts, and the other way round;
//! requests ffleet itself builds are valid; and every status answer the scheduler can give is
//! valid against `schemas/job-status.v1.json`.

use ffleet::cli::{JobArgs, SubmitArgs, build_request};
use ffleet_runtime::JobId;
use ffleet_runtime::Unit;
use ffleet_runtime::messages::events::Failed;
use ffleet_runtime::messages::records::OutputInfo;
use ffleet_runtime::messages::{
    CURRENT, JobRecord, JobRequest, JobState, JobStatus, StatusRequest, UnitSet,
};
use ffleet_runtime::reason::{Failure, Reason};
use serde_json::{Value, json};

fn validator(name: &str) -> jsonschema::Validator {
    let path = format!("{}/schemas/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn schema() -> jsonschema::Validator {
    validator("job-request.v1.json")
}

fn base() -> Value {
    json!({"version": 1, "job_id": "j-1", "input": "file:///media/in.mp4", "output": "/media/out.mkv"})
}

#[test]
fn schema_and_parser_agree() {
    let v = schema();
    let mut cases: Vec<(Value, bool)> = vec![(base(), true)];
    let full = json!({"version": 1, "job_id": "j_2", "input": "/a.mp4", "output": "/b.mp4",
        "profile": "h264", "overrides": {"quality": 20}, "segment_seconds": 5.5, "priority": -3,
        "prefer": "gpu", "require": true});
    cases.push((full, true));
    let ce = json!({"specversion": "1.0", "id": "ce-7", "source": "/cms", "type": "io.ffleet.job.submit",
        "datacontenttype": "application/json",
        "data": {"version": 1, "input": "/a.mp4", "output": "/b.mp4"}});
    cases.push((ce, true));
    for (field, value) in [
        ("version", json!(2)),
        ("job_id", json!("a.b")),
        ("job_id", json!("")),
        ("segment_seconds", json!(0.5)),
        ("priority", json!(1000)),
        ("ffmpeg_args", json!(["-i", "x"])),
        ("overrides", json!({"args": "-vf movie=x"})),
        ("input", json!("")),
        ("prefer", json!("tpu")),
        ("require", json!("yes")),
        // A requirement needs a kind: "any" (also the default) cannot be required.
        ("require", json!(true)),
        ("retry_of", json!("a.b")),
    ] {
        let mut c = base();
        c[field] = value;
        cases.push((c, false));
    }
    let mut missing = base();
    missing.as_object_mut().unwrap().remove("output");
    cases.push((missing, false));
    let mut any_required = base();
    any_required["prefer"] = json!("any");
    any_required["require"] = json!(true);
    cases.push((any_required, false));
    // A retried job's request, as the fleet resubmits it.
    let mut retried = base();
    retried["retry_of"] = json!("j-1");
    cases.push((retried, true));
    let mut cpu_preferred = base();
    cpu_preferred["prefer"] = json!("cpu");
    cases.push((cpu_preferred, true));
    let wrong_type =
        json!({"specversion": "1.0", "id": "x", "source": "/s", "type": "other", "data": base()});
    cases.push((wrong_type, false));

    for (case, ok) in cases {
        let by_schema = v.is_valid(&case);
        let by_parser = JobRequest::parse(&serde_json::to_vec(&case).unwrap(), None).is_ok();
        assert_eq!(by_schema, ok, "schema on {case}");
        assert_eq!(by_parser, ok, "parser on {case}");
    }
}

#[test]
fn requests_built_by_the_cli_are_valid() {
    let req = build_request(&SubmitArgs {
        job: JobArgs {
            input: "/media/a b.mp4".into(),
            output: "/media/out.mp4".into(),
            profile: Some("h264".into()),
            quality: Some(22),
            segment_seconds: Some(4.0),
        },
        priority: 5,
        prefer: ffleet_runtime::messages::Preference::Gpu,
        require: true,
        job_id: None,
        wait: false,
        upload: false,
        privileged: false,
    })
    .unwrap();
    let value = serde_json::to_value(&req).unwrap();
    assert!(schema().is_valid(&value), "{value}");
    let ce = serde_json::to_value(req.to_cloudevent("/test")).unwrap();
    assert!(schema().is_valid(&ce), "{ce}");
}

#[test]
fn status_request_schema_and_parser_agree() {
    let v = validator("job-status-request.v1.json");
    let base = || json!({"version": 1, "job_id": "cms-4711"});
    let mut cases: Vec<(Value, bool)> = vec![(base(), true)];
    for (field, value) in [
        ("version", json!(2)),
        ("version", json!(0)),
        ("version", json!("1")),
        ("job_id", json!("a.b")),
        ("job_id", json!("")),
        ("job_id", json!("x".repeat(65))),
        ("job_id", json!(7)),
        ("extra", json!(true)),
    ] {
        let mut c = base();
        c[field] = value;
        cases.push((c, false));
    }
    for field in ["version", "job_id"] {
        let mut c = base();
        c.as_object_mut().unwrap().remove(field);
        cases.push((c, false));
    }
    cases.push((json!(["cms-4711"]), false));
    cases.push((json!("cms-4711"), false));
    for (case, ok) in cases {
        let by_parser = StatusRequest::parse(&serde_json::to_vec(&case).unwrap()).is_ok();
        assert_eq!(v.is_valid(&case), ok, "schema on {case}");
        assert_eq!(by_parser, ok, "parser on {case}");
    }
    let built = StatusRequest::new(JobId::new("j_1").unwrap());
    assert!(v.is_valid(&serde_json::to_value(built).unwrap()));
}

/// A record at `state`, with a plan of three segments and the tracks unit, two units collected.
fn record(state: JobState) -> JobRecord {
    let req: JobRequest = serde_json::from_value(json!({
        "version": 1, "job_id": "cms-4711", "input": "/in/a.mp4", "output": "/out/a.mp4"
    }))
    .unwrap();
    let mut rec = JobRecord::new(req, "h264".into());
    rec.state = state;
    rec.plan = Some(
        serde_json::from_value(json!({"segments": 3, "audio": true, "container": "mp4",
            "source_path": "/in/a.mp4", "output_path": "/out/a.mp4"}))
        .unwrap(),
    );
    rec.source = Some(
        serde_json::from_value(json!({"format": "mov,mp4", "size_bytes": 1000,
            "format_start_secs": 0.0, "video": {"codec": "h264", "width": 160, "height": 120,
            "frame_rate": {"num": 25, "den": 1}, "time_base": {"num": 1, "den": 12800},
            "frames": 75, "start_pts": 0, "duration_ticks": 38400}}))
        .unwrap(),
    );
    let mut collected = UnitSet::default();
    collected.insert(Unit::Video(0));
    collected.insert(Unit::Audio);
    rec.collected = collected;
    rec.frames_collected = 25;
    rec
}

#[test]
fn every_status_answer_matches_its_schema() {
    let v = validator("job-status.v1.json");
    let job = JobId::new("cms-4711").unwrap();
    let mut answers = vec![JobStatus::unknown(job.clone())];
    for state in [JobState::Splitting, JobState::Encoding, JobState::Merging] {
        answers.push(JobStatus::of_record(&record(state)));
    }
    let mut done = record(JobState::Completed);
    done.output = Some(OutputInfo {
        uri: "file:///out/a.mp4".into(),
        frames: 75,
        duration_secs: 3.0,
        bytes: 123_456,
        wall_secs: 2.5,
        decode_errors: 2,
        warnings: vec!["subtitle stream 2 (hdmv_pgs_subtitle) cannot go into mp4".into()],
        media_bytes: 9_000,
        digest: Some("SHA-256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=".into()),
    });
    answers.push(JobStatus::of_record(&done));
    let mut failed = record(JobState::Failed);
    failed.failure = Some(Failure::new(Reason::InputMissing, "no file /in/a.mp4"));
    answers.push(JobStatus::of_record(&failed));
    // A retry's answer: the retried job naming its retry.
    failed.retried_as = Some(JobId::new("cms-4711-r1").unwrap());
    answers.push(JobStatus::of_record(&failed));
    let refusal = Failed {
        version: CURRENT,
        job_id: Some(job.clone()),
        reason: Reason::PriorityNotAllowed,
        message: "priority 50 is above the submitter's 0".into(),
    };
    answers.push(JobStatus::refused(job, refusal, 42));
    for during in [JobState::Splitting, JobState::Encoding, JobState::Merging] {
        let mut cancelled = record(JobState::Cancelled);
        cancelled.cancelled_during = Some(during);
        answers.push(JobStatus::of_record(&cancelled));
    }
    // A tenant's answers: its own ids, beside its name.
    let acme = ffleet_runtime::Tenant::new("acme").unwrap();
    let tenants: Vec<JobStatus> = answers
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.job_id = JobId::scoped(&acme, &a.job_id);
            if let Some(c) = &mut a.completed {
                c.job_id = JobId::scoped(&acme, &c.job_id);
            }
            if let Some(c) = &mut a.cancelled {
                c.job_id = JobId::scoped(&acme, &c.job_id);
            }
            a.retried_as = a.retried_as.map(|r| JobId::scoped(&acme, &r));
            a.for_tenant()
        })
        .collect();
    assert!(tenants.iter().all(|t| t.tenant.as_ref() == Some(&acme)));
    for a in answers.iter().chain(&tenants) {
        let value = serde_json::to_value(a).unwrap();
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
    // Each outcome only with its state, and a refusal only with its request.
    let completed = serde_json::to_value(&answers[4]).unwrap();
    let failed = serde_json::to_value(&answers[5]).unwrap();
    assert!(completed["completed"].is_object() && failed["failed"].is_object());
    for broken in [
        json!({"version": 1, "job_id": "j", "state": "paused"}),
        json!({"version": 1, "job_id": "j", "state": "completed"}),
        json!({"version": 1, "job_id": "j", "state": "failed"}),
        json!({"version": 1, "job_id": "j", "state": "cancelled"}),
        json!({"version": 1, "job_id": "j", "state": "refused", "failed": failed["failed"]}),
        json!({"version": 1, "job_id": "j", "state": "encoding", "completed": completed["completed"]}),
        json!({"version": 1, "job_id": "j", "state": "unknown", "units_done": -1}),
    ] {
        assert!(!v.is_valid(&broken), "{broken}");
    }
}
