//! The child side of the control-plane benchmark: this bench binary re-run as one service
//! process (`__serve <service> [node]`), so each service's CPU is its own process's. The real
//! service libraries run here with the bench's media stand-ins passed through their `run_with`
//! (no job request or configuration can select them):
//! - encoder: an executor that writes a few bytes instead of running ffmpeg, and records the
//!   dispatch latency (task stored in its queue → executor started);
//! - splitter: the real ffprobe + ffmpeg split for the first job, then, for each job, the same
//!   plan with tiny cut files written and committed through the real storage;
//! - merger: no concat, mux or verify: the output facts come from the collected units (the
//!   reads of the unit records that pick each result stay).
//!
//! The parent talks over stdin/stdout: `dump` answers one JSON line (operation counts, dispatch
//! latencies since the last dump); end of stdin stops the service.

use ffleet_encoder::encode::{EncodeError, Encoded, Unit};
use ffleet_runtime::JobId;
use ffleet_runtime::config::Config;
use ffleet_runtime::media::progress::ProgressBlock;
use ffleet_runtime::messages::records::{Container, OutputInfo, SegmentPlan, SourceInfo};
use ffleet_runtime::messages::{Heartbeat, JobRecord};
use ffleet_runtime::runtime::Ctx;
use ffleet_runtime::{Capability, NodeId, storage};
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Dispatch latencies (ms) recorded by this process's executor since the last dump.
static DISPATCH: Mutex<Vec<f64>> = Mutex::new(Vec::new());

struct NoMedia {
    /// Milliseconds each unit takes (0: returns at once); `u64::MAX`: never finishes.
    hold_ms: u64,
}

#[async_trait::async_trait]
impl ffleet_encoder::Executor for NoMedia {
    async fn run(
        &self,
        _cfg: &Config,
        unit: Unit<'_>,
        _input: &Path,
        output: &Path,
        cancel: &CancellationToken,
        _on_progress: &mut (dyn for<'p> FnMut(&'p ProgressBlock) + Send),
    ) -> Result<Encoded, EncodeError> {
        if let Some(r) = unit.released {
            let ms = (time::OffsetDateTime::now_utc() - r).as_seconds_f64() * 1000.0;
            DISPATCH.lock().unwrap().push(ms);
        }
        if self.hold_ms == u64::MAX {
            println!("holding");
            cancel.cancelled().await;
            return Err(EncodeError::Cancelled);
        }
        if self.hold_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.hold_ms)).await;
        }
        tokio::fs::write(output, b"bench")
            .await
            .map_err(|e| EncodeError::NodeFault(e.to_string()))?;
        Ok(Encoded {
            frames: unit.task.expected_frames.unwrap_or(0),
            secs: 0.0,
            decode_errors: 0,
            decode_failures: 0,
        })
    }
}

/// The real split once; its plan reused for every later job, with tiny cut files stored.
struct PlanOnce {
    first: tokio::sync::Mutex<
        Option<(
            SourceInfo,
            ffleet_runtime::media::tracks::TrackChoice,
            Vec<SegmentPlan>,
        )>,
    >,
}

#[async_trait::async_trait]
impl ffleet_splitter::media::Media for PlanOnce {
    async fn prepare(
        &self,
        ctx: &Ctx,
        job: &JobId,
        source: &Path,
        container: Container,
        profile: &str,
        sizing: ffleet_splitter::sizing::Sizing,
    ) -> Result<ffleet_splitter::media::Prepared, ffleet_splitter::split::SplitError> {
        use ffleet_splitter::media::{Ffmpeg, Prepared};
        use ffleet_splitter::split::SplitError;
        let mut first = self.first.lock().await;
        if first.is_none() {
            let p = Ffmpeg
                .prepare(ctx, job, source, container, profile, sizing)
                .await?;
            *first = Some((p.info.clone(), p.tracks.clone(), p.segments.clone()));
            return Ok(p);
        }
        let (info, tracks, template) = first.clone().expect("set above");
        drop(first);
        let prefix = storage::keys::cuts_prefix(job);
        let retry = |e: ffleet_runtime::storage::StorageError| SplitError::Retry(e.into());
        let staging = ctx.storage.staging_path(&prefix).await.map_err(retry)?;
        let io = |e: std::io::Error| SplitError::Retry(e.into());
        tokio::fs::create_dir_all(&staging).await.map_err(io)?;
        let mut segments = template;
        for s in &mut segments {
            let name = ffleet_runtime::media::args::cut_name(s.index);
            tokio::fs::write(staging.join(&name), b"cut")
                .await
                .map_err(io)?;
            s.source_key = storage::keys::cut(job, &name);
        }
        let stored = ctx.storage.commit(&staging, &prefix).await.map_err(retry)?;
        Ok(Prepared {
            info,
            tracks,
            extras: false,
            segments,
            bytes_moved: stored.bytes_moved,
        })
    }
}

struct NoMerge;

#[async_trait::async_trait]
impl ffleet_merger::media::Media for NoMerge {
    async fn merge(
        &self,
        ctx: &Ctx,
        rec: &JobRecord,
    ) -> Result<ffleet_merger::media::Merged, ffleet_merger::merge::MergeError> {
        // The real merge's reads of every unit's record (which result of which attempt to
        // take) are control-plane work: they stay.
        ffleet_merger::merge::results(ctx, rec).await?;
        Ok(ffleet_merger::media::Merged {
            output: OutputInfo {
                uri: rec.request.output.clone(),
                frames: rec.frames_collected,
                duration_secs: rec.source.as_ref().map_or(0.0, |s| s.video.duration_secs()),
                bytes: 0,
                wall_secs: ffleet_runtime::time::age_secs(&rec.accepted_at).unwrap_or(0.0),
                decode_errors: 0,
                warnings: Vec::new(),
                media_bytes: 0,
                digest: None,
            },
            placed: None,
        })
    }
}

/// Writes `n` heartbeats a second per simulated node: busy, holding nothing.
async fn sim_nodes(ctx: Ctx, n: usize, stop: CancellationToken) {
    let beat = |i: usize| Heartbeat {
        slots_busy: 1,
        ..Heartbeat::new(
            NodeId::new(format!("sim-{i:05}")).unwrap(),
            vec![Capability::cpu()],
            1,
        )
    };
    // Spread over the second, as independent nodes would be.
    let gap = Duration::from_secs(1) / n.max(1) as u32;
    let mut tick = tokio::time::interval(gap);
    let mut i = 0;
    while !stop.is_cancelled() {
        tick.tick().await;
        let hb = beat(i % n);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ctx.workers.put(hb.node_id.as_str(), &hb).await;
        });
        i += 1;
    }
}

pub fn main(args: &[String]) {
    let svc = args[0].clone();
    // The runtime a service binary runs on, so the bench measures what ships.
    let rt = ffleet_runtime::service_main::runtime().expect("runtime");
    rt.block_on(async move {
        let config = Config::load(None).expect("config");
        let name: &'static str = match svc.as_str() {
            "splitter" => ffleet_splitter::SERVICE,
            "scheduler" => ffleet_scheduler::SERVICE,
            "merger" => ffleet_merger::SERVICE,
            _ => ffleet_encoder::SERVICE,
        };
        let ctx = Ctx::connect(Arc::new(config), name, true)
            .await
            .expect("connects");
        let stop = CancellationToken::new();
        let s = stop.clone();
        let served = tokio::spawn(async move {
            match svc.as_str() {
                "splitter" => {
                    let m = Arc::new(PlanOnce {
                        first: Default::default(),
                    });
                    ffleet_splitter::run_with(ctx, m, s)
                        .await
                        .expect("splitter");
                }
                "scheduler" => ffleet_scheduler::run(ctx, s).await.expect("scheduler"),
                "merger" => ffleet_merger::run_with(ctx, Arc::new(NoMerge), s)
                    .await
                    .expect("merger"),
                "sim-nodes" => {
                    let n = super::common::env_or("FFLEET_BENCH_NODES", 1000);
                    sim_nodes(ctx, n, s).await
                }
                _ => {
                    let id = std::env::var("FFLEET_ENCODER__NODE_ID").unwrap();
                    let slots = super::common::env_or("FFLEET_BENCH_SLOTS", 16u32);
                    let node = ffleet_encoder::Node {
                        id: NodeId::new(id).unwrap(),
                        capabilities: vec![Capability::cpu()],
                        slots,
                        gpu_slots: 0,
                        encoders: Vec::new(),
                        gpus: Arc::new(ffleet_encoder::Gpus::init()),
                        gpu_class: None,
                        proofs: Vec::new(),
                    };
                    let hold_ms = super::common::env_or("FFLEET_BENCH_HOLD_MS", 0u64);
                    ffleet_encoder::run_with(ctx, node, Arc::new(NoMedia { hold_ms }), s)
                        .await
                        .expect("encoder")
                }
            }
        });
        // Commands from the parent on a blocking thread; end of input stops the service.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(cmd) = rx.recv().await {
            if cmd == "dump" {
                let dispatch = std::mem::take(&mut *DISPATCH.lock().unwrap());
                let out = serde_json::json!({
                    "ops": ffleet_runtime::nats::ops::snapshot(),
                    "dispatch_ms": dispatch,
                });
                println!("{out}");
            }
        }
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
    });
}
