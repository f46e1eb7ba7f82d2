//! `ffleet-encoder`: config → telemetry → connect → run until SIGTERM → drain, on the service
//! runtime (`service_main::main`).

fn main() -> anyhow::Result<()> {
    ffleet_runtime::service_main::main(ffleet_encoder::SERVICE, ffleet_encoder::start)?;
    Ok(())
}
