//! Request ids and the outermost middleware: every response carries `x-request-id` (the
//! caller's, if it sent a sane one), and responses produced outside our handlers (unknown
//! route, wrong method, body too large) are rewritten into the SPEC error format.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plangrep_core::ErrorCode;

use crate::error::{ApiError, RenderedError};

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The header name.
pub const HEADER: &str = "x-request-id";

/// The id of the request being handled (empty outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// A caller-supplied id is echoed when it is short printable ASCII; otherwise we mint one.
fn choose(request: &Request) -> String {
    request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "req_{}",
                ulid::Ulid::generate().to_string().to_ascii_lowercase()
            )
        })
}

/// The outermost middleware.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = choose(&request);
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
        trace_id = %plangrep_telemetry::trace::current().map(|c| c.trace_id()).unwrap_or_default(),
    );
    let handled = REQUEST_ID.scope(id.clone(), async move {
        let response = next.run(request).await;
        let mut response = normalise(response);
        if let Ok(value) = HeaderValue::from_str(&id) {
            response.headers_mut().insert(HEADER, value);
        }
        response
    });
    tracing::Instrument::instrument(handled, span).await
}

/// Rewrites framework-generated error responses into our format.
fn normalise(response: Response) -> Response {
    if response.extensions().get::<RenderedError>().is_some() || response.status().is_success() {
        return response;
    }
    let error = match response.status() {
        StatusCode::NOT_FOUND => ApiError::new(ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = response.headers().get("allow").cloned();
            let mut rewritten = ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
            .into_response();
            if let Some(allow) = allow {
                rewritten.headers_mut().insert("allow", allow);
            }
            return keep_headers(&response, rewritten);
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(ErrorCode::UnsupportedMediaType, "send application/json")
        }
        // A caught panic.
        StatusCode::INTERNAL_SERVER_ERROR => ApiError::internal("a handler panicked"),
        // Anything else (e.g. `/readyz` answering 503) is meant as it is.
        _ => return response,
    };
    keep_headers(&response, error.into_response())
}

/// A rewritten error keeps the headers middleware set on the original (`RateLimit-*`,
/// `Retry-After`, …), but not its body's.
fn keep_headers(original: &Response, mut rewritten: Response) -> Response {
    for (name, value) in original.headers() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            rewritten.headers_mut().entry(name).or_insert(value.clone());
        }
    }
    rewritten
}
