//! `ffleet-scheduler`: config → telemetry → connect → run until SIGTERM → drain, on the service
//! runtime (`service_main::runtime`).

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let config = ffleet_shared::config::Config::load(None)?;
    let rt = ffleet_shared::service_main::runtime().context("starting the runtime")?;
    rt.block_on(ffleet_shared::service_main::serve(
        config,
        ffleet_scheduler::SERVICE,
        ffleet_scheduler::run,
    ))?;
    Ok(())
}
