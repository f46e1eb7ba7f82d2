//! The `ffleet` binary: `transcode` with zero setup, its errors and exit codes, and a cluster
//! of separate processes (`up`, `run <service>`) driven by `submit`, `status` and `workers`.

mod common;

use anyhow::{Context, Result};
use common::cli::{ffleet, output as run};
use common::media;
use ffleet::local::NatsServer;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[test]
fn transcode_works_with_no_configuration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = media::ntsc_source(dir.path(), "in.mp4", 4, "160x120")?;
    let out = run(ffleet().current_dir(dir.path()).args([
        "transcode",
        "in.mp4",
        "-o",
        "out.mp4",
        "--segment-seconds",
        "1",
    ]))?;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("120 frames"), "summary line: {stdout}");
    let span = media::span(&dir.path().join("out.mp4"), "v:0")?.expect("video");
    assert_eq!(span.count, media::span(&src, "v:0")?.unwrap().count);
    assert!(
        media::span(&dir.path().join("out.mp4"), "a:0")?.is_some(),
        "audio kept"
    );
    // Nothing left behind beside the output.
    let names: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    Ok(())
}

/// A quiet transcode prints one summary line that names the output as it was typed (a space and
/// non-ASCII included, never percent-encoded) with counts in the right noun form, and nothing on
/// stderr: no late warning from a connection outliving the private server.
#[test]
fn quiet_transcode_prints_the_output_as_given_and_nothing_else() -> Result<()> {
    let dir = tempfile::tempdir()?;
    media::tiny_source(dir.path(), "in.mp4")?;
    // One segment, for the singular: the pool rule would cut even 2 s in two on a 2-core box.
    let out = run(ffleet()
        .env_remove("RUST_LOG")
        .env("FFLEET_SPLITTER__MIN_SEGMENT_SECS", "10")
        .current_dir(dir.path())
        .args(["transcode", "-q", "in.mp4", "-o", "out vidéo.mkv"]))?;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout)?;
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert!(
        stdout.starts_with("out vidéo.mkv: 50 frames, "),
        "output as given: {stdout}"
    );
    assert!(stdout.contains(", 1 segment, "), "singular: {stdout}");
    assert_eq!(String::from_utf8(out.stderr)?, "", "quiet means quiet");
    assert!(dir.path().join("out vidéo.mkv").is_file());
    Ok(())
}

#[test]
fn transcode_reports_bad_input_with_a_reason_and_nonzero_exit() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = run(ffleet()
        .args(["transcode", "/definitely/not/here.mp4", "-o"])
        .arg(dir.path().join("o.mp4")))?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    std::fs::write(dir.path().join("notes.mp4"), "not a video")?;
    let out = run(ffleet()
        .args(["transcode"])
        .arg(dir.path().join("notes.mp4"))
        .arg("-o")
        .arg(dir.path().join("o.mp4")))?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("input_unreadable"));

    let src = media::tiny_source(dir.path(), "in.mp4")?;
    let out = run(ffleet()
        .args(["transcode", "--profile", "nope"])
        .arg(&src)
        .arg("-o")
        .arg(dir.path().join("o.mp4")))?;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_profile"));
    assert!(!dir.path().join("o.mp4").exists());
    Ok(())
}

/// Kills (SIGTERM, then SIGKILL) a child on drop.
struct Proc(Child);

impl Proc {
    fn terminate(&mut self) -> Option<i32> {
        common::procs::stop(&mut self.0, Duration::from_secs(30))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        common::procs::stop(&mut self.0, Duration::from_secs(15));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn submit_wait(url: &str, input: &Path, output: &Path, id: &str) -> Result<Output> {
    run(ffleet()
        .args([
            "-s",
            url,
            "submit",
            "--wait",
            "--segment-seconds",
            "1",
            "--job-id",
            id,
        ])
        .arg(input)
        .arg("-o")
        .arg(output))
}

#[test]
fn up_submit_status_and_workers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let src = media::tiny_source(dir.path(), "in.mp4")?;
    // The data directory lies outside the root (the working directory): `up` refuses it inside.
    let data = tempfile::tempdir()?;
    let port = free_port();
    let mut up = Proc(
        ffleet()
            .current_dir(dir.path())
            .args(["up", "--port", &port.to_string(), "--data"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let mut lines = BufReader::new(up.0.stdout.take().unwrap()).lines();
    let first = lines.next().context("up printed nothing")??;
    assert!(first.starts_with("ffleet is up"), "{first}");
    let url = format!("nats://127.0.0.1:{port}");

    // Paths are printed as given: no percent-encoding of the space or the non-ASCII letter.
    let output = dir.path().join("out vidéo.mp4");
    let out = submit_wait(&url, &src, &output, "cli-job")?;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}: 50 frames, ", output.display())),
        "{stdout}"
    );
    assert!(stdout.contains(", 2 segments, "), "{stdout}");

    let out = run(ffleet().args(["-s", &url, "status"]))?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-job"));
    let out = run(ffleet().args(["-s", &url, "status", "cli-job"]))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Completed"));
    assert!(
        stdout.contains(&format!("output:   {}\n", output.display())),
        "{stdout}"
    );
    // `ffleet up` moves media through the object store by default.
    assert!(stdout.contains("through the object store"), "{stdout}");
    let out = run(ffleet().args(["-s", &url, "workers"]))?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("cpu"));

    let out = run(ffleet().args(["-s", &url, "status", "no-such-job"]))?;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(up.terminate(), Some(0), "up exits cleanly on SIGTERM");
    Ok(())
}

#[test]
fn services_as_separate_processes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let media_dir = dir.path().join("media");
    std::fs::create_dir(&media_dir)?;
    let src = media::ntsc_source(&media_dir, "in.mp4", 3, "160x120")?;
    let server = NatsServer::start_temp()?;
    let env = |c: &mut Command| {
        c.env("NATS_URL", &server.url)
            .env("FFLEET_STORAGE__SCRATCH", dir.path().join("scratch"))
            .env(
                "FFLEET_STORAGE__INPUT_ROOTS",
                format!("[{}]", media_dir.display()),
            )
            .env(
                "FFLEET_STORAGE__OUTPUT_ROOTS",
                format!("[{}]", media_dir.display()),
            )
            .env("FFLEET_ENCODER__SLOTS", "1");
    };
    let mut procs = Vec::new();
    for svc in ["splitter", "scheduler", "merger", "encoder", "encoder"] {
        let mut c = ffleet();
        env(&mut c);
        c.env_remove("NATS_URL")
            .args(["-s", &server.url, "run", svc]);
        procs.push(Proc(c.spawn()?));
    }
    let out = submit_wait(&server.url, &src, &media_dir.join("out.mp4"), "procs")?;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        media::span(&media_dir.join("out.mp4"), "v:0")?
            .unwrap()
            .count,
        90
    );
    for p in &mut procs {
        assert_eq!(p.terminate(), Some(0), "clean exit on SIGTERM");
    }
    Ok(())
}

/// `ffleet capabilities` runs the encoder's detection with its real test encodes. A node
/// labelled `nvenc` (shipped profiles only: the label needs h264_nvenc) offers it exactly when
/// the h264_nvenc test encode passed; on a machine without NVIDIA (as here) it says so and
/// offers only `cpu`.
#[test]
fn capabilities_offers_nvenc_only_when_its_test_encode_passed() -> Result<()> {
    let out = run(ffleet()
        .env("FFLEET_ENCODER__CAPABILITIES", "[cpu,nvenc]")
        .args(["capabilities", "--json"]))?;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let proof = v["proofs"]
        .as_array()
        .context("proofs")?
        .iter()
        .find(|p| p["kind"] == "encode" && p["name"] == "h264_nvenc")
        .context("h264_nvenc was tested")?
        .clone();
    let caps: Vec<&str> = v["capabilities"]
        .as_array()
        .context("capabilities")?
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(caps.contains(&"cpu"));
    let nvenc_proven = proof["ok"] == true;
    assert_eq!(caps.contains(&"nvenc"), nvenc_proven, "{v}");
    if !nvenc_proven {
        assert!(proof["detail"].as_str().is_some_and(|d| !d.is_empty()));
        assert_eq!(v["not_offered"][0]["capability"], "nvenc");
        assert_eq!(v["gpu_slots"], 0);
    }
    // The table says the same in words.
    let out = run(ffleet().args(["capabilities"]))?;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("capabilities:") && text.contains("cpu"),
        "{text}"
    );
    if v["nvml"].is_null() {
        assert!(text.contains("no NVIDIA GPU"), "{text}");
    }
    Ok(())
}
