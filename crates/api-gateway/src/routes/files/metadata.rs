//! The `metadata` part of an upload: parsed strictly (unknown fields refused) and
//! validated into [`FileEntry`]s, with every problem named in `details`
//! (`metadata.files[1].sha256`, …) so a client can fix all of them at once.

use std::collections::HashSet;

use plangrep_core::ErrorCode;
use serde::Deserialize;

use crate::error::{ApiError, Detail};

/// The classifications a file may declare (SPEC §4); `other` when absent.
pub const CLASSIFICATIONS: [&str; 6] = [
    "plans",
    "specifications",
    "documents",
    "addenda",
    "mixed",
    "other",
];

/// The longest file name, content type, part name or flow id accepted.
const MAX_TEXT: usize = 255;

/// The JSON of the `metadata` part.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UploadMetadata {
    /// The client's own id of this upload flow (logged, not stored).
    #[schema(max_length = 255)]
    client_upload_flow_id: Option<String>,
    /// One entry per file part, in the order the parts follow.
    #[schema(min_items = 1, max_items = 100)]
    files: Vec<FileMetadata>,
}

/// One file of the upload.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileMetadata {
    /// The name of the multipart part carrying the bytes (`file0`, `file1`, …).
    #[schema(min_length = 1, max_length = 255)]
    part_name: String,
    /// The file's name as the customer knows it.
    #[schema(min_length = 1, max_length = 255)]
    file_name: String,
    /// The declared media type, recorded as given (normally `application/pdf`).
    #[schema(min_length = 1, max_length = 255)]
    content_type: String,
    /// `plans|specifications|documents|addenda|mixed|other` (default `other`).
    #[schema(value_type = Option<String>, pattern = "^(plans|specifications|documents|addenda|mixed|other)$")]
    classification: Option<String>,
    /// Lowercase or uppercase hex SHA-256 of the bytes; verified when given.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    sha256: Option<String>,
}

/// A validated file entry.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub part_name: String,
    pub file_name: String,
    pub content_type: String,
    pub classification: String,
    /// Lowercase hex, when declared.
    pub sha256: Option<String>,
}

/// The validated metadata.
#[derive(Debug)]
pub struct Metadata {
    /// Logged with the request.
    pub client_upload_flow_id: Option<String>,
    pub files: Vec<FileEntry>,
}

/// 400 `invalid_request` with one detail per `(field, issue)`.
pub fn invalid_fields(fields: Vec<(String, String)>) -> ApiError {
    let message = match fields.as_slice() {
        [(field, issue)] => format!("{field}: {issue}"),
        _ => "some fields are invalid".to_owned(),
    };
    ApiError {
        code: ErrorCode::InvalidRequest,
        message,
        details: fields
            .into_iter()
            .map(|(field, issue)| Detail { field, issue })
            .collect(),
        replayed: false,
    }
}

/// Parses and validates the bytes of the `metadata` part.
pub fn parse_metadata(bytes: &[u8]) -> Result<Metadata, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        invalid_fields(vec![(
            "metadata".to_owned(),
            format!("not valid JSON ({})", strip_position(&error.to_string())),
        )])
    })?;
    if !value.is_object() {
        return Err(invalid_fields(vec![(
            "metadata".to_owned(),
            "must be a JSON object".to_owned(),
        )]));
    }
    let raw: UploadMetadata = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let issue = strip_position(&error.into_inner().to_string());
        // The path names the offending key itself, unknown keys included.
        let field = if path == "." {
            "metadata".to_owned()
        } else {
            format!("metadata.{path}")
        };
        invalid_fields(vec![(field, issue)])
    })?;

    let mut problems: Vec<(String, String)> = Vec::new();
    if let Some(flow) = &raw.client_upload_flow_id
        && let Some(issue) = text_issue(flow)
    {
        problems.push(("metadata.clientUploadFlowId".to_owned(), issue));
    }
    if raw.files.is_empty() {
        problems.push((
            "metadata.files".to_owned(),
            "must list at least one file".to_owned(),
        ));
    }
    let mut part_names = HashSet::new();
    let mut files = Vec::with_capacity(raw.files.len());
    for (index, file) in raw.files.into_iter().enumerate() {
        let field = |name: &str| format!("metadata.files[{index}].{name}");
        if let Some(issue) = text_issue(&file.part_name) {
            problems.push((field("partName"), issue));
        } else if file.part_name == "metadata" {
            problems.push((
                field("partName"),
                "metadata names the metadata part".to_owned(),
            ));
        } else if !part_names.insert(file.part_name.clone()) {
            problems.push((
                field("partName"),
                "another file uses this partName".to_owned(),
            ));
        }
        if let Some(issue) = text_issue(&file.file_name) {
            problems.push((field("fileName"), issue));
        }
        if let Some(issue) = text_issue(&file.content_type) {
            problems.push((field("contentType"), issue));
        }
        let classification = file.classification.unwrap_or_else(|| "other".to_owned());
        if !CLASSIFICATIONS.contains(&classification.as_str()) {
            problems.push((
                field("classification"),
                format!("must be one of {}", CLASSIFICATIONS.join(", ")),
            ));
        }
        let sha256 = file.sha256.map(|s| s.to_ascii_lowercase());
        if sha256
            .as_ref()
            .is_some_and(|s| s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            problems.push((field("sha256"), "must be 64 hex characters".to_owned()));
        }
        files.push(FileEntry {
            part_name: file.part_name,
            file_name: file.file_name,
            content_type: file.content_type,
            classification,
            sha256,
        });
    }
    if !problems.is_empty() {
        return Err(invalid_fields(problems));
    }
    Ok(Metadata {
        client_upload_flow_id: raw.client_upload_flow_id,
        files,
    })
}

/// Why `text` is not an acceptable name: empty, longer than 255 characters, or with
/// control characters.
fn text_issue(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        Some("must not be empty".to_owned())
    } else if text.chars().count() > MAX_TEXT {
        Some(format!("must have at most {MAX_TEXT} characters"))
    } else if text.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: ApiError) -> Vec<String> {
        error.details.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn valid_metadata_gets_defaults_and_lowercase_checksums() {
        let metadata = parse_metadata(
            br#"{"clientUploadFlowId": "flow-1", "files": [
                {"partName": "file0", "fileName": "A-101.pdf", "contentType": "application/pdf"},
                {"partName": "file1", "fileName": "Specs.pdf", "contentType": "application/pdf",
                 "classification": "specifications", "sha256": "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(metadata.client_upload_flow_id.as_deref(), Some("flow-1"));
        assert_eq!(metadata.files[0].classification, "other");
        assert_eq!(metadata.files[1].classification, "specifications");
        assert_eq!(
            metadata.files[1].sha256.as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
    }

    #[test]
    fn every_problem_is_named() {
        let long = "x".repeat(256);
        let body = format!(
            r#"{{"files": [
                {{"partName": "file0", "fileName": "", "contentType": "application/pdf", "classification": "drawings"}},
                {{"partName": "file0", "fileName": "{long}", "contentType": "a\u0007b", "sha256": "abc"}}
            ]}}"#
        );
        assert_eq!(
            fields(parse_metadata(body.as_bytes()).unwrap_err()),
            vec![
                "metadata.files[0].fileName",
                "metadata.files[0].classification",
                "metadata.files[1].partName",
                "metadata.files[1].fileName",
                "metadata.files[1].contentType",
                "metadata.files[1].sha256",
            ]
        );
    }

    #[test]
    fn unknown_fields_bad_json_and_empty_lists_are_refused() {
        assert_eq!(
            fields(parse_metadata(br#"{"files": [], "extra": 1}"#).unwrap_err()),
            vec!["metadata.extra"]
        );
        assert_eq!(
            fields(
                parse_metadata(
                    br#"{"files": [{"partName": "f", "fileName": "a", "contentType": "b", "size": 1}]}"#
                )
                .unwrap_err()
            ),
            vec!["metadata.files[0].size"]
        );
        assert_eq!(fields(parse_metadata(b"{").unwrap_err()), vec!["metadata"]);
        assert_eq!(
            fields(parse_metadata(b"{} {}").unwrap_err()),
            vec!["metadata"]
        );
        assert_eq!(
            fields(parse_metadata(br#"{"files": []}"#).unwrap_err()),
            vec!["metadata.files"]
        );
        assert_eq!(
            fields(parse_metadata(br#"{"files": [{"partName": "metadata", "fileName": "a", "contentType": "b"}]}"#).unwrap_err()),
            vec!["metadata.files[0].partName"]
        );
    }
}
