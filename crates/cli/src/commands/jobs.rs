//! `plangrep jobs …`: create, read, list, cancel, resume, rotate-secret, events, complete,
//! watch, result and upload.

use serde_json::{Value, json};

use crate::cli::{CreateJobArgs, JobsCommand, UploadArgs};
use crate::client::{ApiClient, idempotency_key};
use crate::commands::projects::{list_path, list_text};
use crate::error::CliError;
use crate::output::{self, Output};
use crate::{upload, watch};

/// Runs one `jobs` subcommand.
pub async fn run(client: &ApiClient, command: JobsCommand, out: Output) -> Result<(), CliError> {
    match command {
        JobsCommand::Create(args) => {
            let body = create(client, &args).await?;
            out.emit(&body, created_text);
        }
        JobsCommand::Get { job } => {
            let body = client.get(&format!("/jobs/{job}")).await?;
            out.emit(&body, |body| output::job(&body["job"]));
        }
        JobsCommand::List {
            project,
            status,
            external_id,
            page,
        } => {
            let path = list_path(
                &format!("/projects/{project}/jobs"),
                &page,
                &[
                    ("status", status.as_deref()),
                    ("externalId", external_id.as_deref()),
                ],
            );
            let body = client.get(&path).await?;
            out.emit(&body, |body| list_text(body, "jobs", output::job_line));
        }
        JobsCommand::Cancel { job } => {
            let body = client.post(&format!("/jobs/{job}/cancel"), None).await?;
            out.emit(&body, |body| output::job(&body["job"]));
        }
        JobsCommand::Resume { job } => {
            let body = client.post(&format!("/jobs/{job}/resume"), None).await?;
            out.emit(&body, |body| output::job(&body["job"]));
        }
        JobsCommand::RotateSecret { job } => {
            let path = format!("/jobs/{job}/webhook-secret/rotate");
            let body = client.post(&path, None).await?;
            out.emit(&body, rotated_text);
        }
        JobsCommand::Complete { job } => {
            let body = complete(client, &job).await?;
            out.emit(&body, |body| output::job(&body["job"]));
        }
        JobsCommand::Events { job } => {
            let body = client.get(&format!("/jobs/{job}/events")).await?;
            out.emit(&body, |body| {
                body["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(output::event_line)
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        JobsCommand::Watch { job } => {
            let done = watch::watch(client, &job, out, true).await?;
            if !out.json {
                println!("{}", output::job(&done));
            }
        }
        JobsCommand::Result { job, output: file } => {
            let result = client.get(&format!("/jobs/{job}/result")).await?;
            let text = format!("{}\n", output::pretty(&result));
            match file {
                Some(path) => {
                    tokio::fs::write(&path, text)
                        .await
                        .map_err(|e| CliError::io(format!("writing {}", path.display()), e))?;
                    if !out.json {
                        println!("saved the result of {job} to {}", path.display());
                    }
                }
                None => print!("{text}"),
            }
        }
        JobsCommand::Upload(args) => upload_command(client, args, out).await?,
    }
    Ok(())
}

/// `POST /projects/{p}/jobs` under one idempotency key (so a retry cannot create two jobs
/// nor lose the signing secret).
pub async fn create(client: &ApiClient, args: &CreateJobArgs) -> Result<Value, CliError> {
    let mut body = json!({});
    if let Some(external) = &args.external_id {
        body["externalId"] = json!(external);
    }
    if let Some(url) = &args.webhook_url {
        body["webhookUrl"] = json!(url);
    }
    let key = args.idempotency_key.clone().unwrap_or_else(idempotency_key);
    client
        .post_with_key(
            &format!("/projects/{}/jobs", args.project),
            Some(&body),
            &key,
        )
        .await
}

/// The human form of a create answer: the job, and the secret when there is one.
pub fn created_text(body: &Value) -> String {
    let mut text = output::job(&body["job"]);
    if let Some(secret) = body["webhookSigningSecret"].as_str() {
        text.push_str(&format!(
            "\n  secret    {secret}\n            (shown only now: keep it to verify webhooks)"
        ));
    }
    text
}

/// The human form of a rotation: the new secret and when the old one stops signing.
fn rotated_text(body: &Value) -> String {
    format!(
        "secret    {}\n          (shown only now: keep it to verify webhooks)\nprevious  signs beside it until {}",
        output::text(body, "webhookSigningSecret"),
        output::text(body, "previousSecretExpiresAt")
    )
}

/// `POST /jobs/{id}/uploads/complete`.
pub async fn complete(client: &ApiClient, job: &str) -> Result<Value, CliError> {
    client
        .post(&format!("/jobs/{job}/uploads/complete"), None)
        .await
}

async fn upload_command(client: &ApiClient, args: UploadArgs, out: Output) -> Result<(), CliError> {
    upload::wait_until_accepting_files(client, &args.job).await?;
    let uploads =
        upload::upload_files(client, &args.job, &args.files, args.classification, out).await?;
    let completed = if args.complete {
        let body = complete(client, &args.job).await?;
        if !out.json {
            println!(
                "uploads complete: {} is {}",
                args.job,
                output::text(&body["job"], "status")
            );
        }
        Some(body["job"].clone())
    } else {
        None
    };
    if out.json {
        let mut body = json!({ "uploads": uploads });
        if let Some(job) = completed {
            body["job"] = job;
        }
        println!("{}", output::pretty(&body));
    }
    Ok(())
}
