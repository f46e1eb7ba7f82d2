//! `ffleet`: parse the command line, run it, map the result to an exit code.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ffleet::cli::Cli::parse();
    match ffleet::cli::run(cli).await {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("ffleet: {}", ffleet::report::describe(&e));
            ExitCode::from(2)
        }
    }
}
