//! `POST /jobs/{jobId}/files`: multipart uploads streamed straight into object storage
//! (DESIGN.md §3 "Uploads"). The job is checked first (state, file and byte limits); then
//! the `metadata` part is parsed strictly, every file part streams through
//! [`Storage::put_stream`] (hashed on the way, never buffered whole), and the documents
//! are registered with the orchestrator. Any failure deletes every object this request
//! stored before answering: a refused upload keeps nothing (docs/adr/0007-uploads.md).

use std::collections::HashMap;

use axum::Json;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use plangrep_core::ErrorCode;
use plangrep_core::api::JobView;
use plangrep_core::id::{DocumentId, JobId};
use plangrep_proto::orchestrator::{GetJobRequest, RegisterDocumentsRequest, UploadedDocument};
use plangrep_proto::views::job_view;
use plangrep_storage::{PutError, Storage, StorageError, Stored, keys};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::budget::{Budget, job_limit};
use self::metadata::{FileEntry, Metadata, UploadMetadata, invalid_fields, parse_metadata};
use self::stored::StoredObjects;
use super::PathId;
use crate::auth::ApiKey;
use crate::error::{ApiError, Detail};
use crate::idempotency::IdempotencyKey;
use crate::startup::AppState;
use crate::{json, replay};

mod budget;
mod metadata;
mod stored;

/// The most the `metadata` part may weigh.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;
/// The upload route, with its own body limit: uploads are bounded per file and per job
/// by the handler, not by the 1 MiB JSON limit of every other route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::disable())
}

/// The `multipart/form-data` body, as documented (parts `metadata`, then `file0`, …).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// JSON: which parts follow and what they are. Must be the first part.
    metadata: UploadMetadata,
    /// The bytes of the file whose `partName` is `file0` (and so on for `file1`, …).
    #[schema(value_type = String, content_media_type = "application/pdf")]
    file0: Vec<u8>,
}

/// One stored file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadView {
    document_id: String,
    file_name: String,
    size_bytes: u64,
    /// Lowercase hex SHA-256 of the stored bytes.
    sha256: String,
}

/// `{"job": …, "uploads": […]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UploadResponse {
    job: JobView,
    uploads: Vec<UploadView>,
}

/// Uploads files to a job that is awaiting uploads or uploading.
#[utoipa::path(
    operation_id = "uploadFiles",
    post,
    path = "/api/open/v1/jobs/{job_id}/files",
    tag = "jobs",
    summary = "Upload files (multipart/form-data: a metadata part, then file0, file1, …)",
    request_body(content = UploadForm, content_type = "multipart/form-data",
        description = "Part `metadata` (JSON) first, then one part per `files[].partName`. Limits: 100 files and 10 GB per job, PLANGREP_UPLOAD_MAX_FILE_BYTES (512 MiB) per file, 1 MiB of metadata."),
    params(("job_id" = String, Path, description = "A `job_` id"), crate::openapi::IdempotencyHeader),
    responses((status = 200, description = "The stored files and the job", body = UploadResponse))
)]
#[tracing::instrument(skip_all, fields(job_id = %job_id, client_upload_flow_id = tracing::field::Empty))]
pub async fn upload(
    State(state): State<AppState>,
    key: ApiKey,
    PathId(job_id): PathId<JobId>,
    idempotency: IdempotencyKey,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match checked_upload(&state, &key, job_id, &idempotency, &headers, multipart).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// Checks the job, reads the metadata part, and then (unless an earlier request with the
/// same `Idempotency-Key` and metadata is replayed) stores the files: the key's record is
/// fingerprinted by the metadata, which names every file (and its sha256, when declared).
async fn checked_upload(
    state: &AppState,
    key: &ApiKey,
    job_id: JobId,
    idempotency: &IdempotencyKey,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let (org_id, job_id) = (key.org_id.to_string(), job_id.to_string());
    let job = state
        .orchestrator
        .clone()
        .get_job(GetJobRequest {
            org_id: org_id.clone(),
            job_id: job_id.clone(),
        })
        .await?
        .into_inner();
    let budget = Budget::of(&job, headers)?;
    let mut multipart = multipart.map_err(|rejection| match rejection {
        _ if !is_multipart(headers) => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as multipart/form-data",
        ),
        rejection => invalid(
            "body",
            format!(
                "not a valid multipart/form-data body ({})",
                rejection.body_text()
            ),
        ),
    })?;

    let (metadata, raw_metadata) = read_metadata(&mut multipart).await?;
    let Some(record) = idempotency.scope(&json::canonical_body(&raw_metadata)) else {
        return store_files(state, org_id, job_id, multipart, metadata, &budget)
            .await
            .map(IntoResponse::into_response);
    };
    if let Some(replayed) = replay::claim_owned(state, key, &record).await? {
        return Ok(replayed);
    }
    let response = store_files(state, org_id, job_id, multipart, metadata, &budget)
        .await
        .map_or_else(IntoResponse::into_response, IntoResponse::into_response);
    Ok(replay::finish_owned(state, key, &record, response).await)
}

/// Streams the file parts into storage and registers them with the orchestrator.
async fn store_files(
    state: &AppState,
    org_id: String,
    job_id: String,
    multipart: Multipart,
    metadata: Metadata,
    budget: &Budget,
) -> Result<Json<UploadResponse>, ApiError> {
    let mut stored = StoredObjects::new(state.storage.clone());
    let received = match receive(
        &state.storage,
        &job_id,
        multipart,
        metadata,
        budget,
        state.config.upload_max_file_bytes,
        &mut stored,
    )
    .await
    {
        Ok(received) => received,
        Err(error) => {
            stored.discard().await;
            return Err(error);
        }
    };
    let documents = received
        .iter()
        .map(|file| UploadedDocument {
            id: file.document_id.clone(),
            file_name: file.entry.file_name.clone(),
            content_type: file.entry.content_type.clone(),
            classification: file.entry.classification.clone(),
            size_bytes: file.stored.size_bytes,
            sha256: file.stored.sha256.clone(),
            storage_key: file.key.clone(),
        })
        .collect();
    let registered = state
        .orchestrator
        .clone()
        .register_documents(RegisterDocumentsRequest {
            org_id,
            job_id,
            documents,
        })
        .await;
    let job = match registered {
        Ok(job) => job.into_inner(),
        Err(status) => {
            if registration_surely_failed(&status) {
                // Best effort; housekeeping deletes whatever this leaves behind.
                stored.discard().await;
            } else {
                // A timeout or a lost connection may hide a registration that committed:
                // deleting could leave registered documents without bytes. Unregistered
                // objects are orphans that housekeeping deletes.
                stored.keep();
            }
            return Err(status.into());
        }
    };
    stored.keep();
    Ok(Json(UploadResponse {
        job: job_view(&job).map_err(ApiError::internal)?,
        uploads: received
            .into_iter()
            .map(|file| UploadView {
                document_id: file.document_id,
                file_name: file.entry.file_name,
                size_bytes: file.stored.size_bytes,
                sha256: file.stored.sha256,
            })
            .collect(),
    }))
}

/// Whether the orchestrator certainly refused a RegisterDocuments call (as opposed to a
/// timeout or a broken connection, after which it may have committed).
fn registration_surely_failed(status: &tonic::Status) -> bool {
    use tonic::Code;
    !matches!(
        status.code(),
        Code::DeadlineExceeded
            | Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

/// One received and stored file part.
struct Received {
    /// Position in `metadata.files`: the response lists uploads in that order.
    index: usize,
    entry: FileEntry,
    document_id: String,
    key: String,
    stored: Stored,
}

/// Reads the metadata part, which must come first: parsed, and as sent.
async fn read_metadata(multipart: &mut Multipart) -> Result<(Metadata, Vec<u8>), ApiError> {
    {
        let Some(mut field) = multipart.next_field().await.map_err(malformed("body"))? else {
            return Err(invalid(
                "metadata",
                "the body has no parts; the first must be metadata",
            ));
        };
        if field.name() != Some("metadata") {
            return Err(invalid(
                "metadata",
                format!(
                    "the first part must be metadata, not {:?}",
                    field.name().unwrap_or("")
                ),
            ));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(malformed("metadata"))? {
            if bytes.len() + chunk.len() > MAX_METADATA_BYTES {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the metadata part is limited to 1 MiB",
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((parse_metadata(&bytes)?, bytes))
    }
}

/// Streams every file part named by `metadata` into storage.
async fn receive(
    storage: &Storage,
    job_id: &str,
    mut multipart: Multipart,
    metadata: Metadata,
    budget: &Budget,
    max_file_bytes: u64,
    stored: &mut StoredObjects,
) -> Result<Vec<Received>, ApiError> {
    if let Some(flow) = &metadata.client_upload_flow_id {
        tracing::Span::current().record("client_upload_flow_id", flow.as_str());
    }
    if budget.existing_files + metadata.files.len() as u64 > budget.max_files {
        return Err(job_limit(format!(
            "a job holds at most {} files; it has {} and this request adds {}",
            budget.max_files,
            budget.existing_files,
            metadata.files.len()
        )));
    }
    let mut pending: HashMap<String, (usize, FileEntry)> = metadata
        .files
        .into_iter()
        .enumerate()
        .map(|(index, entry)| (entry.part_name.clone(), (index, entry)))
        .collect();
    let mut received: Vec<Received> = Vec::new();
    let mut remaining_bytes = budget.remaining_bytes;
    while let Some(field) = multipart.next_field().await.map_err(malformed("body"))? {
        let name = field.name().unwrap_or("").to_owned();
        let Some((index, entry)) = pending.remove(&name) else {
            let issue = if received.iter().any(|r| r.entry.part_name == name) {
                "this part appears twice"
            } else if name == "metadata" {
                "metadata must appear once, first"
            } else {
                "no files[] entry of metadata names this part"
            };
            return Err(invalid(&format!("parts.{name}"), issue));
        };
        let document_id = DocumentId::generate().to_string();
        let key = keys::document(job_id, &document_id);
        let limit = max_file_bytes.min(remaining_bytes);
        let file = match storage.put_stream(&key, field, limit).await {
            Ok(file) => file,
            Err(error) => {
                return Err(put_error(error, &name, max_file_bytes, remaining_bytes));
            }
        };
        stored.push(key.clone());
        if let Some(declared) = &entry.sha256
            && *declared != file.sha256
        {
            return Err(ApiError {
                code: ErrorCode::ChecksumMismatch,
                message: format!(
                    "part {name}: the received bytes have sha256 {}, not the declared {declared}",
                    file.sha256
                ),
                details: vec![Detail {
                    field: format!("parts.{name}"),
                    issue: "sha256 does not match the received bytes".to_owned(),
                }],
                replayed: false,
            });
        }
        remaining_bytes -= file.size_bytes;
        received.push(Received {
            index,
            entry,
            document_id,
            key,
            stored: file,
        });
    }
    if !pending.is_empty() {
        let mut missing: Vec<_> = pending.into_keys().collect();
        missing.sort();
        return Err(invalid_fields(
            missing
                .into_iter()
                .map(|name| {
                    (
                        format!("parts.{name}"),
                        "listed in metadata but no such part was sent".to_owned(),
                    )
                })
                .collect(),
        ));
    }
    received.sort_by_key(|file| file.index);
    Ok(received)
}

/// The answer to a failed `put_stream` of part `name`.
fn put_error(
    error: PutError<MultipartError>,
    name: &str,
    max_file_bytes: u64,
    remaining_bytes: u64,
) -> ApiError {
    match error {
        PutError::TooLarge if max_file_bytes <= remaining_bytes => ApiError {
            code: ErrorCode::PayloadTooLarge,
            message: format!("part {name}: a file may have at most {max_file_bytes} bytes"),
            details: vec![Detail {
                field: format!("parts.{name}"),
                issue: format!("larger than {max_file_bytes} bytes"),
            }],
            replayed: false,
        },
        PutError::TooLarge => job_limit(format!(
            "part {name}: the job has room for {remaining_bytes} more bytes"
        )),
        PutError::Body(error) => malformed(&format!("parts.{name}"))(error),
        PutError::Storage(StorageError::Unavailable(cause)) => {
            tracing::warn!(error = %cause, "object storage unavailable");
            ApiError::unavailable()
        }
        PutError::Storage(error) => ApiError::internal(error),
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// 400 `invalid_request` naming `field`.
fn invalid(field: &str, issue: impl Into<String>) -> ApiError {
    invalid_fields(vec![(field.to_owned(), issue.into())])
}

/// 400 for a multipart stream that cannot be parsed (bad framing, truncated body).
fn malformed(field: &str) -> impl Fn(MultipartError) -> ApiError + '_ {
    move |error| {
        invalid(
            field,
            format!("malformed multipart body ({})", error.body_text()),
        )
    }
}
