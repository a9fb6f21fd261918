//! The `plangrep` binary: parse the command line (usage errors exit 2, by clap), run it
//! on a Tokio runtime, exit with the command's code.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use plangrep_cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(plangrep_cli::run(cli))
}
