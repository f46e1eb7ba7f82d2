//! NVIDIA GPUs through NVML (nvml-wrapper). NVML is loaded at run time (`libnvidia-ml.so`), so
//! a node without the driver, or with the driver and no GPU, simply has no GPUs: that is logged
//! once at start and is never an error. Sampled again for every heartbeat, so the scheduler and
//! `ffleet workers` see live utilisation and encoder sessions.
//!
//! NVML is the hint and the gauge, never the proof: it reports boards without NVENC (A100,
//! H100, H200) like any other, so capabilities rest on test encodes (`capabilities`, `probe`).

use crate::capabilities::NvmlFacts;
use ffleet_runtime::messages::heartbeat::Gpu;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::EncoderType;

pub struct Gpus {
    nvml: Option<Nvml>,
    /// Why NVML is not there (for `ffleet capabilities`).
    why_not: Option<String>,
}

impl Gpus {
    /// Loads NVML if it is there; logs once why not.
    pub fn init() -> Gpus {
        match Nvml::init() {
            Ok(nvml) => {
                let gpus = Gpus {
                    nvml: Some(nvml),
                    why_not: None,
                };
                let found = gpus.sample();
                if found.is_empty() {
                    tracing::info!("nvml loaded but reports no gpu: no gpu capability");
                } else {
                    let names: Vec<&str> = found.iter().map(|g| g.name.as_str()).collect();
                    tracing::info!(gpus = ?names, "nvidia gpus found");
                }
                gpus
            }
            Err(e) => {
                tracing::info!(error = %e, "nvml unavailable (no nvidia driver): no gpu capability");
                Gpus {
                    nvml: None,
                    why_not: Some(e.to_string()),
                }
            }
        }
    }

    /// Every GPU NVML reports now. A GPU whose query fails is skipped (logged at debug):
    /// a flaky sample must not stop heartbeats.
    pub fn sample(&self) -> Vec<Gpu> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let read = || -> Result<Gpu, nvml_wrapper::error::NvmlError> {
                    let d = nvml.device_by_index(i)?;
                    let mem = d.memory_info()?;
                    let util = d.utilization_rates()?;
                    Ok(Gpu {
                        index: i,
                        name: d.name()?,
                        memory_total_bytes: mem.total,
                        memory_used_bytes: mem.used,
                        utilization_pct: util.gpu,
                        // Not every board reports these (e.g. without NVENC): zero then.
                        encoder_utilization_pct: d
                            .encoder_utilization()
                            .map_or(0, |u| u.utilization),
                        encoder_sessions: d.encoder_stats().map_or(0, |s| s.session_count),
                        encoder_capacity_pct: d.encoder_capacity(EncoderType::H264).ok(),
                        decoder_utilization_pct: d
                            .decoder_utilization()
                            .map_or(0, |u| u.utilization),
                        brand: d.brand().map(|b| format!("{b:?}")).unwrap_or_default(),
                    })
                };
                read()
                    .map_err(|e| tracing::debug!(gpu = i, error = %e, "gpu query failed"))
                    .ok()
            })
            .collect()
    }

    /// Driver version and GPUs, for detection; `None` without NVML.
    pub fn facts(&self) -> Option<NvmlFacts> {
        let nvml = self.nvml.as_ref()?;
        Some(NvmlFacts {
            driver: nvml.sys_driver_version().unwrap_or_default(),
            gpus: self.sample(),
        })
    }

    /// Why NVML could not be loaded, if it could not.
    pub fn why_not(&self) -> Option<&str> {
        self.why_not.as_deref()
    }

    pub fn count(&self) -> u32 {
        self.nvml
            .as_ref()
            .and_then(|n| n.device_count().ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_nvidia_has_no_gpus_and_no_error() {
        // On machines with a GPU this finds it; either way nothing panics.
        let g = Gpus::init();
        assert_eq!(g.sample().len() as u32, g.count());
    }
}
