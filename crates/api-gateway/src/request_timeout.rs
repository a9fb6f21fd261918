//! The request timeout: once its head is read, a request has `request_timeout` to be
//! answered (uploads, which stream up to `PLANGREP_UPLOAD_MAX_FILE_BYTES`, have
//! `upload_timeout`). A client that trickles its body, or stops sending it, gets 408
//! `request_timeout` and the connection is closed; its handler is dropped at its current
//! await, as when a client disconnects.
//!
//! The handlers' own dependencies time out well inside this (database acquire 3 s, gRPC
//! 10 s), so a request that runs out of time is waiting on its client.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header::CONNECTION};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plangrep_core::ErrorCode;

use crate::error::ApiError;

/// The route template of uploads (`POST`), which get the longer timeout.
const UPLOAD_ROUTE: &str = "/api/open/v1/jobs/{job_id}/files";

/// The two limits.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeouts {
    /// Every request but uploads.
    pub request: Duration,
    /// `POST /jobs/{jobId}/files`.
    pub upload: Duration,
}

impl RequestTimeouts {
    fn for_request(&self, request: &Request) -> Duration {
        let is_upload = request.method() == Method::POST
            && request
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|route| route.as_str() == UPLOAD_ROUTE);
        if is_upload { self.upload } else { self.request }
    }
}

/// Middleware (added with `Router::layer`, so after routing): answers 408 when the
/// request is not answered in time.
pub async fn middleware(
    State(timeouts): State<Arc<RequestTimeouts>>,
    request: Request,
    next: Next,
) -> Response {
    let limit = timeouts.for_request(&request);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = ApiError::new(
                ErrorCode::RequestTimeout,
                format!("the request was not completed within {}", humanize(limit)),
            )
            .into_response();
            // The rest of the body may still be on its way: do not read it.
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

fn humanize(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upload_route_is_a_known_public_operation() {
        assert_eq!(
            crate::auth::route_scope("POST", UPLOAD_ROUTE),
            Some("jobs:write"),
            "uploads would get the short timeout"
        );
        assert_eq!(humanize(Duration::from_secs(30)), "30 s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500 ms");
    }
}
