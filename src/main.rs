//! `ffleet`: parse the command line, run it, map the result to an exit code.

use clap::Parser;
use ffleet::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One service per process runs on the service runtime, as its own binary would; the
    // commands that run a whole fleet or a client keep a worker per core.
    let rt = match cli.command {
        Command::Run { .. } => ffleet_shared::service_main::runtime(),
        _ => tokio::runtime::Runtime::new(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ffleet: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(ffleet::cli::run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("ffleet: {e:#}");
            ExitCode::from(2)
        }
    }
}
