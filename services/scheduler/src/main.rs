//! `ffleet-scheduler`: config → telemetry → connect → run until SIGTERM → drain.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ffleet_shared::config::Config::load(None)?;
    ffleet_shared::service_main::serve(config, ffleet_scheduler::SERVICE, ffleet_scheduler::run)
        .await?;
    Ok(())
}
