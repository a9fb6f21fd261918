//! Refusals that reach the client. When a handler answers before reading the whole
//! request body (413 for an oversized JSON body, an upload refused up front), the body's
//! unread rest is still on its way. Closing the connection with unread bytes makes the
//! kernel reset it, and a client that sends the whole body before reading (Python
//! `requests`, most HTTP libraries) then sees "connection closed without response"
//! instead of our answer. This layer keeps the unread rest of the body and drains it
//! after the handler, bounded in bytes ([`DRAIN_MAX_BYTES`]) and time ([`DRAIN_TIMEOUT`]),
//! so the answer is read and the connection stays usable. Past either bound it gives up
//! and says `Connection: close`; a body declared longer than the bound is not drained at
//! all. A client that asked `Expect: 100-continue` has not sent the body: nothing to
//! drain, and nothing is pulled from it.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};

/// The most unread body this layer reads and discards after an early answer.
pub const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The longest it waits for that rest.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a request body that was dropped before its end is left for draining.
type Slot = Arc<Mutex<Option<BodyDataStream>>>;

/// The request body as handlers see it; on drop, hands what is left back to the layer.
struct Reclaimable {
    inner: Option<BodyDataStream>,
    slot: Slot,
}

impl Stream for Reclaimable {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut() {
            Some(inner) => inner.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }
}

impl Drop for Reclaimable {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            *self.slot.lock().expect("not poisoned") = Some(inner);
        }
    }
}

/// The middleware (outside the routes, so every refusal is covered).
pub async fn middleware(request: Request, next: Next) -> Response {
    let expects_continue = request
        .headers()
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A body declared larger than the bound is not drained (hyper closes after the answer).
    let too_long = declared.is_some_and(|length| length > DRAIN_MAX_BYTES as u64);
    if expects_continue || too_long {
        return next.run(request).await;
    }
    let slot = Slot::default();
    let (parts, body) = request.into_parts();
    let body = Body::from_stream(Reclaimable {
        inner: Some(body.into_data_stream()),
        slot: slot.clone(),
    });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let rest = slot.lock().expect("not poisoned").take();
    if let Some(rest) = rest
        && !drain(rest).await
    {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            HeaderValue::from_static("close"),
        );
    }
    response
}

/// Reads `rest` to its end within the bounds; whether it got there.
async fn drain(mut rest: BodyDataStream) -> bool {
    let read_all = async {
        let mut read = 0usize;
        while let Some(chunk) = rest.next().await {
            match chunk {
                Ok(chunk) => {
                    read += chunk.len();
                    if read > DRAIN_MAX_BYTES {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read_all)
        .await
        .unwrap_or(false)
}
