//! How results reach the user: JSON for scripts (`--json`), short aligned text for
//! people. The human forms of the API's objects live here, in one place.

use serde_json::Value;

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Print JSON (scripts) instead of text (people).
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `human(value)` as text.
    pub fn emit(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!("{}", pretty(value));
        } else {
            println!("{}", human(value));
        }
    }
}

/// Pretty JSON.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A string field, or `-`.
pub fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("-")
}

/// `1.2 MB`-style sizes.
pub fn bytes(count: u64) -> String {
    indicatif::HumanBytes(count).to_string()
}

/// A project, several lines.
pub fn project(project: &Value) -> String {
    format!(
        "{}  {}\n  name      {}\n  created   {}",
        text(project, "id"),
        text(project, "status"),
        text(project, "name"),
        text(project, "createdAt"),
    )
}

/// A project, one line (lists).
pub fn project_line(project: &Value) -> String {
    format!(
        "{}  {:<12}  {}",
        text(project, "id"),
        text(project, "status"),
        text(project, "name")
    )
}

/// A job, several lines.
pub fn job(job: &Value) -> String {
    let mut lines = vec![format!("{}  {}", text(job, "id"), text(job, "status"))];
    lines.push(format!("  project   {}", text(job, "projectId")));
    if let Some(external) = job["externalId"].as_str() {
        lines.push(format!("  external  {external}"));
    }
    if let Some(url) = job["webhookUrl"].as_str() {
        lines.push(format!("  webhook   {url}"));
    }
    let files = job["files"].as_array().cloned().unwrap_or_default();
    lines.push(format!("  files     {}", files.len()));
    for file in &files {
        lines.push(format!(
            "    {}  {}  {}  {}",
            text(file, "id"),
            text(file, "fileName"),
            bytes(file["sizeBytes"].as_u64().unwrap_or(0)),
            text(file, "status"),
        ));
    }
    if let Some(pages) = job["pageCount"].as_u64() {
        lines.push(format!(
            "  pages     {pages} ({} succeeded)",
            job["successfulPageCount"].as_u64().unwrap_or(0)
        ));
    }
    lines.push(format!(
        "  credits   reserved {}, debited {}",
        job["billing"]["creditsReserved"].as_i64().unwrap_or(0),
        job["billing"]["creditsDebited"].as_i64().unwrap_or(0)
    ));
    if let Some(reason) = job_error(job) {
        lines.push(format!("  error     {reason}"));
    }
    lines.push(format!("  created   {}", text(job, "createdAt")));
    if let Some(done) = job["completedAt"].as_str() {
        lines.push(format!("  ended     {done}"));
    }
    lines.push(format!("  expires   {}", text(job, "expiresAt")));
    lines.join("\n")
}

/// A job, one line (lists).
pub fn job_line(job: &Value) -> String {
    format!(
        "{}  {:<28}  {}  {}",
        text(job, "id"),
        text(job, "status"),
        text(job, "createdAt"),
        job["externalId"].as_str().unwrap_or("")
    )
}

/// The job's `error` as `code: message`.
pub fn job_error(job: &Value) -> Option<String> {
    let error = job.get("error").filter(|error| !error.is_null())?;
    Some(format!(
        "{}: {}",
        text(error, "code"),
        text(error, "message")
    ))
}

/// One status-history event, one line.
pub fn event_line(event: &Value) -> String {
    format!(
        "{:>3}  {}  {}",
        event["sequence"].as_u64().unwrap_or(0),
        text(event, "occurredAt"),
        text(event, "status")
    )
}

/// A list footer pointing at the next page.
pub fn next_page(body: &Value) -> Option<String> {
    body["nextCursor"]
        .as_str()
        .map(|cursor| format!("more: --cursor {cursor}"))
}

/// One webhook delivery and its attempts.
pub fn delivery(delivery: &Value) -> String {
    let mut lines = vec![format!(
        "{}  {}  seq {}  {:<22}  {}",
        text(delivery, "id"),
        text(delivery, "eventId"),
        delivery["sequence"].as_u64().unwrap_or(0),
        text(delivery, "jobStatus"),
        text(delivery, "state"),
    )];
    for attempt in delivery["attempts"].as_array().into_iter().flatten() {
        let outcome = match (attempt["statusCode"].as_u64(), attempt["error"].as_str()) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(error)) => error.to_owned(),
            (None, None) => "-".to_owned(),
        };
        lines.push(format!(
            "    #{} {} {} {}",
            attempt["number"].as_u64().unwrap_or(0),
            attempt["trigger"].as_str().unwrap_or(""),
            outcome,
            attempt["startedAt"]
                .as_str()
                .or_else(|| attempt["createdAt"].as_str())
                .unwrap_or(""),
        ));
    }
    if let Some(next) = delivery["nextAttemptAt"].as_str() {
        lines.push(format!("    next attempt {next}"));
    }
    lines.join("\n")
}
