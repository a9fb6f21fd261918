//! `webhooks listen`: a local HTTP receiver (axum) for trying webhooks out. Every request
//! is verified with the secret, printed (event, job, status, sequence, signature valid or
//! not, duplicate `webhook-id`), optionally saved raw for `webhooks verify`, and answered
//! with the chosen status (2xx by default; e.g. 500 to watch the platform retry).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use bytes::Bytes;
use plangrep_core::webhook::WebhookSecret;
use tokio::net::TcpListener;

use super::raw::RawRequest;
use super::{inspect, now_unix};
use crate::cli::ListenArgs;
use crate::error::CliError;
use crate::output::Output;

/// What every request handler shares.
struct Receiver {
    secret: WebhookSecret,
    tolerance: i64,
    answer: StatusCode,
    save_dir: Option<PathBuf>,
    out: Output,
    /// `webhook-id`s seen so far, to flag redeliveries and retries as duplicates.
    seen: Mutex<HashSet<String>>,
    /// Requests received, to number saved files.
    received: AtomicU64,
}

/// Runs the receiver until Ctrl-C.
pub async fn listen(args: ListenArgs, out: Output) -> Result<(), CliError> {
    let answer = StatusCode::from_u16(args.status)
        .map_err(|_| CliError::Usage(format!("{} is not an HTTP status", args.status)))?;
    if let Some(dir) = &args.save_dir {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| CliError::io(format!("creating {}", dir.display()), e))?;
    }
    let listener = TcpListener::bind((args.host.as_str(), args.port))
        .await
        .map_err(|e| CliError::io(format!("binding {}:{}", args.host, args.port), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::io("reading the bound address", e))?;
    let state = Arc::new(Receiver {
        secret: args.secret,
        tolerance: args.tolerance,
        answer,
        save_dir: args.save_dir,
        out,
        seen: Mutex::new(HashSet::new()),
        received: AtomicU64::new(0),
    });
    let url = format!("http://{addr}");
    if out.json {
        println!(
            "{}",
            serde_json::json!({ "listening": url, "answering": answer.as_u16() })
        );
    } else {
        println!(
            "listening on {url} (answering {}); Ctrl-C to stop",
            answer.as_u16()
        );
    }
    let router = Router::new().fallback(receive).with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::io("serving", e))
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let seen = inspect(
        &receiver.secret,
        header,
        &body,
        Some(now_unix()),
        receiver.tolerance,
    );
    let duplicate = match &seen.event_id {
        Some(id) => !receiver
            .seen
            .lock()
            .expect("no panics while holding the lock")
            .insert(id.clone()),
        None => false,
    };
    let number = receiver.received.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(dir) = &receiver.save_dir {
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let saved = RawRequest::render(&format!("{method} {uri} HTTP/1.1"), &pairs, &body);
        let name = format!(
            "{number:04}-{}.http",
            seen.event_id.as_deref().unwrap_or("unknown")
        );
        if let Err(error) = tokio::fs::write(dir.join(&name), saved).await {
            eprintln!("could not save {name}: {error}");
        }
    }
    if receiver.out.json {
        let mut line = seen.to_json();
        line["duplicate"] = duplicate.into();
        line["answered"] = receiver.answer.as_u16().into();
        println!("{line}");
    } else {
        println!(
            "{}{}  -> {}",
            seen.line(),
            if duplicate { "  duplicate" } else { "" },
            receiver.answer.as_u16()
        );
    }
    receiver.answer
}
