//! `plangrep`, the customer command line (SPEC §8). It speaks only the public API
//! (SPEC §4–5): projects, jobs, streamed uploads with progress, watching a job, the whole
//! flow in `run`, the webhook delivery log, and a local verifying webhook receiver.
//!
//! The binary is thin (`main.rs` parses and calls [`run`]); everything here is a library
//! so the pieces are unit-tested without a process boundary. Exit codes are those of
//! [`CliError::exit_code`]: 0 success, 1 API error, 2 usage, 3 a job that ended badly.

#![forbid(unsafe_code)]

use std::process::ExitCode;

pub mod cli;
pub mod client;
pub mod commands;
pub mod error;
pub mod output;
pub mod upload;
pub mod watch;
pub mod webhooks;

pub use cli::Cli;
pub use error::CliError;

use cli::Command;
use client::ApiClient;
use output::Output;

/// Runs a parsed command line; returns the process exit code (errors already printed).
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", with_causes(&error));
            error.exit_code()
        }
    }
}

/// The error and the causes its message does not already say (e.g. "Connection refused"
/// under reqwest's "error sending request").
fn with_causes(error: &CliError) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let out = Output {
        json: cli.global.json,
    };
    let global = &cli.global;
    match cli.command {
        Command::Projects(command) => commands::projects::run(&client(global)?, command, out).await,
        Command::Jobs(command) => commands::jobs::run(&client(global)?, command, out).await,
        Command::Run(args) => commands::run::run(&client(global)?, args, out).await,
        Command::Deliveries(command) => {
            commands::deliveries::run(&client(global)?, command, out).await
        }
        // A local receiver and a local check: no API key needed.
        Command::Webhooks(command) => commands::webhooks::run(command, out).await,
    }
}

/// The API client of the global flags; a missing key is a usage error (exit 2).
fn client(global: &cli::GlobalArgs) -> Result<ApiClient, CliError> {
    let key = global
        .api_key
        .as_deref()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            CliError::Usage("an API key is needed: --api-key or PLANGREP_API_KEY".into())
        })?;
    ApiClient::new(&global.api_url, key)
}
