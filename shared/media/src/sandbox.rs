//! What every ffmpeg and ffprobe child runs inside: resource limits (address space, file size,
//! open files, CPU time) and an environment reduced to an allow-list, so a hostile input cannot
//! take the host's memory or disk, and a child sees none of the service's secrets.
//!
//! The limits are set by `prlimit` (util-linux), which sets them on itself and then executes the
//! child in place (same pid, so killing it kills the child): ffleet forbids `unsafe`, which a
//! `pre_exec` hook would need. Without `prlimit` on PATH children run unlimited, with a warning.

use crate::config::{FfmpegConfig, LimitsConfig};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// Environment variables a child keeps: the locale, where programs and libraries are, and what
/// GPU runtimes (CUDA/NVENC, VA-API) read to find their devices.
pub const ENV_ALLOW: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "LIBVA_DRIVER_NAME",
    "LIBVA_DRIVERS_PATH",
];

/// Argument fragments that mark a child using an accelerator: exempt from the address-space
/// limit (GPU runtimes reserve huge virtual ranges up front).
const ACCELERATED: &[&str] = &[
    "nvenc", "cuda", "cuvid", "qsv", "vaapi", "vulkan", "hwaccel",
];

/// Per-child resource limits; 0 leaves one unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    pub address_space_bytes: u64,
    pub file_size_bytes: u64,
    pub open_files: u64,
    pub cpu_secs: u64,
}

impl ChildLimits {
    pub fn from_config(l: &LimitsConfig) -> Self {
        const MIB: u64 = 1024 * 1024;
        Self {
            address_space_bytes: l.child_address_space_mb.saturating_mul(MIB),
            file_size_bytes: l.child_file_size_mb.saturating_mul(MIB),
            open_files: l.child_open_files,
            cpu_secs: l.child_cpu_secs,
        }
    }

    /// `prlimit` options for a child running `args`.
    fn prlimit_args(&self, args: &[OsString]) -> Vec<OsString> {
        let accelerated = args.iter().any(|a| {
            let a = a.to_string_lossy();
            ACCELERATED.iter().any(|m| a.contains(m))
        });
        let mut v = Vec::new();
        let mut set = |flag: &str, n: u64| {
            if n > 0 {
                v.push(OsString::from(format!("--{flag}={n}")));
            }
        };
        if !accelerated {
            set("as", self.address_space_bytes);
        }
        set("fsize", self.file_size_bytes);
        set("nofile", self.open_files);
        set("cpu", self.cpu_secs);
        v
    }
}

impl Default for ChildLimits {
    fn default() -> Self {
        Self::from_config(&LimitsConfig::default())
    }
}

/// A program run as a child, with the limits it runs under. Built from `[ffmpeg]` and `[limits]`
/// by whoever runs children and handed along, so nothing about children is process-wide: two
/// services in one process (`ffleet up`, the tests) each run theirs under their own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    pub path: PathBuf,
    pub limits: ChildLimits,
}

impl Tool {
    pub fn new(path: impl Into<PathBuf>, limits: ChildLimits) -> Self {
        Self {
            path: path.into(),
            limits,
        }
    }
}

/// The two programs ffleet runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    pub ffmpeg: Tool,
    pub ffprobe: Tool,
}

impl Tools {
    pub fn from_config(programs: &FfmpegConfig, limits: &LimitsConfig) -> Self {
        let limits = ChildLimits::from_config(limits);
        Self {
            ffmpeg: Tool::new(&programs.ffmpeg, limits),
            ffprobe: Tool::new(&programs.ffprobe, limits),
        }
    }
}

fn prlimit() -> Option<&'static Path> {
    static PRLIMIT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PRLIMIT
        .get_or_init(|| {
            let found = ["/usr/bin/prlimit", "/bin/prlimit"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .or_else(|| which(Path::new("prlimit")));
            if found.is_none() {
                tracing::warn!("prlimit not found: ffmpeg children run without resource limits");
            }
            found
        })
        .as_deref()
}

/// A command running `tool args` inside the tool's limits, with the allow-listed environment
/// only.
pub fn command(tool: &Tool, args: &[OsString]) -> Command {
    let program = tool.path.as_path();
    let opts = tool.limits.prlimit_args(args);
    // A program that is not there is started directly, so the caller sees the spawn error
    // (transient, "not installed") instead of prlimit's failure to execute it.
    let resolved = which(program);
    let mut cmd = match (prlimit(), resolved) {
        (Some(p), Some(program)) if !opts.is_empty() => {
            let mut c = Command::new(p);
            c.args(opts).arg("--").arg(program);
            c
        }
        _ => Command::new(program),
    };
    cmd.args(args).env_clear();
    for key in ENV_ALLOW {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    cmd
}

/// Resolves a program name on PATH (for clear "not installed" errors at startup).
pub fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn accelerated_children_keep_their_address_space() {
        let l = ChildLimits {
            address_space_bytes: 100,
            file_size_bytes: 200,
            open_files: 0,
            cpu_secs: 5,
        };
        assert_eq!(
            l.prlimit_args(&os(&["-c:v", "libx264"])),
            os(&["--as=100", "--fsize=200", "--cpu=5"])
        );
        assert_eq!(
            l.prlimit_args(&os(&["-c:v", "h264_nvenc"])),
            os(&["--fsize=200", "--cpu=5"])
        );
    }

    #[tokio::test]
    async fn children_see_only_the_allowed_environment_and_their_limits() {
        // HOME is set in every test process and is not on the allow-list.
        let out = command(
            &Tool::new("sh", ChildLimits::default()),
            &os(&["-c", "echo \"home=$HOME path=${PATH:+set}\"; ulimit -n"]),
        )
        .output()
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("home= path=set"), "{text}");
        if prlimit().is_some() {
            assert!(text.contains("\n4096"), "{text}");
        }
    }
}
