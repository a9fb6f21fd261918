//! `ApiQuery<T>`: the query-string extractor. Unknown parameters are refused (a typo such
//! as `?stauts=` must not silently return everything) and errors name the parameter.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use plangrep_core::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Detail};

/// A deserialized query string.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => {
                // axum reports `Failed to deserialize query string: <path>: <serde error>`.
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let (field, issue) = match detail.split_once(": ") {
                    Some((path, issue)) if !path.contains(' ') => {
                        (path.to_owned(), issue.to_owned())
                    }
                    _ => ("query".to_owned(), detail.to_owned()),
                };
                let mut error =
                    ApiError::new(ErrorCode::InvalidRequest, format!("{field}: {issue}"));
                error.details = vec![Detail { field, issue }];
                Err(error)
            }
        }
    }
}

/// `?limit=&cursor=` of every list.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1 to 500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// The `nextCursor` of the previous page.
    #[param(max_length = 200)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The orchestrator's page request, validated.
    pub fn to_request(&self) -> Result<plangrep_proto::orchestrator::PageRequest, ApiError> {
        use plangrep_core::pagination::{Cursor, parse_limit};
        let limit = parse_limit(self.limit.as_deref())?;
        if let Some(cursor) = &self.cursor {
            Cursor::decode(cursor)?;
        }
        Ok(plangrep_proto::orchestrator::PageRequest {
            limit,
            cursor: self.cursor.clone(),
        })
    }
}
