//! `plangrep projects create|list|get`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{PageArgs, ProjectsCommand};
use crate::client::ApiClient;
use crate::error::CliError;
use crate::output::{self, Output};

/// Runs one `projects` subcommand.
pub async fn run(
    client: &ApiClient,
    command: ProjectsCommand,
    out: Output,
) -> Result<(), CliError> {
    match command {
        ProjectsCommand::Create { name, wait } => {
            let mut body = client
                .post("/projects", Some(&json!({ "name": name })))
                .await?;
            if wait {
                let id = output::text(&body["project"], "id").to_owned();
                body = wait_until_settled(client, &id).await?;
            }
            out.emit(&body, |body| output::project(&body["project"]));
        }
        ProjectsCommand::List(page) => {
            let body = client.get(&list_path("/projects", &page, &[])).await?;
            out.emit(&body, |body| {
                list_text(body, "projects", output::project_line)
            });
        }
        ProjectsCommand::Get { project } => {
            let body = client.get(&format!("/projects/{project}")).await?;
            out.emit(&body, |body| output::project(&body["project"]));
        }
    }
    Ok(())
}

/// Polls the project until it is no longer `provisioning`; returns `{project}`.
async fn wait_until_settled(client: &ApiClient, id: &str) -> Result<Value, CliError> {
    let mut delay = Duration::from_millis(100);
    loop {
        let (body, limits) = client.get_with_limits(&format!("/projects/{id}")).await?;
        if body["project"]["status"] != "provisioning" {
            return Ok(body);
        }
        tokio::time::sleep(delay.max(limits.pause())).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// `path?limit=…&cursor=…&extra…`, query values percent-encoded.
pub fn list_path(path: &str, page: &PageArgs, extra: &[(&str, Option<&str>)]) -> String {
    let limit = page.limit.map(|limit| limit.to_string());
    let pairs: Vec<String> = [
        ("limit", limit.as_deref()),
        ("cursor", page.cursor.as_deref()),
    ]
    .iter()
    .chain(extra)
    .filter_map(|(name, value)| value.map(|value| format!("{name}={}", encode(value))))
    .collect();
    if pairs.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

/// The lines of a paginated list, plus where the next page starts.
pub fn list_text(body: &Value, field: &str, line: fn(&Value) -> String) -> String {
    let mut lines: Vec<String> = body[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(line)
        .collect();
    if lines.is_empty() {
        lines.push(format!("no {field}"));
    }
    lines.extend(output::next_page(body));
    lines.join("\n")
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_are_encoded_and_skip_missing_values() {
        let page = PageArgs {
            limit: Some(5),
            cursor: None,
        };
        assert_eq!(
            list_path(
                "/jobs",
                &page,
                &[("externalId", Some("a b&c")), ("status", None)]
            ),
            "/jobs?limit=5&externalId=a%20b%26c"
        );
        let none = PageArgs {
            limit: None,
            cursor: None,
        };
        assert_eq!(list_path("/projects", &none, &[]), "/projects");
    }
}
