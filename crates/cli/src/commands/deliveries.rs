//! `plangrep deliveries list|redeliver`: the webhook delivery log of a job.

use crate::cli::DeliveriesCommand;
use crate::client::ApiClient;
use crate::error::CliError;
use crate::output::{self, Output};

/// Runs one `deliveries` subcommand.
pub async fn run(
    client: &ApiClient,
    command: DeliveriesCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        DeliveriesCommand::List { job } => {
            let body = client
                .get(&format!("/jobs/{job}/webhook-deliveries"))
                .await?;
            out.emit(&body, |body| {
                let lines: Vec<String> = body["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(output::delivery)
                    .collect();
                if lines.is_empty() {
                    "no deliveries".to_owned()
                } else {
                    lines.join("\n")
                }
            });
        }
        DeliveriesCommand::Redeliver { delivery } => {
            let body = client
                .post(&format!("/webhook-deliveries/{delivery}/redeliver"), None)
                .await?;
            out.emit(&body, |body| {
                format!("redelivery queued\n{}", output::delivery(&body["delivery"]))
            });
        }
    }
    Ok(())
}
