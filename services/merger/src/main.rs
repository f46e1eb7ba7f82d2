//! `ffleet-merger`: config → telemetry → connect → run until SIGTERM → drain, on the service
//! runtime (`service_main::main`).

fn main() -> anyhow::Result<()> {
    ffleet_runtime::service_main::main(ffleet_merger::SERVICE, ffleet_merger::run)?;
    Ok(())
}
