//! `ffleet capabilities`: what an encoder started on this machine would offer, and why. Runs
//! the same detection as the encoder (NVML readings, `ffmpeg -encoders`, the start-up test
//! encodes and the NVDEC test decode, each with its outcome) without connecting to NATS, so it
//! answers on a machine with no fleet at all. `scripts/gpu-check.sh` prints it.

use super::Cli;
use anyhow::Result;
use ffleet_encoder::{Gpus, capabilities::NvmlFacts, probe};
use ffleet_runtime::messages::heartbeat::Proof;

#[derive(Debug, clap::Args)]
pub struct CapabilitiesArgs {
    /// One JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cli: &Cli, args: &CapabilitiesArgs) -> Result<i32> {
    let cfg = cli.load_config()?;
    crate::settings::validate(&cfg)?;
    let gpus = Gpus::init();
    let settings = ffleet_encoder::EncoderConfig::of(&cfg)?;
    let (facts, d) = probe::detect(&cfg, &settings, &gpus)
        .await
        .map_err(|e| anyhow::anyhow!("encoder.capabilities: {e}"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let slots = settings.slots.unwrap_or(cores);
    let gpu_slots =
        ffleet_encoder::gpu_slots(&settings, &d.capabilities, facts.nvml.as_ref(), slots);
    let caps: Vec<String> = d.capabilities.iter().map(ToString::to_string).collect();
    if args.json {
        let v = serde_json::json!({
            "nvml": facts.nvml.as_ref().map(|n| serde_json::json!({"driver": n.driver, "gpus": n.gpus})),
            "nvml_error": gpus.why_not(),
            "gpu_class": d.gpu_class,
            "proofs": d.proofs,
            "capabilities": caps,
            "not_offered": d.rejected.iter().map(|(c, why)| serde_json::json!({"capability": c, "why": why})).collect::<Vec<_>>(),
            "slots": slots,
            "gpu_slots": gpu_slots,
            "encoders": d.encoders,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    print_nvml(facts.nvml.as_ref(), gpus.why_not());
    let class = d.gpu_class.as_ref().map_or("-".into(), ToString::to_string);
    println!("{:<14}{class}", "gpu class:");
    println!("{:<14}{}", "ffmpeg has:", d.encoders.join(", "));
    print_proofs(&d.proofs);
    println!("{:<14}{}", "capabilities:", caps.join(", "));
    for (cap, why) in &d.rejected {
        println!("{:<14}{cap} ({why})", "not offered:");
    }
    println!("{:<14}{slots} cpu, {gpu_slots} gpu sessions", "slots:");
    Ok(0)
}

fn print_nvml(nvml: Option<&NvmlFacts>, why_not: Option<&str>) {
    let Some(n) = nvml else {
        let why = why_not.unwrap_or("not loaded");
        println!("{:<14}unavailable: no NVIDIA GPU ({why})", "nvml:");
        return;
    };
    println!(
        "{:<14}driver {}, {} gpu(s)",
        "nvml:",
        n.driver,
        n.gpus.len()
    );
    for g in &n.gpus {
        let capacity = g
            .encoder_capacity_pct
            .map_or("-".into(), |c| format!("{c}%"));
        println!(
            "  gpu{} {} ({}): {}% busy, memory {}/{} MiB, nvenc {}% with {} sessions, \
             nvenc capacity {capacity}, nvdec {}%",
            g.index,
            g.name,
            g.brand,
            g.utilization_pct,
            g.memory_used_bytes >> 20,
            g.memory_total_bytes >> 20,
            g.encoder_utilization_pct,
            g.encoder_sessions,
            g.decoder_utilization_pct
        );
    }
}

fn print_proofs(proofs: &[Proof]) {
    if proofs.is_empty() {
        println!("{:<14}none (no accelerator candidate, no GPU)", "tests:");
        return;
    }
    println!("{:<8} {:<14} {:<8} detail", "test", "name", "outcome");
    for p in proofs {
        let outcome = if p.ok { "ok" } else { "failed" };
        println!("{:<8} {:<14} {:<8} {}", p.kind, p.name, outcome, p.detail);
    }
}
