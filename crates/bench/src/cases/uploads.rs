//! Case 4, uploads and processing. A large upload (`POST /jobs/{id}/files`, one multipart
//! part streamed to storage with its sha256) against hashing and writing the same bytes to
//! a local file, with the gateway's peak memory growth meanwhile; then a generated
//! drawing set uploaded, completed and processed to `completed`, in pages per second,
//! against the same two passes (inspect, extract every page) of the sandboxed parser run
//! directly on the file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use plangrep_job_orchestrator::pdf::{Inspector, Limits};
use plangrep_test_support::pdf::PdfBuilder;
use serde_json::{Value, json};
use sha2::Digest;

use crate::report::Row;
use crate::stack::{Customer, Service, Stack, memory_of, sibling_binary};

const CHUNK: usize = 256 * 1024;

/// A deterministic body of `len` bytes, chunk by chunk.
fn body_chunks(len: u64) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks = len.div_ceil(CHUNK as u64);
    futures_util::stream::iter(0..chunks).map(move |i| {
        let size = CHUNK.min((len - i * CHUNK as u64) as usize);
        Ok((0..size).map(|j| (j as u64 * 31 + i * 7) as u8).collect())
    })
}

/// A job of `customer` that accepts uploads.
async fn job_awaiting_uploads(stack: &Stack, customer: &Customer) -> String {
    let created: Value = stack
        .client()
        .post(&customer.jobs_url)
        .bearer_auth(&customer.api_key)
        .json(&json!({}))
        .send()
        .await
        .expect("gateway reachable")
        .json()
        .await
        .expect("a job");
    let job_id = created["job"]["id"].as_str().expect("job id").to_owned();
    stack
        .wait_for_job(customer, &job_id, "awaiting_uploads")
        .await;
    job_id
}

/// Uploads `body` (`len` bytes) as the job's one file; panics unless 200.
async fn upload(stack: &Stack, customer: &Customer, job_id: &str, body: reqwest::Body, len: u64) {
    let metadata = json!({ "files": [{
        "partName": "file0", "fileName": "set.pdf", "contentType": "application/pdf"
    }]});
    let form = reqwest::multipart::Form::new()
        .text("metadata", metadata.to_string())
        .part(
            "file0",
            reqwest::multipart::Part::stream_with_length(body, len).file_name("set.pdf"),
        );
    let response = stack
        .client()
        .post(format!(
            "{}/api/open/v1/jobs/{job_id}/files",
            stack.gateway_url
        ))
        .bearer_auth(&customer.api_key)
        .timeout(Duration::from_secs(600))
        .multipart(form)
        .send()
        .await
        .expect("gateway reachable");
    let status = response.status();
    assert_eq!(
        status,
        200,
        "upload: {}",
        response.text().await.unwrap_or_default()
    );
}

/// MB/s of a `size`-byte upload against hashing and writing the same bytes locally, and
/// the gateway's peak RSS growth during it.
pub async fn upload_rows(stack: &Stack, customer: &Customer, size: u64) -> [Row; 2] {
    let job_id = job_awaiting_uploads(stack, customer).await;
    let scratch =
        std::env::temp_dir().join(format!("plangrep-bench-copy-{}", ulid::Ulid::generate()));
    let started = Instant::now();
    let mut file = tokio::fs::File::create(&scratch)
        .await
        .expect("scratch file");
    let mut hasher = sha2::Sha256::new();
    let mut chunks = std::pin::pin!(body_chunks(size));
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("in memory");
        hasher.update(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .expect("write");
    }
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .expect("flush");
    drop(file);
    let copy_secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&scratch);

    let gateway = stack.pid(Service::Gateway).expect("the gateway runs");
    // "5" resets the peak-RSS mark, so VmHWM afterwards is the peak during the upload.
    let _ = std::fs::write(format!("/proc/{gateway}/clear_refs"), "5");
    let before = memory_of(gateway).rss_mb;
    let started = Instant::now();
    upload(
        stack,
        customer,
        &job_id,
        reqwest::Body::wrap_stream(body_chunks(size)),
        size,
    )
    .await;
    let upload_secs = started.elapsed().as_secs_f64();
    let growth = memory_of(gateway).peak_mb - before;
    let mb = size as f64 / 1e6;
    [
        Row::new(
            "uploads",
            format!("upload of {:.0} MiB", size as f64 / 1048576.0),
            mb / upload_secs,
            "MB/s",
        )
        .against(
            mb / copy_secs,
            "sha256 + write of the same bytes to a local file",
        )
        .at_least(100.0),
        Row::new(
            "uploads",
            "api-gateway peak RSS growth during that upload",
            growth,
            "MB",
        )
        .against(mb, "the upload's size")
        .at_most(20.0),
    ]
}

/// A drawing set of `pages` sheets.
fn drawing_set(pages: usize) -> Vec<u8> {
    (1..=pages)
        .fold(PdfBuilder::new(), |builder, page| {
            builder.drawing(&format!("A-{page:03}"), "FLOOR PLAN")
        })
        .build()
}

/// Pages per second from upload to `completed` against the parser run directly.
pub async fn processing_row(stack: &Stack, customer: &Customer, pages: usize) -> Row {
    let set = Arc::new(drawing_set(pages));
    let path =
        std::env::temp_dir().join(format!("plangrep-bench-set-{}.pdf", ulid::Ulid::generate()));
    std::fs::write(&path, set.as_slice()).expect("write the set");
    let inspector = Inspector::new(sibling_binary("job-orchestrator"), Limits::default());
    let started = Instant::now();
    let boxes = inspector.inspect(&path).await.expect("the set parses");
    let mut stream = inspector.extract(&path, 1, boxes.len() as u32);
    let mut extracted = 0;
    while stream.next_page().await.is_some() {
        extracted += 1;
    }
    let parse_secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    assert_eq!(extracted, pages, "the parser read every page");

    stack.grant_credits(customer, 1_000_000).await;
    let job_id = job_awaiting_uploads(stack, customer).await;
    let started = Instant::now();
    let len = set.len() as u64;
    upload(
        stack,
        customer,
        &job_id,
        reqwest::Body::from(set.to_vec()),
        len,
    )
    .await;
    let completed = stack
        .client()
        .post(format!(
            "{}/api/open/v1/jobs/{job_id}/uploads/complete",
            stack.gateway_url
        ))
        .bearer_auth(&customer.api_key)
        .send()
        .await
        .expect("gateway reachable");
    assert!(
        completed.status().is_success(),
        "complete: {}",
        completed.status()
    );
    let job = stack.wait_for_job(customer, &job_id, "completed").await;
    let secs = started.elapsed().as_secs_f64();
    Row::new(
        "uploads",
        format!("{pages}-sheet drawing set: upload, preflight, processing"),
        pages as f64 / secs,
        "pages/s",
    )
    .against(
        pages as f64 / parse_secs,
        "the sandboxed parser's two passes on the file, no service",
    )
    .detail(format!(
        "{} pages succeeded, {secs:.2} s end to end",
        job["successfulPageCount"]
    ))
}
