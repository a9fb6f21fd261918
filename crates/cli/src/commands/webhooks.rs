//! `plangrep webhooks listen|verify`.

use std::io::Read;

use crate::cli::{VerifyArgs, WebhooksCommand};
use crate::error::CliError;
use crate::output::Output;
use crate::webhooks::raw::RawRequest;
use crate::webhooks::{inspect, listen, now_unix};

/// Runs one `webhooks` subcommand (neither needs an API key).
pub async fn run(command: WebhooksCommand, out: Output) -> Result<(), CliError> {
    match command {
        WebhooksCommand::Listen(args) => listen::listen(args, out).await,
        WebhooksCommand::Verify(args) => verify_stdin(args, out),
    }
}

/// Verifies the saved request on stdin; an invalid one is an error (exit 1).
fn verify_stdin(args: VerifyArgs, out: Output) -> Result<(), CliError> {
    let mut saved = Vec::new();
    std::io::stdin()
        .read_to_end(&mut saved)
        .map_err(|e| CliError::io("reading the request from stdin", e))?;
    let request = RawRequest::parse(&saved)
        .map_err(|problem| CliError::InvalidSignature(format!("unreadable request: {problem}")))?;
    let now = (!args.ignore_timestamp).then(now_unix);
    let seen = inspect(
        &args.secret,
        |name| request.header(name),
        &request.body,
        now,
        args.tolerance,
    );
    if out.json {
        println!("{}", seen.to_json());
    } else {
        println!("{}", seen.line());
    }
    seen.verdict.map_err(CliError::InvalidSignature)
}
