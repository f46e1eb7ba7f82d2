//! NVIDIA GPUs through NVML (nvml-wrapper). NVML is loaded at run time (`libnvidia-ml.so`), so
//! a node without the driver, or with the driver and no GPU, simply has no GPUs: that is logged
//! once at start and is never an error. Sampled again for every heartbeat, so the scheduler and
//! `ffleet workers` see live utilisation and encoder sessions.

use ffleet_shared::messages::heartbeat::Gpu;
use nvml_wrapper::Nvml;

pub struct Gpus {
    nvml: Option<Nvml>,
}

impl Gpus {
    /// Loads NVML if it is there; logs once why not.
    pub fn init() -> Gpus {
        match Nvml::init() {
            Ok(nvml) => {
                let gpus = Gpus { nvml: Some(nvml) };
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
                Gpus { nvml: None }
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
                    })
                };
                read()
                    .map_err(|e| tracing::debug!(gpu = i, error = %e, "gpu query failed"))
                    .ok()
            })
            .collect()
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
