//! `ffleet-scheduler`: config → telemetry → connect → run until SIGTERM → drain, on the service
//! runtime (`service_main::main`).

fn main() -> anyhow::Result<()> {
    ffleet_runtime::service_main::main(ffleet_scheduler::SERVICE, ffleet_scheduler::run)?;
    Ok(())
}
