//! `plangrep run`: the whole product in one command. Create a job, wait for its storage,
//! upload every file with progress, complete, watch to the end, and summarise the result
//! (pages, drawings, sheet numbers, credits).

use serde_json::{Value, json};

use crate::cli::{CreateJobArgs, RunArgs};
use crate::client::ApiClient;
use crate::commands::jobs;
use crate::error::CliError;
use crate::output::{self, Output};
use crate::{upload, watch};

/// Runs `plangrep run`.
pub async fn run(client: &ApiClient, args: RunArgs, out: Output) -> Result<(), CliError> {
    let create = CreateJobArgs {
        project: args.project,
        external_id: args.external_id,
        webhook_url: args.webhook_url,
        idempotency_key: None,
    };
    let created = jobs::create(client, &create).await?;
    let job_id = output::text(&created["job"], "id").to_owned();
    if !out.json {
        println!("created {job_id} in {}", create.project);
        if let Some(secret) = created["webhookSigningSecret"].as_str() {
            println!("webhook signing secret (shown only now): {secret}");
        }
    }
    upload::wait_until_accepting_files(client, &job_id).await?;
    upload::upload_files(client, &job_id, &args.files, args.classification, out).await?;
    jobs::complete(client, &job_id).await?;
    // Under --json the watch prints nothing: the summary below is the one JSON document.
    let watched = watch::watch(client, &job_id, out, !out.json).await;
    let job = match watched {
        Ok(job) => job,
        Err(error) => {
            if out.json {
                let job = client.get(&format!("/jobs/{job_id}")).await?;
                println!(
                    "{}",
                    output::pretty(&json!({ "job": job["job"], "result": null }))
                );
            }
            return Err(error);
        }
    };
    let result = client.get(&format!("/jobs/{job_id}/result")).await?;
    if out.json {
        println!(
            "{}",
            output::pretty(&json!({ "job": job, "result": result }))
        );
    } else {
        println!("{}", summary(&job, &result));
    }
    Ok(())
}

/// The closing summary of `run`.
pub fn summary(job: &Value, result: &Value) -> String {
    let usage = &result["usage"];
    let number = |field: &str| usage[field].as_u64().unwrap_or(0);
    let sheets: Vec<String> = result["documents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|document| document["pages"].as_array().into_iter().flatten())
        .filter_map(|page| {
            let number = page["sheetNumber"].as_str()?;
            Some(match page["sheetTitle"].as_str() {
                Some(title) => format!("{number} {title}"),
                None => number.to_owned(),
            })
        })
        .collect();
    let errors = result["errors"].as_array().map_or(0, Vec::len);
    let mut lines = vec![
        format!(
            "{}  {}",
            output::text(job, "id"),
            output::text(job, "status")
        ),
        format!(
            "  pages     {} ({} succeeded)",
            number("pageCount"),
            number("successfulPageCount")
        ),
        format!(
            "  drawings  {}  documents {}",
            number("drawingPageCount"),
            number("documentPageCount")
        ),
        format!(
            "  sheets    {}",
            if sheets.is_empty() {
                "-".to_owned()
            } else {
                sheets.join(", ")
            }
        ),
        format!("  credits   {} debited", number("creditsDebited")),
    ];
    if errors > 0 {
        lines.push(format!(
            "  errors    {errors} (plangrep jobs result {})",
            output::text(job, "id")
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_pages_drawings_sheets_and_credits() {
        let job = json!({ "id": "job_1", "status": "completed" });
        let result = json!({
            "usage": { "pageCount": 3, "successfulPageCount": 3, "drawingPageCount": 2,
                       "documentPageCount": 1, "creditsDebited": 21 },
            "documents": [{ "pages": [
                { "pageNumber": 1, "sheetNumber": "A1.01", "sheetTitle": "FIRST FLOOR PLAN" },
                { "pageNumber": 2, "sheetNumber": "S-201" },
                { "pageNumber": 3 }
            ]}],
            "errors": []
        });
        let text = summary(&job, &result);
        assert!(text.contains("pages     3 (3 succeeded)"), "{text}");
        assert!(text.contains("drawings  2  documents 1"), "{text}");
        assert!(text.contains("A1.01 FIRST FLOOR PLAN, S-201"), "{text}");
        assert!(text.contains("credits   21 debited"), "{text}");
    }
}
