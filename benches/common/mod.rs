//! What the benchmarks share: knobs from the environment, ffmpeg runs, the 720p source of the
//! pipeline benchmark, medians, a process's CPU time and a server's monitoring endpoints, and the
//! services as separate processes around a private nats-server (killed when dropped).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// An `FFLEET_BENCH_*` knob, or its default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(st.success(), "ffmpeg {args:?} failed");
}

/// `secs` of 1280x720: the shared Big Buck Bunny sample looped (real content, a keyframe every
/// 5.28 s, each loop starting on one), else a generated clip with the same keyframe spacing.
pub fn source_720p(dir: &Path, secs: u32) -> PathBuf {
    let out = dir.join("bench-720p.mp4");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/media/bigbuckbunny.mp4");
    let t = secs.to_string();
    if sample.is_file() {
        let loops = (secs as f64 / 5.28).ceil() as u32;
        let (loops, sample) = ((loops - 1).to_string(), sample.display().to_string());
        ffmpeg(&[
            "-stream_loop",
            &loops,
            "-i",
            &sample,
            "-t",
            &t,
            "-c",
            "copy",
            out.to_str().unwrap(),
        ]);
    } else {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "132",
            "-c:a",
            "aac",
            out.to_str().unwrap(),
        ]);
    }
    out
}

/// NaN for no samples.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Service processes, killed when dropped.
pub struct Procs(pub Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ffleet run <svc>` against `url`, with `dir` as scratch, input and output root, one slot per
/// encoder, quiet logs, and `env` on top.
pub fn spawn(
    url: &str,
    dir: &Path,
    svc: &str,
    node: Option<&str>,
    env: &[(&str, String)],
) -> Child {
    // `FFLEET_BENCH_BIN` runs another build's services (a before-and-after pair in one run).
    let bin = std::env::var_os("FFLEET_BENCH_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_ffleet").into(), PathBuf::from);
    let mut c = Command::new(bin);
    c.args(["-s", url, "run", svc])
        .env_remove("NATS_URL")
        .env_remove("FFLEET_CONFIG")
        .env("FFLEET_STORAGE__SCRATCH", scratch_of(dir))
        .env(
            "FFLEET_STORAGE__INPUT_ROOTS",
            format!("[{}]", dir.display()),
        )
        .env(
            "FFLEET_STORAGE__OUTPUT_ROOTS",
            format!("[{}]", dir.display()),
        )
        .env("FFLEET_ENCODER__SLOTS", "1")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    if let Some(n) = node {
        c.env("FFLEET_ENCODER__NODE_ID", n);
    }
    c.spawn().expect("ffleet runs")
}

/// A private nats-server, a client connection to it, and the services as processes.
pub struct Fleet {
    /// Declared first so the services stop before their server.
    pub procs: Procs,
    pub ctx: ffleet_runtime::runtime::Ctx,
    pub url: String,
    pub server: ffleet::local::NatsServer,
}

/// Starts a server, the splitter, scheduler and merger, and encoders `enc-1`..`enc-<encoders>`,
/// each with `env`.
pub async fn start_fleet(dir: &Path, encoders: usize, env: &[(&str, String)]) -> Fleet {
    let server = ffleet::local::NatsServer::start_temp().expect("nats-server starts");
    let url = server.url.clone();
    let mut cfg = ffleet_runtime::config::Config::default();
    cfg.nats.url = url.clone();
    cfg.storage.scratch = scratch_of(dir);
    let ctx = ffleet_runtime::runtime::Ctx::connect(std::sync::Arc::new(cfg), "bench", true)
        .await
        .expect("connects");
    let mut procs = Procs(Vec::new());
    for svc in ["splitter", "scheduler", "merger"] {
        procs.0.push((svc.into(), spawn(&url, dir, svc, None, env)));
    }
    for i in 1..=encoders {
        let n = format!("enc-{i}");
        let c = spawn(&url, dir, "encoder", Some(&n), env);
        procs.0.push((n, c));
    }
    Fleet {
        procs,
        ctx,
        url,
        server,
    }
}

/// Scratch beside `dir` (the root every job reads and writes), never inside it: ffleet refuses
/// a scratch directory inside a root.
pub fn scratch_of(dir: &Path) -> std::path::PathBuf {
    let name = dir
        .file_name()
        .map_or("ffleet".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!("{name}.scratch"))
}

/// CPU seconds process `pid` has used itself (utime + stime from /proc; its children, such as
/// ffmpeg, left out); 0 when it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A nats-server monitoring endpoint (`/varz`, `/connz`, ...) as JSON; `Null` when it does not
/// answer.
pub fn http_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    let json = body.split_once("\r\n\r\n").map_or("", |x| x.1);
    serde_json::from_str(json).unwrap_or(serde_json::Value::Null)
}

/// One nats-server of the bench, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub monitor: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` servers (a cluster when more than one), each from a config file of its own.
pub fn start_servers(dir: &Path, n: usize, always: bool) -> Vec<Server> {
    let ports: Vec<(u16, u16, u16)> = (0..n)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, _, c)| format!("nats://127.0.0.1:{c}"))
        .collect();
    let bin = ffleet::local::NatsServer::binary();
    ports
        .iter()
        .enumerate()
        .map(|(i, &(port, monitor, cport))| {
            let store = dir.join(format!("n{i}"));
            let sync = if always {
                "\n  sync_interval: always"
            } else {
                ""
            };
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: bench, listen: \"127.0.0.1:{cport}\", routes: [{}] }}",
                    routes.join(", ")
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: n{i}\nlisten: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                 jetstream {{\n  store_dir: \"{}\"{sync}\n}}\n{cluster}\n",
                store.display()
            );
            let file = dir.join(format!("n{i}.conf"));
            std::fs::write(&file, conf).unwrap();
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts");
            Server {
                child,
                port,
                monitor,
            }
        })
        .collect()
}

/// The video packets of `src` (decode order) and its video time base's ticks per second.
pub fn video_packets(src: &Path) -> (Vec<ffleet_runtime::media::probe::Packet>, f64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts,dts,duration,flags:stream=time_base"])
        .args(["-of", "compact=p=0"])
        .arg(src)
        .output()
        .expect("ffprobe runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let tb_line = text
        .lines()
        .find_map(|l| l.strip_prefix("time_base="))
        .expect("time base");
    let (num, den) = tb_line.split_once('/').expect("n/d");
    let ticks_per_sec = den.trim().parse::<f64>().unwrap() / num.parse::<f64>().unwrap();
    let packets = ffleet_runtime::media::probe::parse_packets(
        &text
            .lines()
            .filter(|l| l.starts_with("pts="))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    (packets, ticks_per_sec)
}

/// CPU seconds (user + system) from the `bench:` line an ffmpeg run with `-benchmark` printed.
pub fn benchmark_cpu_secs(stderr: &str) -> f64 {
    let field = |name: &str| -> f64 {
        stderr
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap_or(0.0)
    };
    field("utime=") + field("stime=")
}

/// What one `ffleet transcode --stats` run took.
pub struct Transcoded {
    pub wall_secs: f64,
    /// Every ffmpeg and ffprobe child's CPU.
    pub ffmpeg_cpu_secs: f64,
    /// Units run, the tracks unit included.
    pub units: u64,
}

/// `ffleet transcode SRC -o OUT` sized for `slots`, with `env` set, quiet; panics if it fails.
pub fn transcode(src: &Path, out: &Path, slots: u32, env: &[(&str, &str)]) -> Transcoded {
    let stats = out.with_extension("stats.json");
    let t = std::time::Instant::now();
    let st = Command::new(env!("CARGO_BIN_EXE_ffleet"))
        .args(["transcode", "-q", "--slots", &slots.to_string(), "--stats"])
        .arg(&stats)
        .arg(src)
        .arg("-o")
        .arg(out)
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .status()
        .expect("ffleet runs");
    assert!(st.success(), "ffleet transcode failed");
    let wall_secs = t.elapsed().as_secs_f64();
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    Transcoded {
        wall_secs,
        ffmpeg_cpu_secs: st["ffmpeg_cpu_secs"].as_f64().unwrap(),
        units: st["units_by_capability"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum()),
    }
}
