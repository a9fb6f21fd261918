//! The dead-letter admin routes (SPEC §6): how many messages wait in each dead-letter
//! queue, and the re-drive that moves them back to their work queue. The gateway has no
//! broker connection: both call the orchestrator, which owns the topology (ADR 0013).
//! Guarded by the admin token and, for the re-drive, the admin Idempotency-Key records,
//! like every admin route.

use axum::Json;
use axum::extract::State;
use plangrep_core::validate::FieldError;
use plangrep_proto::orchestrator::{ListDeadLettersRequest, RedriveDeadLettersRequest};
use serde::{Deserialize, Serialize};

use super::admin::Admin;
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::startup::AppState;

/// The most messages one re-drive may move.
const MAX_LIMIT: i64 = 10_000;

/// A dead-letter queue and its depth.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterQueueView {
    /// The dead-letter queue, e.g. `plangrep.orchestrator.preflight.dead` (without the
    /// deployment's name prefix).
    queue: String,
    /// The work queue a re-drive returns its messages to.
    work_queue: String,
    /// Messages waiting.
    messages: u64,
}

/// `{"queues": [...], "total": n}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLettersView {
    queues: Vec<DeadLetterQueueView>,
    /// Messages waiting in all of them.
    total: u64,
}

/// Counts the messages waiting in each dead-letter queue.
#[utoipa::path(
    operation_id = "listDeadLetters",
    get,
    path = "/admin/v1/dead-letters",
    tag = "admin",
    summary = "Count the dead letters per queue",
    responses((status = 200, description = "Every dead-letter queue and its depth", body = DeadLettersView))
)]
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<DeadLettersView>, ApiError> {
    let queues = state
        .orchestrator
        .clone()
        .list_dead_letters(ListDeadLettersRequest {})
        .await?
        .into_inner()
        .queues;
    let queues: Vec<DeadLetterQueueView> = queues
        .into_iter()
        .map(|queue| DeadLetterQueueView {
            queue: queue.queue,
            work_queue: queue.work_queue,
            messages: queue.messages,
        })
        .collect();
    let total = queues.iter().map(|queue| queue.messages).sum();
    Ok(Json(DeadLettersView { queues, total }))
}

/// Body of `POST /admin/v1/dead-letters/redrive`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveBody {
    /// A dead-letter queue as listed by `GET /admin/v1/dead-letters`; all of them when
    /// absent.
    queue: Option<String>,
    /// At most this many messages in all, 1 to 10000 (default 100).
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
}

/// `{"redriven": n}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RedriveView {
    /// Messages moved back to their work queue.
    redriven: u64,
}

/// Moves dead letters back to their work queue, oldest first.
#[utoipa::path(
    operation_id = "redriveDeadLetters",
    post,
    path = "/admin/v1/dead-letters/redrive",
    tag = "admin",
    summary = "Re-drive dead letters to their work queue",
    request_body(content = Option<RedriveBody>, description = "Which queue and how many; `{}` and an empty body re-drive up to 100 from every queue"),
    params(crate::openapi::IdempotencyHeader),
    responses((status = 200, description = "How many messages moved", body = RedriveView))
)]
pub async fn redrive(
    _: Admin,
    State(state): State<AppState>,
    ApiJson { body, .. }: ApiJson<RedriveBody>,
) -> Result<Json<RedriveView>, ApiError> {
    let limit = match body.limit {
        None => None,
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => u32::try_from(limit).ok(),
        Some(_) => {
            return Err(ApiError::invalid_fields(vec![FieldError::new(
                "limit",
                format!("must be an integer from 1 to {MAX_LIMIT}"),
            )]));
        }
    };
    // The orchestrator checks `queue` against the topology it owns (INVALID_ARGUMENT,
    // a 400 naming the field, for an unknown one).
    let redriven = state
        .orchestrator
        .clone()
        .redrive_dead_letters(RedriveDeadLettersRequest {
            queue: body.queue,
            limit,
        })
        .await?
        .into_inner()
        .redriven;
    Ok(Json(RedriveView { redriven }))
}
