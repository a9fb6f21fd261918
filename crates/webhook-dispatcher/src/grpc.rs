//! The `plangrep.dispatcher.v1.WebhookDispatcher` gRPC service: the delivery log and
//! manual redelivery, scoped by organization (another org's delivery is NOT_FOUND).
//! Ids are parsed before anything else: a malformed one is INVALID_ARGUMENT (ADR 0010).

use std::collections::HashMap;
use std::sync::Arc;

use plangrep_core::ErrorCode;
use plangrep_core::id::{DeliveryId, JobId, OrgId};
use plangrep_proto::dispatcher::webhook_dispatcher_server::WebhookDispatcher;
use plangrep_proto::dispatcher::{
    Attempt, Delivery, GetDeliveryRequest, ListDeliveriesRequest, ListDeliveriesResponse,
    RedeliverRequest,
};
use plangrep_proto::status::status;
use plangrep_proto::time::to_timestamp;
use sqlx::PgPool;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::store;
use crate::store::attempts::{self, AttemptRow};
use crate::store::deliveries::{self, DeliveryRow, Redelivery, state};

/// The gRPC service state.
#[derive(Clone)]
pub struct DispatcherService {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl DispatcherService {
    /// A service over `pool`; redeliveries wake `wake`.
    pub fn new(pool: PgPool, wake: Arc<Notify>) -> Self {
        Self { pool, wake }
    }

    async fn with_attempts(&self, rows: Vec<DeliveryRow>) -> Result<Vec<Delivery>, Status> {
        let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
        let mut by_delivery: HashMap<String, Vec<AttemptRow>> = HashMap::new();
        for attempt in attempts::for_deliveries(&self.pool, &ids)
            .await
            .map_err(database_status)?
        {
            by_delivery
                .entry(attempt.delivery_id.clone())
                .or_default()
                .push(attempt);
        }
        Ok(rows
            .into_iter()
            .map(|row| {
                let attempts = by_delivery.remove(&row.id).unwrap_or_default();
                to_proto(row, attempts)
            })
            .collect())
    }
}

fn to_proto(row: DeliveryRow, attempts: Vec<AttemptRow>) -> Delivery {
    let open = row.state == state::PENDING || row.state == state::WAITING;
    Delivery {
        id: row.id,
        event_id: row.event_id,
        job_id: row.job_id,
        sequence: u32::try_from(row.sequence).unwrap_or_default(),
        job_status: row.job_status,
        state: row.state,
        attempts: attempts
            .into_iter()
            .map(|attempt| Attempt {
                number: u32::try_from(attempt.number).unwrap_or_default(),
                trigger: attempt.trigger,
                started_at: Some(to_timestamp(attempt.started_at)),
                duration_ms: u32::try_from(attempt.duration_ms).unwrap_or_default(),
                status_code: attempt.status_code.and_then(|c| u32::try_from(c).ok()),
                error: attempt.error,
                response_snippet: attempt.response_snippet,
            })
            .collect(),
        next_attempt_at: row.next_attempt_at.filter(|_| open).map(to_timestamp),
        created_at: Some(to_timestamp(row.created_at)),
    }
}

fn database_status(error: sqlx::Error) -> Status {
    if plangrep_service::database::is_unavailable(&error) {
        status(ErrorCode::Unavailable, "the database is unavailable", None)
    } else {
        tracing::error!(?error, "database error");
        status(ErrorCode::Internal, "internal error", None)
    }
}

/// Parses an id of kind `T`; anything else is INVALID_ARGUMENT naming `field`.
fn parse_id<T: std::str::FromStr>(field: &str, raw: &str) -> Result<T, Status> {
    raw.parse().map_err(|_| {
        status(
            ErrorCode::InvalidRequest,
            format!("{field}: not a valid id"),
            Some(format!(
                r#"[{{"field":{field:?},"issue":"not a valid id"}}]"#
            )),
        )
    })
}

fn not_found() -> Status {
    status(ErrorCode::NotFound, "no such webhook delivery", None)
}

#[tonic::async_trait]
impl WebhookDispatcher for DispatcherService {
    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let request = request.into_inner();
        parse_id::<OrgId>("org_id", &request.org_id)?;
        parse_id::<JobId>("job_id", &request.job_id)?;
        let rows = deliveries::list_for_job(&self.pool, &request.org_id, &request.job_id)
            .await
            .map_err(database_status)?;
        Ok(Response::new(ListDeliveriesResponse {
            deliveries: self.with_attempts(rows).await?,
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<GetDeliveryRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let request = request.into_inner();
        parse_id::<OrgId>("org_id", &request.org_id)?;
        parse_id::<DeliveryId>("delivery_id", &request.delivery_id)?;
        let row = deliveries::get(&self.pool, &request.org_id, &request.delivery_id)
            .await
            .map_err(database_status)?
            .ok_or_else(not_found)?;
        let mut delivery = self.with_attempts(vec![row]).await?;
        Ok(Response::new(delivery.remove(0)))
    }

    async fn redeliver(
        &self,
        request: Request<RedeliverRequest>,
    ) -> Result<Response<Delivery>, Status> {
        let request = request.into_inner();
        parse_id::<OrgId>("org_id", &request.org_id)?;
        parse_id::<DeliveryId>("delivery_id", &request.delivery_id)?;
        let row = match deliveries::request_redelivery(
            &self.pool,
            &request.org_id,
            &request.delivery_id,
            store::now(),
        )
        .await
        .map_err(database_status)?
        {
            Redelivery::Scheduled(row) => *row,
            Redelivery::NotFound => return Err(not_found()),
            Redelivery::InFlight => {
                return Err(status(
                    ErrorCode::DeliveryInProgress,
                    "an attempt of this delivery is in flight; retry in a few seconds",
                    None,
                ));
            }
        };
        tracing::info!(delivery_id = %row.id, "manual redelivery requested");
        self.wake.notify_waiters();
        let mut delivery = self.with_attempts(vec![row]).await?;
        Ok(Response::new(delivery.remove(0)))
    }
}
