//! `ffleet-splitter`: config → telemetry → connect → run until SIGTERM → drain.

use anyhow::Context;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ffleet_shared::config::Config::load(None)?;
    config.validate()?;
    let _log = ffleet_shared::telemetry::init(
        &config.log,
        ffleet_shared::telemetry::Role::Service(ffleet_splitter::SERVICE),
    );
    let ctx =
        ffleet_shared::runtime::Ctx::connect(Arc::new(config), ffleet_splitter::SERVICE, true)
            .await
            .context("connecting")?;
    ffleet_splitter::run(ctx, ffleet_shared::shutdown::on_signals()).await?;
    Ok(())
}
