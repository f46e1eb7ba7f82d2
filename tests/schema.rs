//! The published JSON Schema (`schemas/job-request.v1.json`) and the parser agree: whatever one
//! accepts the other accepts, and requests ffleet itself builds are valid.

use ffleet::cli::{JobArgs, SubmitArgs, build_request};
use ffleet_shared::messages::JobRequest;
use serde_json::{Value, json};

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/job-request.v1.json"
    ))
    .expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
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
        prefer: ffleet_shared::messages::Preference::Gpu,
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
