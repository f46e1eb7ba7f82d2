//! Runs ffmpeg and ffprobe as children: no shell, stdin closed, killed when dropped, bounded in
//! time and resources (`sandbox`), stdout read up to a cap, with only the tail of stderr kept for
//! error reports (never streamed into the logs).

use super::progress::{ProgressBlock, ProgressParser};
use super::sandbox::Tool;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Lines of stderr kept for an error report.
const STDERR_TAIL_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} ran past its {limit:?} limit")]
    TimedOut {
        program: String,
        limit: Duration,
        stderr_tail: String,
    },
    #[error("{program} made no progress for {limit:?}")]
    Stalled {
        program: String,
        limit: Duration,
        stderr_tail: String,
    },
    #[error("{program} was stopped by shutdown")]
    Cancelled { program: String },
    #[error("{program} failed ({status}): {stderr_tail}")]
    Failed {
        program: String,
        status: String,
        /// True when a signal ended it (OOM killer, operator): worth retrying elsewhere.
        signalled: bool,
        stderr_tail: String,
        /// Failed decode calls by input stream index, as in [`RunOutput`].
        decode_failures: std::collections::BTreeMap<u32, u64>,
    },
    #[error("{program} wrote more than {limit} bytes of output")]
    OutputTooLarge { program: String, limit: usize },
    /// The reader of its output stopped it (a limit on what it reports).
    #[error("{program} stopped: {reason}")]
    Stopped { program: String, reason: String },
    #[error("i/o with {program}: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// Whether the same command could succeed on another try (as opposed to failing on this
    /// input every time).
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Spawn { .. }
            | RunError::Cancelled { .. }
            | RunError::Io { .. }
            | RunError::Stalled { .. } => true,
            RunError::Failed { signalled, .. } => *signalled,
            RunError::TimedOut { .. }
            | RunError::OutputTooLarge { .. }
            | RunError::Stopped { .. } => false,
        }
    }

    pub fn stderr_tail(&self) -> &str {
        match self {
            RunError::TimedOut { stderr_tail, .. }
            | RunError::Stalled { stderr_tail, .. }
            | RunError::Failed { stderr_tail, .. } => stderr_tail,
            _ => "",
        }
    }
}

#[derive(Debug)]
pub struct RunOutput {
    pub stdout: Vec<u8>,
    pub stderr_tail: String,
    /// Lines the child wrote to stderr. ffleet runs ffmpeg at `-loglevel error`, where a clean
    /// run writes none: for a decode these are the decoder's errors (concealed or not).
    pub stderr_lines: u64,
    /// Decode calls that failed, by input stream index, as ffmpeg reports each (`Error while
    /// decoding stream #0:N`): what its `-max_error_rate` counts against the calls made. Whole
    /// only where repeated lines are not folded (`-loglevel repeat+error`).
    pub decode_failures: std::collections::BTreeMap<u32, u64>,
}

/// The end of a child's stderr: its last lines, and how many there were.
#[derive(Debug, Default)]
struct Tail {
    text: String,
    lines: u64,
    decode_failures: std::collections::BTreeMap<u32, u64>,
}

/// What ffmpeg writes (at `-loglevel error`) for each decode call that failed, before the
/// stream's `#<file>:<index>`.
pub const DECODE_FAILED: &str = "Error while decoding stream #";

/// The input stream index a decode-failure line names.
fn failed_stream(line: &str) -> Option<u32> {
    let rest = &line[line.find(DECODE_FAILED)? + DECODE_FAILED.len()..];
    let (_file, rest) = rest.split_once(':')?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Limits for a supervised run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hard wall-clock limit.
    pub timeout: Duration,
    /// Longest time without a progress block; `None` disables stall detection.
    pub stall: Option<Duration>,
}

fn program_name(program: &Path) -> String {
    program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string())
}

fn spawn(program: &Tool, args: &[OsString]) -> Result<Child, RunError> {
    super::sandbox::command(program, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| RunError::Spawn {
            program: program_name(&program.path),
            source,
        })
}

/// Collects the last lines of a stream, bounded in lines and line length, and counts them all.
async fn tail_of(stream: impl AsyncRead + Unpin) -> Tail {
    let mut lines = BufReader::new(stream).lines();
    let mut tail: VecDeque<String> = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let (mut count, mut decode_failures) = (0, std::collections::BTreeMap::new());
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        if let Some(stream) = failed_stream(&line) {
            *decode_failures.entry(stream).or_insert(0) += 1;
        }
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(300).collect());
    }
    Tail {
        text: Vec::from(tail).join("\n"),
        lines: count,
        decode_failures,
    }
}

/// Turns a child's exit into the run's result.
fn finished(
    program: String,
    status: ExitStatus,
    stdout: Vec<u8>,
    tail: Tail,
) -> Result<RunOutput, RunError> {
    use std::os::unix::process::ExitStatusExt;
    let stderr_tail = tail.text;
    if status.success() {
        ffleet_telemetry::spans::child_exit(&program, "exit code 0", None);
        return Ok(RunOutput {
            stdout,
            stderr_tail,
            stderr_lines: tail.lines,
            decode_failures: tail.decode_failures,
        });
    }
    let (status, signalled) = match (status.code(), status.signal()) {
        (Some(code), _) => (format!("exit code {code}"), false),
        (None, Some(sig)) => (format!("killed by signal {sig}"), true),
        _ => ("unknown status".into(), false),
    };
    ffleet_telemetry::spans::child_exit(&program, &status, Some(&stderr_tail));
    Err(RunError::Failed {
        program,
        status,
        signalled,
        stderr_tail,
        decode_failures: tail.decode_failures,
    })
}

/// Most stdout `capture` keeps by default.
pub const CAPTURE_LIMIT: usize = 16 * 1024 * 1024;

/// Runs a command to completion and returns its whole stdout (up to `CAPTURE_LIMIT`).
pub async fn capture(
    program: &Tool,
    args: &[OsString],
    timeout: Duration,
) -> Result<RunOutput, RunError> {
    capture_at_most(program, args, timeout, CAPTURE_LIMIT).await
}

/// Runs a command to completion and returns its stdout, killing it once it writes more than
/// `limit` bytes (a hostile input can make ffprobe print without end).
pub async fn capture_at_most(
    program: &Tool,
    args: &[OsString],
    timeout: Duration,
    limit: usize,
) -> Result<RunOutput, RunError> {
    let name = program_name(&program.path);
    let mut child = spawn(program, args)?;
    let stdout = child.stdout.take().expect("stdout piped");
    let stderr = tokio::spawn(tail_of(child.stderr.take().expect("stderr piped")));
    let work = async {
        let mut out = Vec::new();
        let read = stdout
            .take((limit as u64).saturating_add(1))
            .read_to_end(&mut out)
            .await
            .map_err(|source| RunError::Io {
                program: name.clone(),
                source,
            })?;
        if read > limit {
            let _ = child.kill().await;
            return Err(RunError::OutputTooLarge {
                program: name.clone(),
                limit,
            });
        }
        let status = child.wait().await.map_err(|source| RunError::Io {
            program: name.clone(),
            source,
        })?;
        Ok::<_, RunError>((out, status))
    };
    let (out, status) = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => return Err(timed_out(name, timeout)),
    };
    finished(name, status, out, stderr.await.unwrap_or_default())
}

/// Runs a command and hands each line of its stdout to `on_line` as it comes, so memory holds
/// one line (at most `max_line` bytes) rather than the whole output. A longer line, or an error
/// from `on_line`, kills the child (`RunError::Stopped`).
pub async fn each_line(
    program: &Tool,
    args: &[OsString],
    timeout: Duration,
    max_line: usize,
    mut on_line: impl FnMut(&str) -> Result<(), String>,
) -> Result<RunOutput, RunError> {
    use tokio::io::AsyncBufReadExt as _;
    let name = program_name(&program.path);
    let mut child = spawn(program, args)?;
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
    let stderr = tokio::spawn(tail_of(child.stderr.take().expect("stderr piped")));
    let io = |source| RunError::Io {
        program: name.clone(),
        source,
    };
    let work = async {
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            let n = (&mut stdout)
                .take((max_line as u64).saturating_add(1))
                .read_until(b'\n', &mut line)
                .await
                .map_err(io)?;
            if n == 0 {
                break;
            }
            let stop = if line.len() > max_line && line.last() != Some(&b'\n') {
                Some(format!("an output line is longer than {max_line} bytes"))
            } else {
                on_line(String::from_utf8_lossy(&line).trim_end()).err()
            };
            if let Some(reason) = stop {
                let _ = child.kill().await;
                return Err(RunError::Stopped {
                    program: name.clone(),
                    reason,
                });
            }
        }
        child.wait().await.map_err(io)
    };
    let status = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => return Err(timed_out(name, timeout)),
    };
    finished(name, status, Vec::new(), stderr.await.unwrap_or_default())
}

/// Runs ffmpeg with `-progress pipe:1`, calling `on_progress` for every block, and kills it on
/// stall, timeout or cancellation.
pub async fn run_with_progress(
    program: &Tool,
    args: &[OsString],
    limits: Limits,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(&ProgressBlock),
) -> Result<RunOutput, RunError> {
    let name = program_name(&program.path);
    let mut child = spawn(program, args)?;
    let stderr = tokio::spawn(tail_of(child.stderr.take().expect("stderr piped")));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut parser = ProgressParser::default();
    let hard_deadline = Instant::now() + limits.timeout;
    let stall = limits.stall.unwrap_or(limits.timeout);
    let mut stall_deadline = Instant::now() + stall;

    let killed = loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    if let Some(block) = parser.push_line(&line) {
                        stall_deadline = Instant::now() + stall;
                        on_progress(&block);
                    }
                }
                Ok(None) => break None,
                Err(source) => return Err(RunError::Io { program: name, source }),
            },
            _ = tokio::time::sleep_until(stall_deadline), if limits.stall.is_some() => break Some("stall"),
            _ = tokio::time::sleep_until(hard_deadline) => break Some("timeout"),
            _ = cancel.cancelled() => break Some("cancel"),
        }
    };
    if let Some(why) = killed {
        let _ = child.kill().await;
        let stderr_tail = stderr.await.unwrap_or_default().text;
        ffleet_telemetry::spans::child_exit(&name, &format!("killed ({why})"), Some(&stderr_tail));
        return Err(match why {
            "stall" => RunError::Stalled {
                program: name,
                limit: stall,
                stderr_tail,
            },
            "timeout" => RunError::TimedOut {
                program: name,
                limit: limits.timeout,
                stderr_tail,
            },
            _ => RunError::Cancelled { program: name },
        });
    }
    // stdout closed: ffmpeg is exiting. Bound the wait in case it hangs on the way out.
    let status = tokio::select! {
        s = child.wait() => s.map_err(|source| RunError::Io { program: name.clone(), source })?,
        _ = tokio::time::sleep_until(hard_deadline) => {
            let _ = child.kill().await;
            return Err(RunError::TimedOut { program: name, limit: limits.timeout, stderr_tail: String::new() });
        }
    };
    finished(name, status, Vec::new(), stderr.await.unwrap_or_default())
}

/// A child that ran past its limit, with nothing of stderr kept.
fn timed_out(program: String, limit: Duration) -> RunError {
    RunError::TimedOut {
        program,
        limit,
        stderr_tail: String::new(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn decode_failures_are_told_by_stream() {
        assert_eq!(
            failed_stream(
                "Error while decoding stream #0:1: Invalid data found when processing input"
            ),
            Some(1)
        );
        assert_eq!(
            failed_stream("Error while decoding stream #0:12: x"),
            Some(12)
        );
        assert_eq!(
            failed_stream("[aac @ 0x55] channel element 3.10 is not allocated"),
            None
        );
    }
    use super::*;
    use crate::sandbox::ChildLimits;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[tokio::test]
    async fn capture_reports_the_exit_status_and_stderr_tail() {
        let err = capture(
            &Tool::new("sh", ChildLimits::default()),
            &os(&["-c", "echo one >&2; echo two >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        match err {
            RunError::Failed {
                status,
                stderr_tail,
                signalled,
                ..
            } => {
                assert_eq!(status, "exit code 3");
                assert_eq!(stderr_tail, "one\ntwo");
                assert!(!signalled);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_silent_child_is_killed_as_stalled() {
        let started = std::time::Instant::now();
        let err = run_with_progress(
            &Tool::new("sleep", ChildLimits::default()),
            &os(&["30"]),
            Limits {
                timeout: Duration::from_secs(20),
                stall: Some(Duration::from_millis(300)),
            },
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::Stalled { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn missing_programs_fail_to_spawn() {
        let err = capture(
            &Tool::new("/nonexistent/ffmpeg", ChildLimits::default()),
            &[],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::Spawn { .. }));
    }
}
