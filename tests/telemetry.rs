//! OpenTelemetry end to end, against an OTLP receiver in the test process that speaks gRPC and
//! HTTP/protobuf: one trace per job, metrics and logs, from the four services run as separate
//! processes (`ffleet run <service>`) and from `ffleet transcode`, over each protocol as
//! `OTEL_EXPORTER_OTLP[_<SIGNAL>]_PROTOCOL` chooses; an outside system's `traceparent` joined by
//! the in-process cluster (`ffleet up`); and a dead collector that costs a job nothing.

mod common;
#[path = "common/otlp.rs"]
mod otlp;

use anyhow::{Context, Result, bail};
use common::media;
use ffleet::local::NatsServer;
use ffleet_runtime::subjects;
use otlp::{GRPC, HTTP_PROTOBUF, RSpan, Receiver};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const SERVICES: [&str; 4] = ["splitter", "scheduler", "encoder", "merger"];
const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];

/// An ffleet process exporting to `otlp` (the protocol left to the specification's default
/// unless the caller sets one), with the default log levels and nothing inherited that could
/// change where telemetry goes.
fn ffleet(otlp: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ffleet"));
    c.env_remove("NATS_URL")
        .env_remove("FFLEET_CONFIG")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for signal in ["", "_TRACES", "_METRICS", "_LOGS"] {
        c.env_remove(format!("OTEL_EXPORTER_OTLP{signal}_ENDPOINT"))
            .env_remove(format!("OTEL_EXPORTER_OTLP{signal}_PROTOCOL"));
    }
    if let Some(endpoint) = otlp {
        // Short batching delays so the test need not wait out the defaults.
        c.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("OTEL_BLRP_SCHEDULE_DELAY", "100")
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500");
    }
    c
}

/// What arrives when every signal goes over `protocol`.
fn all_over(protocol: &'static str) -> BTreeSet<(&'static str, &'static str)> {
    SIGNALS.iter().map(|s| (*s, protocol)).collect()
}

async fn terminate(child: &mut Child) -> Result<()> {
    let pid = child.id().context("child gone")?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it passes or `timeout` runs out; returns its last error.
async fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn named<'a>(spans: &'a [RSpan], name: &str) -> Vec<&'a RSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn ids(spans: &[&RSpan]) -> BTreeSet<String> {
    spans.iter().map(|s| s.span_id.clone()).collect()
}

/// The span tree of one job: job → validate/probe/split; job → route (per unit) → encode (per
/// unit and attempt) → collect → merge → verify. Returns the encode spans.
fn check_tree<'a>(trace: &'a [RSpan], job_parent: &str) -> Result<Vec<&'a RSpan>> {
    let by_service: BTreeSet<&str> = trace
        .iter()
        .filter_map(|s| s.attr("ffleet.service"))
        .collect();
    for svc in SERVICES {
        if !by_service.contains(svc) {
            bail!("no {svc} spans yet (have {by_service:?})");
        }
    }
    let jobs = named(trace, "job");
    let [job] = jobs.as_slice() else {
        bail!("{} job spans", jobs.len());
    };
    assert_eq!(
        job.parent_span_id, job_parent,
        "job span continues the submitter's span"
    );
    assert_eq!(job.attr("ffleet.service"), Some("splitter"));
    for step in ["validate", "probe", "split"] {
        let s = named(trace, step);
        assert_eq!(s.len(), 1, "one {step} span");
        assert_eq!(s[0].parent_span_id, job.span_id, "{step} is a child of job");
    }
    let routes = named(trace, "route");
    let encodes = named(trace, "encode");
    let collects = named(trace, "collect");
    let merges = named(trace, "merge");
    let verifies = named(trace, "verify");
    if merges.is_empty() || verifies.is_empty() || encodes.len() < routes.len() {
        bail!("trace not complete yet");
    }
    for r in &routes {
        assert_eq!(r.parent_span_id, job.span_id, "route is a child of job");
        assert_eq!(r.attr("ffleet.service"), Some("scheduler"));
    }
    let route_ids = ids(&routes);
    let units: BTreeSet<(&str, &str)> = encodes
        .iter()
        .map(|e| {
            (
                e.attr("ffleet.unit").unwrap_or(""),
                e.attr("ffleet.attempt").unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        units.len(),
        encodes.len(),
        "one encode span per unit attempt"
    );
    assert_eq!(
        encodes.len(),
        routes.len(),
        "every routed task encoded once"
    );
    for e in &encodes {
        assert!(
            route_ids.contains(&e.parent_span_id),
            "encode is a child of a route"
        );
        assert_eq!(e.attr("ffleet.service"), Some("encoder"));
        assert!(
            e.attr("ffleet.node").is_some(),
            "encode names its node: {e:?}"
        );
        assert_eq!(e.attr("ffleet.capability"), Some("cpu"));
        assert!(e.attr("ffleet.codec").is_some(), "codec: {e:?}");
        assert_eq!(e.attr("ffleet.exit_status"), Some("exit code 0"));
        assert!(e.attr("ffleet.speed").is_some(), "speed: {e:?}");
        if e.attr("ffleet.unit") != Some("audio") {
            assert!(
                e.attr("ffleet.frames").is_some_and(|f| f != "0"),
                "frames: {e:?}"
            );
            assert!(e.attr("ffleet.fps").is_some(), "fps: {e:?}");
        }
    }
    let encode_ids = ids(&encodes);
    // A collect span ends after the merge inside it, so it may arrive in a later export batch.
    if collects.len() < encodes.len() || !ids(&collects).contains(&merges[0].parent_span_id) {
        bail!("collect spans not all in yet");
    }
    for c in &collects {
        assert!(
            encode_ids.contains(&c.parent_span_id),
            "collect is a child of an encode"
        );
        assert_eq!(c.attr("ffleet.service"), Some("merger"));
    }
    let [merge] = merges.as_slice() else {
        bail!("{} merge spans", merges.len());
    };
    assert!(
        ids(&collects).contains(&merge.parent_span_id),
        "merge runs in a collect"
    );
    assert_eq!(
        verifies[0].parent_span_id, merge.span_id,
        "verify is a child of merge"
    );
    Ok(encodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_job_across_service_processes_over_grpc() -> Result<()> {
    across_service_processes(GRPC).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_job_across_service_processes_over_http_protobuf() -> Result<()> {
    across_service_processes(HTTP_PROTOBUF).await
}

/// Four service processes and `ffleet submit --wait`, all told to export over `protocol`.
async fn across_service_processes(protocol: &'static str) -> Result<()> {
    let receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let media_dir = dir.path().join("media");
    std::fs::create_dir(&media_dir)?;
    let src = media::ntsc_source(&media_dir, "in.mp4", 3, "160x120")?;
    let server = NatsServer::start_temp()?;
    let service = |svc: &str, node: Option<&str>| -> Result<Child> {
        let mut c = ffleet(Some(&receiver.endpoint));
        c.env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .env("FFLEET_STORAGE__SCRATCH", dir.path().join("scratch"))
            .env(
                "FFLEET_STORAGE__INPUT_ROOTS",
                format!("[{}]", media_dir.display()),
            )
            .env(
                "FFLEET_STORAGE__OUTPUT_ROOTS",
                format!("[{}]", media_dir.display()),
            )
            .env("FFLEET_ENCODER__SLOTS", "1")
            .args(["-s", &server.url, "run", svc]);
        if let Some(n) = node {
            c.env("FFLEET_ENCODER__NODE_ID", n);
        }
        Ok(c.spawn()?)
    };
    let mut procs = Vec::new();
    for svc in ["splitter", "scheduler", "merger"] {
        procs.push(service(svc, None)?);
    }
    procs.push(service("encoder", Some("enc-a"))?);
    procs.push(service("encoder", Some("enc-b"))?);

    let job = "otel-procs";
    let out = ffleet(Some(&receiver.endpoint))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .args([
            "-s",
            &server.url,
            "submit",
            "--wait",
            "--segment-seconds",
            "1",
        ])
        .args(["--job-id", job])
        .arg(&src)
        .arg("-o")
        .arg(media_dir.join("out.mp4"))
        .status()
        .await?;
    assert_eq!(out.code(), Some(0), "job completed");

    // Metrics (gauges included) arrive while the services run.
    let wanted = [
        ("ffleet.jobs.accepted", "ffleet-splitter"),
        ("ffleet.jobs.completed", "ffleet-merger"),
        ("ffleet.segments.encoded", "ffleet-encoder"),
        ("ffleet.encode.fps", "ffleet-encoder"),
        ("ffleet.encode.realtime_factor", "ffleet-encoder"),
        ("ffleet.queue.depth", "ffleet-scheduler"),
        ("ffleet.heartbeat.age", "ffleet-scheduler"),
        ("ffleet.pool.slots.total", "ffleet-scheduler"),
        ("ffleet.pool.slots.busy", "ffleet-scheduler"),
    ];
    eventually(Duration::from_secs(20), || {
        let m = receiver.metrics();
        for (name, from) in wanted {
            if !m.get(name).is_some_and(|s| s.iter().any(|x| x == from)) {
                bail!("metric {name} from {from} not received: {:?}", m.keys());
            }
        }
        Ok(())
    })
    .await?;
    for p in &mut procs {
        terminate(p).await?;
    }

    let spans = eventually(Duration::from_secs(10), || {
        let spans = receiver.spans();
        let submit = spans
            .iter()
            .find(|s| s.name == "submit" && s.attr("ffleet.job") == Some(job))
            .context("no submit span")?
            .clone();
        let trace: Vec<RSpan> = spans
            .iter()
            .filter(|s| s.trace_id == submit.trace_id)
            .cloned()
            .collect();
        check_tree(&trace, &submit.span_id)?;
        Ok((submit, trace, spans))
    })
    .await?;
    let (submit, trace, all) = spans;
    assert_eq!(submit.parent_span_id, "", "ffleet submit starts the trace");
    // One trace id for the job: every span that names it is in the submit's trace.
    let traces: BTreeSet<&str> = all
        .iter()
        .filter(|s| s.attr("ffleet.job") == Some(job))
        .map(|s| s.trace_id.as_str())
        .collect();
    assert_eq!(traces.len(), 1, "one trace id for the job: {traces:?}");
    // Four processes, four resources.
    let resources: BTreeMap<&str, &str> = trace
        .iter()
        .filter_map(|s| Some((s.attr("ffleet.service")?, s.service_name.as_str())))
        .collect();
    for svc in SERVICES {
        assert_eq!(resources[svc], format!("ffleet-{svc}"), "{resources:?}");
    }
    let nodes: BTreeSet<&str> = named(&trace, "encode")
        .iter()
        .filter_map(|e| e.attr("ffleet.node"))
        .collect();
    assert!(
        nodes.iter().all(|n| ["enc-a", "enc-b"].contains(n)),
        "{nodes:?}"
    );

    // Log records from the services carry the job's trace id.
    let logs = receiver.logs();
    let traced: BTreeSet<&str> = logs
        .iter()
        .filter(|l| l.trace_id == submit.trace_id && !l.span_id.is_empty())
        .map(|l| l.service_name.as_str())
        .collect();
    for svc in ["ffleet-splitter", "ffleet-merger"] {
        assert!(
            traced.contains(svc),
            "no {svc} log record in the trace: {traced:?}"
        );
    }
    assert!(
        logs.iter()
            .any(|l| l.trace_id == submit.trace_id && l.body == "job completed"),
        "the completion log record is in the trace"
    );
    assert_eq!(receiver.transports(), all_over(protocol));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_traceparent_is_joined_by_the_in_process_cluster() -> Result<()> {
    let receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let src = media::ntsc_source(dir.path(), "in.mp4", 2, "160x120")?;
    // Outside the root (the working directory), as `up` requires.
    let data = tempfile::tempdir()?;
    let port = free_port();
    let mut up = ffleet(Some(&receiver.endpoint))
        .current_dir(dir.path())
        .args([
            "up",
            "--port",
            &port.to_string(),
            "--encoders",
            "2",
            "--data",
        ])
        .arg(data.path())
        .stdout(Stdio::piped())
        .spawn()?;
    // Dropped before `up` (whose drop kills it): `up` stops its nats-server on SIGTERM.
    let _stop = common::procs::TermOnDrop(up.id().context("pid")?, Duration::from_secs(15));
    let url = format!("nats://127.0.0.1:{port}");
    let stdout = up.stdout.take().context("stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = lines.next_line().await?.context("up printed nothing")?;
    // Keep reading: `up` prints more, and a closed pipe would kill it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    assert!(first.starts_with("ffleet is up"), "{first}");

    // Another system publishes jobs inside its own traces: a good one and one that must fail.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let bad_trace = "0af7651916cd43dd8448eb211c80319c";
    let parent = "00f067aa0ba902b7";
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let publish = |job: &'static str, trace: &'static str, input: std::path::PathBuf| {
        let js = js.clone();
        let out = dir.path().join(format!("{job}.mp4"));
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, job);
            headers.insert("traceparent", format!("00-{trace}-{parent}-01").as_str());
            headers.insert("tracestate", "cms=4711");
            let body = serde_json::json!({
                "version": 1,
                "job_id": job,
                "input": format!("file://{}", input.display()),
                "output": format!("file://{}", out.display()),
                "segment_seconds": 1,
            });
            js.publish_with_headers(
                subjects::JOBS_SUBMIT,
                headers,
                serde_json::to_vec(&body)?.into(),
            )
            .await?
            .await?;
            anyhow::Ok(())
        }
    };
    publish("outside-job", trace_id, src.clone()).await?;
    publish("outside-bad", bad_trace, dir.path().join("missing.mp4")).await?;

    eventually(Duration::from_secs(60), || {
        let trace: Vec<RSpan> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let encodes = check_tree(&trace, parent)?;
        // One process: the services tell themselves apart by attribute, under one resource.
        assert!(trace.iter().all(|s| s.service_name == "ffleet"));
        let nodes: BTreeSet<&str> = encodes
            .iter()
            .filter_map(|e| e.attr("ffleet.node"))
            .collect();
        assert!(!nodes.is_empty());
        Ok(())
    })
    .await?;
    assert!(
        dir.path().join("outside-job.mp4").is_file(),
        "the job completed"
    );
    // The failed job's span says why.
    eventually(Duration::from_secs(10), || {
        let spans = receiver.spans();
        let job = spans
            .iter()
            .find(|s| s.trace_id == bad_trace && s.name == "job")
            .context("no job span for the bad job")?;
        assert_eq!(job.parent_span_id, parent);
        assert_eq!(job.status_code, 2, "error status: {job:?}");
        assert_eq!(job.attr("ffleet.failure.reason"), Some("input_missing"));
        Ok(())
    })
    .await?;
    terminate(&mut up).await?;
    Ok(())
}

/// Runs `ffleet transcode -q` with `env` added; returns its wall time and stderr.
async fn transcode(
    src: &Path,
    out: &Path,
    otlp: Option<&str>,
    env: &[(&str, String)],
) -> Result<(f64, String)> {
    let started = Instant::now();
    let out = ffleet(otlp)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["transcode", "-q", "--segment-seconds", "1"])
        .arg(src)
        .arg("-o")
        .arg(out)
        .stderr(Stdio::piped())
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "transcode completed: {stderr}");
    Ok((started.elapsed().as_secs_f64(), stderr))
}

type Env = Vec<(&'static str, String)>;

/// `ffleet transcode` with the variables `env` gives for the receiver's endpoint: one trace with
/// all four services, the job's metrics and its log records (at the default log level) reach the
/// receiver, each signal over the transport `expected` names. Returns the command's stderr.
async fn transcode_exports(
    env: impl FnOnce(&str) -> Env,
    expected: BTreeSet<(&'static str, &'static str)>,
) -> Result<String> {
    let receiver = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let src = media::ntsc_source(dir.path(), "in.mp4", 2, "160x120")?;
    let env = env(&receiver.endpoint);
    let (_, stderr) = transcode(
        &src,
        &dir.path().join("out.mp4"),
        Some(&receiver.endpoint),
        &env,
    )
    .await?;
    // The command flushes its telemetry before it exits: everything is there already.
    let spans = receiver.spans();
    let submit = spans
        .iter()
        .find(|s| s.name == "submit")
        .context("no submit span")?;
    assert_eq!(submit.parent_span_id, "", "the transcode starts the trace");
    let trace: Vec<RSpan> = spans
        .iter()
        .filter(|s| s.trace_id == submit.trace_id)
        .cloned()
        .collect();
    check_tree(&trace, &submit.span_id)?;
    assert!(trace.iter().all(|s| s.service_name == "ffleet"));
    let metrics = receiver.metrics();
    for name in [
        "ffleet.jobs.accepted",
        "ffleet.jobs.completed",
        "ffleet.segments.encoded",
        "ffleet.encode.fps",
    ] {
        assert!(
            metrics
                .get(name)
                .is_some_and(|s| s.iter().any(|x| x == "ffleet")),
            "metric {name}: {:?}",
            metrics.keys()
        );
    }
    assert!(
        receiver.logs().iter().any(|l| l.trace_id == submit.trace_id
            && !l.span_id.is_empty()
            && l.body == "job completed"
            && l.service_name == "ffleet"),
        "the completion log record is in the trace"
    );
    assert_eq!(receiver.transports(), expected);
    Ok(stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_exports_over_http_protobuf_by_default() -> Result<()> {
    let stderr = transcode_exports(|_| Env::new(), all_over(HTTP_PROTOBUF)).await?;
    assert_eq!(stderr, "", "a quiet transcode prints nothing on stderr");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcode_exports_over_grpc() -> Result<()> {
    let env = |_: &str| vec![("OTEL_EXPORTER_OTLP_PROTOCOL", GRPC.to_owned())];
    let stderr = transcode_exports(env, all_over(GRPC)).await?;
    assert_eq!(stderr, "", "a quiet transcode prints nothing on stderr");
    Ok(())
}

/// Per-signal variables win over the generic ones; a per-signal endpoint is used as it is (the
/// generic one gets `/v1/<signal>` appended for HTTP); an unknown protocol is reported and the
/// default used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_signal_protocols_and_endpoints_follow_the_specification() -> Result<()> {
    let env = |endpoint: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grcp".to_owned()),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", GRPC.to_owned()),
            (
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                format!("{endpoint}/v1/logs"),
            ),
        ]
    };
    let expected = [
        ("traces", GRPC),
        ("metrics", HTTP_PROTOBUF),
        ("logs", HTTP_PROTOBUF),
    ];
    let stderr = transcode_exports(env, expected.into_iter().collect()).await?;
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=\"grcp\" is not an OTLP protocol"),
        "unknown protocol reported: {stderr}"
    );
    Ok(())
}

/// The three runs go side by side, so that whatever else loads the machine loads them alike.
/// The dead collector is the worst kind: it accepts connections and never answers, and the
/// export timeout is two minutes, so a service that waited on an export even once would take
/// over a minute longer. The margin is that wide on purpose: this checks that nothing waits on
/// the collector, not how fast a job runs (that is the benches' business).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_costs_a_job_nothing() -> Result<()> {
    const EXPORT_TIMEOUT_MS: &str = "120000";
    let dir = tempfile::tempdir()?;
    let src = media::ntsc_source(dir.path(), "in.mp4", 3, "160x120")?;
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead = format!("http://{}", black_hole.local_addr()?);
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = black_hole.accept().await {
            conns.push(c);
        }
    });
    let [off_out, http_out, grpc_out] =
        ["off.mp4", "http.mp4", "grpc.mp4"].map(|n| dir.path().join(n));
    let [http_env, grpc_env] = [HTTP_PROTOBUF, GRPC].map(|p| {
        vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", p.to_owned()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", EXPORT_TIMEOUT_MS.to_owned()),
        ]
    });
    let (off, http, grpc) = tokio::join!(
        transcode(&src, &off_out, None, &[]),
        transcode(&src, &http_out, Some(&dead), &http_env),
        transcode(&src, &grpc_out, Some(&dead), &grpc_env),
    );
    held.abort();
    let off = off?.0;
    for (protocol, run) in [(HTTP_PROTOBUF, http), (GRPC, grpc)] {
        let with_dead = run?.0;
        println!("telemetry off: {off:.2} s, dead {protocol} collector: {with_dead:.2} s");
        assert!(
            with_dead < off + 60.0,
            "a dead {protocol} collector held the job: {with_dead:.2} s against {off:.2} s"
        );
    }
    let reference = std::fs::read(&off_out)?;
    for out in [&http_out, &grpc_out] {
        assert!(
            std::fs::read(out)? == reference,
            "{} differs from the run without telemetry",
            out.display()
        );
    }
    Ok(())
}
