//! Property tests of the request parser, the first code every submitted byte reaches: arbitrary
//! bytes and mutated valid requests (plain and CloudEvent) never panic, and every input is
//! either accepted (and then round-trips and holds to every bound) or refused with a reason and
//! a message within the cap.

use crate::messages::JobRequest;
use crate::messages::job::{MAX_PROFILE_LEN, MAX_URI_BYTES};
use crate::reason::MAX_MESSAGE_BYTES;
use proptest::prelude::*;
use serde_json::{Value, json};

fn valid() -> Value {
    json!({"version": 1, "job_id": "job-1", "input": "file:///media/in.mp4",
        "output": "/media/out.mkv", "profile": "h264", "overrides": {"quality": 22},
        "segment_seconds": 4.0, "priority": 0, "prefer": "cpu", "require": true})
}

const FIELDS: &[&str] = &[
    "version",
    "job_id",
    "input",
    "output",
    "profile",
    "overrides",
    "segment_seconds",
    "priority",
    "prefer",
    "require",
    "ffmpeg_args",
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,80}".prop_map(Value::String),
        // Long strings: oversize fields, echoed in messages.
        (0usize..20_000).prop_map(|n| Value::String("A/..%2e\\\u{0}é".repeat(n / 8))),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, Value),
    Remove(usize),
    Wrap {
        ce_id: Option<String>,
        specversion: Value,
        drop_data: bool,
    },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..FIELDS.len(), arb_json()).prop_map(|(i, v)| Mutation::Set(i, v)),
        (0..FIELDS.len()).prop_map(Mutation::Remove),
        (
            proptest::option::of("[a-z0-9.-]{0,70}"),
            prop_oneof![Just(json!("1.0")), arb_json()],
            any::<bool>()
        )
            .prop_map(|(ce_id, specversion, drop_data)| Mutation::Wrap {
                ce_id,
                specversion,
                drop_data
            }),
    ]
}

fn apply(mut v: Value, muts: &[Mutation]) -> Value {
    for m in muts {
        match m {
            Mutation::Set(i, x) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert(FIELDS[*i].into(), x.clone());
                } else {
                    v = x.clone();
                }
            }
            Mutation::Remove(i) => {
                if let Some(o) = v.as_object_mut() {
                    o.remove(FIELDS[*i]);
                }
            }
            Mutation::Wrap {
                ce_id,
                specversion,
                drop_data,
            } => {
                let mut ce = json!({"specversion": specversion, "source": "/prop",
                    "type": "io.ffleet.job.submit", "id": ce_id.clone().unwrap_or_else(|| "job-1".into())});
                if !drop_data {
                    ce["data"] = v;
                }
                v = ce;
            }
        }
    }
    v
}

/// The invariant of every outcome.
fn check(payload: &[u8], msg_id: Option<&str>) -> Result<(), TestCaseError> {
    match JobRequest::parse(payload, msg_id) {
        Ok(req) => {
            prop_assert!(!req.input.is_empty() && req.input.len() <= MAX_URI_BYTES);
            prop_assert!(!req.output.is_empty() && req.output.len() <= MAX_URI_BYTES);
            if let Some(p) = &req.profile {
                prop_assert!(!p.is_empty() && p.len() <= MAX_PROFILE_LEN);
            }
            let again = JobRequest::parse(&serde_json::to_vec(&req).unwrap(), None);
            prop_assert_eq!(again.as_ref().ok(), Some(&req), "{:?}", again);
        }
        Err(e) => {
            prop_assert!(!e.failure.message.is_empty());
            prop_assert!(
                e.failure.message.len() <= MAX_MESSAGE_BYTES,
                "{} bytes",
                e.failure.message.len()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_accepted_or_refused_with_a_reason(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
        msg_id in proptest::option::of(".{0,80}"),
    ) {
        check(&bytes, msg_id.as_deref())?;
    }

    #[test]
    fn arbitrary_json_is_accepted_or_refused_with_a_reason(v in arb_json()) {
        check(&serde_json::to_vec(&v).unwrap(), None)?;
    }

    #[test]
    fn mutated_valid_requests_are_accepted_or_refused_with_a_reason(
        muts in prop::collection::vec(arb_mutation(), 0..4),
        msg_id in proptest::option::of("[a-z0-9._-]{0,70}"),
    ) {
        let v = apply(valid(), &muts);
        check(&serde_json::to_vec(&v).unwrap(), msg_id.as_deref())?;
    }
}

#[test]
fn deep_nesting_and_huge_numbers_are_refused_not_crashed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = JobRequest::parse(deep.as_bytes(), Some("deep")).unwrap_err();
    assert_eq!(e.job_id.unwrap().as_str(), "deep");
    let deep_obj = format!(
        "{{\"version\":1,\"job_id\":\"d\",\"input\":\"/a\",\"output\":\"/b.mp4\",\"overrides\":{}{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    assert!(JobRequest::parse(deep_obj.as_bytes(), None).is_err());
    let huge = br#"{"version":1e999999,"job_id":"h","input":"/a","output":"/b.mp4"}"#;
    assert!(JobRequest::parse(huge, None).is_err());
}
