//! The hostile-input corpus (issue 11): traversal in every field and encoding, symlinks, device
//! files and FIFOs, URI schemes, playlists and concat files pointing outside, limits, packet
//! floods, JSON bombs, oversize fields and headers, CloudEvent edge cases, duplicate and
//! conflicting ids, priorities above the cap. Each case ends in a `failed` event with a reason
//! (named after its job, or unnamed when the request names no job it may speak for) or in the
//! server refusing to store it; the services stay up and a good job right after completes.
//!
//! One fleet serves the whole table (CI has two cores); cases run one after the other, so the
//! newest unnamed event is the answer to the case just sent.

mod common;

use anyhow::{Context, Result, bail};
use async_nats::HeaderMap;
use common::{FleetOptions, JobClient, TestFleet, media};
use ffleet_runtime::media::probe::{self, Keep, ProbeError};
use ffleet_runtime::messages::{CloudEvent, JobEvent};
use ffleet_runtime::reason::{MAX_MESSAGE_BYTES, Reason};
use ffleet_runtime::subjects;
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);

/// What a case must end in.
#[derive(Debug, Clone)]
enum Expect {
    /// A `failed` event for this job, with one of these reasons.
    Failed(String, &'static [Reason]),
    /// A `failed` event on the unnamed subject, with one of these reasons.
    Unnamed(&'static [Reason]),
    /// The server refuses to store the message at all (too large for the jobs stream).
    NotStored,
}

struct Case {
    name: String,
    payload: Vec<u8>,
    msg_id: Option<String>,
    /// One more header (name, value), for oversize headers.
    header: Option<(String, String)>,
    expect: Expect,
}

use Reason::*;

const NOT_ALLOWED: &[Reason] = &[InputNotAllowed, InputMissing];

fn case(name: &str, payload: Vec<u8>, msg_id: Option<&str>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        payload,
        msg_id: msg_id.map(str::to_owned),
        header: None,
        expect,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

/// Hostile files inside (and outside) the roots, made once.
struct Files {
    good: String,
    outside_video: String,
    outside_dir: String,
}

fn make_files(fleet: &TestFleet, outside: &Path) -> Result<Files> {
    let m = fleet.media.path();
    let good = media::tiny_source(m, "good.mp4")?;
    let secret = media::tiny_source(outside, "secret.mp4")?;
    let link = |name: &str, to: &Path| std::os::unix::fs::symlink(to, m.join(name));
    link("passwd.mp4", Path::new("/etc/passwd"))?;
    link("zero.mp4", Path::new("/dev/zero"))?;
    link("escape", outside)?;
    link("secret.mp4", &secret)?;
    let fifo = m.join("fifo.mp4");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");
    link("to-fifo.mp4", &fifo)?;
    std::fs::create_dir(m.join("dir.mp4"))?;
    std::os::unix::fs::symlink(outside, fleet.out.path().join("out-link"))?;
    let hls = format!(
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{}\n#EXTINF:2.0,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n",
        secret.display()
    );
    std::fs::write(m.join("list.m3u8"), &hls)?;
    std::fs::write(m.join("hls.mp4"), &hls)?;
    let concat = format!(
        "ffconcat version 1.0\nfile '{}'\nfile '/etc/passwd'\n",
        secret.display()
    );
    std::fs::write(m.join("list.ffconcat"), &concat)?;
    std::fs::write(m.join("concat.mp4"), &concat)?;
    std::fs::write(
        m.join("rtp.mp4"),
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 9 RTP/AVP 96\n",
    )?;
    std::fs::write(
        m.join("random.mp4"),
        (0..65536u32)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect::<Vec<_>>(),
    )?;
    // Beyond the fleet's limits (320x240, 20 s, 60 fps, 300 packets): small files all.
    let clip = |name: &str, size: &str, rate: &str, secs: &str| -> Result<()> {
        media::ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate={rate}"),
            "-t",
            secs,
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            m.join(name).to_str().expect("utf-8"),
        ])
    };
    clip("wide.mp4", "400x300", "25", "1")?;
    clip("long.mp4", "32x32", "25", "25")?;
    clip("fast.mp4", "32x32", "100", "1")?;
    // A packet flood within the duration limit: 15 s of 16x16 frames, 375 packets.
    clip("flood.mp4", "16x16", "25", "15")?;
    // A 1 s clip whose movie header claims 24 days.
    clip("claims-long.mp4", "32x32", "25", "1")?;
    let mut data = std::fs::read(m.join("claims-long.mp4"))?;
    let mvhd = data
        .windows(4)
        .position(|w| w == b"mvhd")
        .context("mvhd box")?;
    // version, flags, creation and modification times, time scale, then the duration.
    data[mvhd + 20..mvhd + 24].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
    std::fs::write(m.join("claims-long.mp4"), data)?;
    Ok(Files {
        good: good.display().to_string(),
        outside_video: secret.display().to_string(),
        outside_dir: outside.display().to_string(),
    })
}

fn corpus(fleet: &TestFleet, f: &Files) -> Vec<Case> {
    let m = fleet.media.path().display().to_string();
    let o = fleet.out.path().display().to_string();
    let n = std::cell::Cell::new(0);
    let id = || {
        n.set(n.get() + 1);
        format!("h{:02}", n.get())
    };
    let mut cases = Vec::new();
    // A good request for job `j` with `edit` applied: refused under `j` with one of `reasons`.
    let named = |cases: &mut Vec<Case>,
                 name: &str,
                 edit: &dyn Fn(&mut Value),
                 reasons: &'static [Reason]| {
        let j = id();
        let mut v = json!({"version": 1, "job_id": j, "input": format!("file://{}", f.good),
                "output": format!("file://{o}/{j}.mp4")});
        edit(&mut v);
        cases.push(case(
            name,
            bytes(&v),
            Some(&j),
            Expect::Failed(j.clone(), reasons),
        ));
    };
    let input = |uri: String| move |v: &mut Value| v["input"] = uri.clone().into();
    let output = |uri: String| move |v: &mut Value| v["output"] = uri.clone().into();

    // Traversal in every field and encoding.
    named(
        &mut cases,
        "input ..",
        &input(format!("file://{m}/../../../etc/passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input %2e%2e",
        &input(format!("file://{m}/%2e%2e/%2e%2e/etc/passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input %252e double-encoded",
        &input(format!("file://{m}/%252e%252e/etc/passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input plain path ..",
        &input(format!("{m}/../../etc/passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input backslashes",
        &input(format!("{m}/..\\..\\etc\\passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input unicode two-dot leader",
        &input(format!("{m}/\u{2025}/etc/passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input fullwidth dots",
        &input(format!("{m}/\u{ff0e}\u{ff0e}/etc/passwd")),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "input NUL",
        &input(format!("{}\u{0}.txt", f.good)),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "input %00",
        &input(format!("file://{}%00.txt", f.good)),
        NOT_ALLOWED,
    );
    named(
        &mut cases,
        "output ..",
        &output(format!("file://{o}/../../tmp/x.mp4")),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "output %2e%2e",
        &output(format!("file://{o}/%2e%2e/x.mp4")),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "output NUL",
        &output(format!("{o}/x\u{0}.mp4")),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "output onto the input",
        &output(format!("file://{}", f.good)),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "profile ..",
        &|v| v["profile"] = "../h264".into(),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "profile with newline",
        &|v| v["profile"] = "h264\nX-Admin: 1".into(),
        &[InvalidRequest],
    );
    cases.push(case(
        "job_id ..",
        bytes(&json!({"version": 1, "job_id": "../x", "input": f.good, "output": format!("{o}/x.mp4")})),
        None,
        Expect::Unnamed(&[InvalidRequest]),
    ));
    cases.push(case(
        "msg id ..",
        b"{broken".to_vec(),
        Some("../../x"),
        Expect::Unnamed(&[MalformedRequest]),
    ));

    // Symlinks out of the roots, device files, FIFOs, directories.
    named(
        &mut cases,
        "symlink to /etc/passwd",
        &input(format!("{m}/passwd.mp4")),
        &[InputNotAllowed],
    );
    named(
        &mut cases,
        "symlink to /dev/zero",
        &input(format!("{m}/zero.mp4")),
        &[InputNotAllowed],
    );
    named(
        &mut cases,
        "symlink to a video outside",
        &input(format!("{m}/secret.mp4")),
        &[InputNotAllowed],
    );
    named(
        &mut cases,
        "through a symlinked dir",
        &input(format!("{m}/escape/secret.mp4")),
        &[InputNotAllowed],
    );
    named(
        &mut cases,
        "FIFO",
        &input(format!("{m}/fifo.mp4")),
        &[InputMissing],
    );
    named(
        &mut cases,
        "symlink to a FIFO",
        &input(format!("{m}/to-fifo.mp4")),
        &[InputMissing],
    );
    named(
        &mut cases,
        "a directory",
        &input(format!("{m}/dir.mp4")),
        &[InputMissing],
    );
    named(
        &mut cases,
        "the device itself",
        &input("/dev/zero".into()),
        &[InputNotAllowed],
    );
    named(
        &mut cases,
        "output through a symlinked dir",
        &output(format!("{o}/out-link/x.mp4")),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "output outside",
        &output(format!("{}/x.mp4", f.outside_dir)),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "input outside",
        &input(f.outside_video.clone()),
        &[InputNotAllowed],
    );

    // URI schemes.
    for uri in [
        "http://127.0.0.1:9/x.mp4".to_string(),
        "https://example.com/x.mp4".into(),
        format!("concat:{}|{}", f.good, f.outside_video),
        format!("subfile:,,start,0,end,0,,:{}", f.good),
        "pipe:0".into(),
        "data:video/mp4;base64,AAAAIGZ0eXBpc29t".into(),
        format!("file://evil.example{}", f.good),
        "file:good.mp4".into(),
        "good.mp4".into(),
        "-".into(),
        "ftp://127.0.0.1/x.mp4".into(),
    ] {
        named(
            &mut cases,
            &format!("scheme {}", &uri[..uri.len().min(24)]),
            &input(uri),
            NOT_ALLOWED,
        );
    }
    named(
        &mut cases,
        "output http",
        &output("http://127.0.0.1:9/x.mp4".into()),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "output pipe:1",
        &output("pipe:1".into()),
        &[OutputNotAllowed],
    );
    named(
        &mut cases,
        "output .m3u8",
        &output(format!("{o}/x.m3u8")),
        &[OutputNotAllowed],
    );

    // Playlists, concat files and other indirections inside the root pointing outside.
    for name in [
        "list.m3u8",
        "hls.mp4",
        "list.ffconcat",
        "concat.mp4",
        "rtp.mp4",
        "random.mp4",
    ] {
        named(
            &mut cases,
            &format!("indirection {name}"),
            &input(format!("{m}/{name}")),
            &[InputUnreadable],
        );
    }

    // Huge dimensions, durations and frame rates; a packet flood.
    for name in [
        "wide.mp4",
        "long.mp4",
        "fast.mp4",
        "flood.mp4",
        "claims-long.mp4",
    ] {
        named(
            &mut cases,
            &format!("limits {name}"),
            &input(format!("{m}/{name}")),
            &[LimitsExceeded],
        );
    }

    // JSON size, depth and type bombs.
    let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    cases.push(case(
        "depth bomb",
        deep.into_bytes(),
        None,
        Expect::Unnamed(&[MalformedRequest]),
    ));
    named(
        &mut cases,
        "deep overrides",
        &|v| {
            let mut x = json!(1);
            for _ in 0..100 {
                x = json!({"q": x});
            }
            v["overrides"] = x;
        },
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "60 KB unknown field",
        &|v| v["pad"] = "x".repeat(60_000).into(),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "input is an object",
        &|v| v["input"] = json!({"path": "/etc/passwd"}),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "version is a string",
        &|v| v["version"] = "1".into(),
        &[UnsupportedVersion],
    );
    named(
        &mut cases,
        "priority 2^40",
        &|v| v["priority"] = (1i64 << 40).into(),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "segment_seconds 1e308",
        &|v| v["segment_seconds"] = 1e308.into(),
        &[OverrideOutOfRange],
    );
    named(
        &mut cases,
        "quality 2^31",
        &|v| v["overrides"] = json!({"quality": 1u64 << 31}),
        &[InvalidRequest],
    );
    cases.push(case(
        "array bomb",
        bytes(&json!(vec![0; 10_000])),
        None,
        Expect::Unnamed(&[MalformedRequest]),
    ));
    cases.push(case(
        "number bomb",
        br#"{"version":1e999999}"#.to_vec(),
        None,
        Expect::Unnamed(&[MalformedRequest]),
    ));
    cases.push(case(
        "invalid UTF-8",
        b"{\"version\":1,\"job_id\":\"\xff\xfe\"}".to_vec(),
        None,
        Expect::Unnamed(&[MalformedRequest]),
    ));
    cases.push(case(
        "200 KB request",
        bytes(&json!({"version": 1, "pad": "x".repeat(200_000)})),
        None,
        Expect::NotStored,
    ));

    // Oversize fields and headers.
    named(
        &mut cases,
        "10 KB profile",
        &|v| v["profile"] = "p".repeat(10_000).into(),
        &[InvalidRequest],
    );
    named(
        &mut cases,
        "5000-byte input",
        &|v| v["input"] = format!("/{}", "a".repeat(5000)).into(),
        &[InvalidRequest],
    );
    cases.push(case(
        "65-char job id",
        bytes(&json!({"version": 1, "job_id": "j".repeat(65), "input": f.good, "output": format!("{o}/x.mp4")})),
        None,
        Expect::Unnamed(&[InvalidRequest]),
    ));
    let long_id = "m".repeat(10_000);
    cases.push(case(
        "10 KB message id",
        b"{broken".to_vec(),
        Some(&long_id),
        Expect::Unnamed(&[MalformedRequest]),
    ));
    let mut big_header = case(
        "70 KB header",
        bytes(&json!({"version": 1})),
        None,
        Expect::NotStored,
    );
    big_header.header = Some(("X-Pad".into(), "h".repeat(70_000)));
    cases.push(big_header);

    // CloudEvent edge cases.
    let ce = |j: &str| {
        json!({"specversion": "1.0", "id": j, "source": "/hostile", "type": "io.ffleet.job.submit",
            "data": {"version": 1, "input": f.good, "output": format!("{o}/{j}.mp4")}})
    };
    let ce_case = |cases: &mut Vec<Case>,
                   name: &str,
                   edit: &dyn Fn(&mut Value),
                   reasons: &'static [Reason]| {
        let j = id();
        let mut v = ce(&j);
        edit(&mut v);
        cases.push(case(
            name,
            bytes(&v),
            Some(&j),
            Expect::Failed(j.clone(), reasons),
        ));
    };
    ce_case(
        &mut cases,
        "specversion 0.3",
        &|v| v["specversion"] = "0.3".into(),
        &[UnsupportedVersion],
    );
    ce_case(
        &mut cases,
        "10 KB specversion",
        &|v| v["specversion"] = "1".repeat(10_000).into(),
        &[InvalidRequest],
    );
    ce_case(
        &mut cases,
        "specversion a number",
        &|v| v["specversion"] = 1.0.into(),
        &[InvalidRequest],
    );
    ce_case(
        &mut cases,
        "missing data",
        &|v| drop(v.as_object_mut().unwrap().remove("data")),
        &[MalformedRequest],
    );
    ce_case(
        &mut cases,
        "data_base64",
        &|v| {
            v.as_object_mut().unwrap().remove("data");
            v["data_base64"] = "eyJ2ZXJzaW9uIjoxfQ==".into();
        },
        &[InvalidRequest],
    );
    ce_case(
        &mut cases,
        "data a string",
        &|v| v["data"] = "{\"version\":1}".into(),
        &[MalformedRequest],
    );
    ce_case(
        &mut cases,
        "wrong type",
        &|v| v["type"] = "io.ffleet.job.delete".into(),
        &[InvalidRequest],
    );
    ce_case(
        &mut cases,
        "datacontenttype text/plain",
        &|v| v["datacontenttype"] = "text/plain".into(),
        &[InvalidRequest],
    );
    ce_case(
        &mut cases,
        "2 KB source",
        &|v| v["source"] = "s".repeat(2048).into(),
        &[InvalidRequest],
    );
    ce_case(
        &mut cases,
        "id and data.job_id differ",
        &|v| v["data"]["job_id"] = "someone-else".into(),
        &[InvalidRequest],
    );
    let mut bad_id = ce("x");
    bad_id["id"] = "../x".into();
    cases.push(case(
        "CloudEvent id ..",
        bytes(&bad_id),
        None,
        Expect::Unnamed(&[InvalidRequest]),
    ));

    // Duplicate and conflicting ids: `good-0` exists (completed before the corpus runs).
    cases.push(case(
        "duplicate of a completed job",
        bytes(&json!({"version": 1, "job_id": "good-0", "input": f.good, "output": format!("{o}/dup.mp4")})),
        Some("good-0-again"),
        Expect::Unnamed(&[DuplicateJob]),
    ));
    cases.push(case(
        "malformed, naming a completed job",
        bytes(&json!({"version": 1, "job_id": "good-0", "input": "http://x/y.mp4"})),
        Some("good-0-malformed"),
        Expect::Unnamed(&[InvalidRequest]),
    ));

    // Priority above the cap (0) on the ordinary subject.
    named(
        &mut cases,
        "priority 1",
        &|v| v["priority"] = 1.into(),
        &[PriorityNotAllowed],
    );
    named(
        &mut cases,
        "priority 100",
        &|v| v["priority"] = 100.into(),
        &[PriorityNotAllowed],
    );
    cases
}

/// Publishes once (no retry): `Err` when the server refuses to store the message.
async fn publish_once(
    fleet: &TestFleet,
    subject: &str,
    c: &Case,
) -> Result<std::result::Result<(), String>> {
    let mut headers = HeaderMap::new();
    // No message id at all when the case has none: a generated one would name the job.
    if let Some(id) = &c.msg_id {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    }
    if let Some((k, v)) = &c.header {
        headers.insert(k.as_str(), v.as_str());
    }
    let sent = fleet
        .ctx()
        .js
        .publish_with_headers(subject.to_owned(), headers, c.payload.clone().into())
        .await;
    Ok(match sent {
        Err(e) => Err(e.to_string()),
        Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
    })
}

async fn unnamed_failures(fleet: &TestFleet) -> Result<Vec<ffleet_runtime::messages::Failed>> {
    Ok(fleet
        .events(None)
        .await?
        .into_iter()
        .filter_map(|e| match e {
            JobEvent::Failed(f) => Some(f),
            _ => None,
        })
        .collect())
}

/// Runs one case; returns the reason and message it ended with.
async fn run_case(fleet: &TestFleet, c: &Case) -> Result<(String, String)> {
    let before = unnamed_failures(fleet).await?.len();
    let stored = publish_once(fleet, subjects::JOBS_SUBMIT, c).await?;
    let (reason, message, reasons): (Reason, String, &[Reason]) = match (&c.expect, stored) {
        (Expect::NotStored, Err(e)) => return Ok(("not stored".into(), e)),
        (Expect::NotStored, Ok(())) => bail!("the server stored it"),
        (_, Err(e)) => bail!("publish failed: {e}"),
        (Expect::Failed(job, reasons), Ok(())) => {
            let f = fleet.wait_failed(job, TIMEOUT).await?;
            assert_eq!(fleet.terminal_count(job).await?, 1, "one terminal event");
            (f.reason, f.message, reasons)
        }
        (Expect::Unnamed(reasons), Ok(())) => {
            let deadline = Instant::now() + TIMEOUT;
            let f = loop {
                let all = unnamed_failures(fleet).await?;
                if all.len() > before {
                    break all.last().cloned().context("newest")?;
                }
                anyhow::ensure!(Instant::now() < deadline, "no unnamed failed event");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            (f.reason, f.message, reasons)
        }
    };
    anyhow::ensure!(
        reasons.contains(&reason),
        "ended in {reason} ({message}), expected one of {reasons:?}"
    );
    anyhow::ensure!(!message.is_empty() && message.len() <= MAX_MESSAGE_BYTES);
    Ok((reason.to_string(), message))
}

async fn good_job(fleet: &TestFleet, f: &Files, id: &str) -> Result<()> {
    let req = fleet.request(id, Path::new(&f.good), &format!("{id}.mp4"));
    fleet.submit(&req).await?;
    fleet.wait_completed(id, TIMEOUT).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_corpus_is_answered_and_the_fleet_keeps_working() -> Result<()> {
    let mut fleet = TestFleet::spawn_with(FleetOptions {
        encoders: 1,
        tweak: Box::new(|c| {
            c.limits.max_width = 320;
            c.limits.max_height = 240;
            c.limits.max_duration_secs = 20.0;
            c.limits.max_frame_rate = 60.0;
            c.limits.max_packets = 300;
        }),
        ..Default::default()
    })
    .await?;
    let outside = tempfile::tempdir()?;
    let files = make_files(&fleet, outside.path())?;
    good_job(&fleet, &files, "good-0").await?;

    every_stream_and_bucket_is_bounded(&fleet).await?;
    let cases = corpus(&fleet, &files);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    println!("| case | outcome | s | message |\n|---|---|---|---|");
    for c in &cases {
        let started = Instant::now();
        match run_case(&fleet, c).await {
            Ok((reason, message)) => println!(
                "| {} | {reason} | {:.2} | {} |",
                c.name,
                started.elapsed().as_secs_f64(),
                message
                    .chars()
                    .take(100)
                    .collect::<String>()
                    .replace('\n', " ")
            ),
            Err(e) => failures.push(format!("{}: {e:#}", c.name)),
        }
        fleet.assert_running()?;
    }
    assert!(
        failures.is_empty(),
        "cases not answered as expected:\n{}",
        failures.join("\n")
    );
    println!("{} hostile cases, each answered", cases.len());

    // Nothing outside the roots was written, the job that owns `good-0` kept its one terminal
    // event, and a good job right after completes.
    let outside_files: Vec<_> = std::fs::read_dir(outside.path())?.collect();
    assert_eq!(outside_files.len(), 1, "only the planted secret is outside");
    assert_eq!(fleet.terminal_count("good-0").await?, 1);
    assert!(matches!(
        fleet.wait_terminal("good-0", TIMEOUT).await?,
        JobEvent::Completed(_)
    ));
    good_job(&fleet, &files, "good-after").await?;
    fleet.assert_running()?;

    refusals_never_speak_for_a_running_job(&fleet).await?;
    privileged_subject_allows_a_high_priority(&fleet, &files).await?;
    fleet.assert_running()?;
    fleet.stop().await;
    Ok(())
}

/// Every stream and KV bucket has a message size, byte and message limit.
async fn every_stream_and_bucket_is_bounded(fleet: &TestFleet) -> Result<()> {
    let js = &fleet.ctx().js;
    let buckets = [
        subjects::BUCKET_JOBS,
        subjects::BUCKET_SEGMENTS,
        subjects::BUCKET_WORKERS,
        subjects::BUCKET_LEASES,
        subjects::BUCKET_TENANTS,
    ];
    let names = [
        subjects::STREAM_JOBS.to_string(),
        subjects::STREAM_TASKS.into(),
        subjects::STREAM_EVENTS.into(),
        subjects::STREAM_DEAD.into(),
    ]
    .into_iter()
    .chain(buckets.iter().map(|b| subjects::kv_stream(b)));
    for name in names {
        let mut stream = js.get_stream(&name).await?;
        let c = stream.info().await?.config.clone();
        assert!(
            c.max_message_size > 0 && c.max_bytes > 0 && c.max_messages > 0,
            "{name} is unbounded: {} / {} / {}",
            c.max_message_size,
            c.max_bytes,
            c.max_messages
        );
    }
    let jobs = js
        .get_stream(subjects::STREAM_JOBS)
        .await?
        .cached_info()
        .config
        .clone();
    assert_eq!(jobs.max_message_size, 64 * 1024);
    Ok(())
}

/// A malformed request, a duplicate and an over-cap priority all naming a running job: the job
/// still completes, and a `submit --wait` style watcher of its events sees `completed` first.
async fn refusals_never_speak_for_a_running_job(fleet: &TestFleet) -> Result<()> {
    let src = media::ntsc_source(fleet.media.path(), "running.mp4", 6, "160x120")?;
    let mut req = fleet.request("running", &src, "running.mp4");
    req.segment_seconds = Some(1.0);
    let mut watch = fleet
        .ctx()
        .client
        .subscribe(subjects::job_events(Some(&req.job_id)))
        .await?;
    fleet.ctx().client.flush().await?;
    fleet.submit(&req).await?;
    // The record exists once `accepted` is out.
    let deadline = Instant::now() + TIMEOUT;
    while !fleet
        .events(Some("running"))
        .await?
        .iter()
        .any(|e| matches!(e, JobEvent::Accepted(_)))
    {
        anyhow::ensure!(Instant::now() < deadline, "job never accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let good = serde_json::to_value(&req)?;
    let mut malformed = good.clone();
    malformed["input"] = "http://evil/x.mp4".into();
    malformed.as_object_mut().unwrap().remove("output");
    let mut priority = good.clone();
    priority["priority"] = 99.into();
    let before = unnamed_failures(fleet).await?.len();
    for (i, body) in [malformed, good, priority].iter().enumerate() {
        fleet
            .submit_raw(&bytes(body), Some(&format!("running-hostile-{i}")))
            .await?;
    }
    let deadline = Instant::now() + TIMEOUT;
    while unnamed_failures(fleet).await?.len() < before + 3 {
        anyhow::ensure!(Instant::now() < deadline, "refusals not answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What `ffleet submit --wait` does: the first terminal event on the job's subjects decides.
    let first_terminal = loop {
        let m = tokio::time::timeout(Duration::from_secs(120), watch.next())
            .await
            .context("no terminal event")?
            .context("subscription closed")?;
        let ce: CloudEvent = serde_json::from_slice(&m.payload)?;
        let ev = JobEvent::from_cloudevent(&ce)?;
        if ev.is_terminal() {
            break ev;
        }
    };
    assert!(
        matches!(first_terminal, JobEvent::Completed(_)),
        "{first_terminal:?}"
    );
    assert_eq!(fleet.terminal_count("running").await?, 1);
    Ok(())
}

/// The same high priority on the privileged subject is accepted and runs.
async fn privileged_subject_allows_a_high_priority(fleet: &TestFleet, f: &Files) -> Result<()> {
    let mut req = fleet.request("vip", Path::new(&f.good), "vip.mp4");
    req.priority = 90;
    let c = case(
        "vip",
        bytes(&serde_json::to_value(&req)?),
        Some("vip"),
        Expect::NotStored,
    );
    publish_once(fleet, subjects::JOBS_SUBMIT_PRIVILEGED, &c)
        .await?
        .map_err(anyhow::Error::msg)?;
    fleet.wait_completed("vip", TIMEOUT).await.map(drop)
}

/// The packet scan keeps no more than its bound, however many packets the file has: memory is
/// bounded by the limit, not by the input (deterministic, no timing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packet_scan_stops_at_its_bound() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = media::tiny_source(dir.path(), "s.mp4")?;
    let scan = |limit| {
        let wanted = BTreeMap::from([(0u32, Keep::Packets { limit }), (1, Keep::Span { limit })]);
        let src = src.clone();
        async move {
            probe::scan_packets(
                &ffleet_runtime::config::Config::default().tools().ffprobe,
                &src,
                None,
                Duration::from_secs(60),
                &wanted,
            )
            .await
        }
    };
    match scan(10).await {
        Err(ProbeError::TooManyPackets { limit: 10, .. }) => {}
        other => bail!("expected the scan to stop at 10 packets, got {other:?}"),
    }
    let all = scan(10_000).await?;
    assert_eq!(all[&0].packets.len(), 50, "2 s at 25 fps");
    assert!(all[&1].packets.is_empty(), "audio is only counted");
    assert!(all[&1].span.count > 0);
    Ok(())
}
