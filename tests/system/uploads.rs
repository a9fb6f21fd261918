//! SPEC §4 `POST /jobs/{jobId}/files`: multipart uploads into object storage. A refused
//! upload answers the right 4xx, leaves no object in storage and does not change the job;
//! an accepted one stores the bytes it reports (checked by a customer's Python client).

use std::path::PathBuf;

use plangrep_test_support::ports::ReservedPort;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Options, PATIENCE, TestApp, expect_error, expect_status, python_tools};

const BOUNDARY: &str = "plangrep-test-boundary";

/// One multipart part: `(name, file name, bytes)`.
type Part<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body of `parts`, closed unless `truncate`.
fn multipart(parts: &[Part<'_>], truncate: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file_name {
            Some(file_name) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/pdf\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\nContent-Type: application/json\r\n\r\n")
                    .as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    if truncate {
        body.truncate(body.len().saturating_sub(7));
    } else {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    body
}

/// Metadata for `files` = `[(partName, fileName)]`, PDF, no checksum.
fn metadata(files: &[(&str, &str)]) -> Vec<u8> {
    let files: Vec<Value> = files
        .iter()
        .map(|(part, name)| json!({"partName": part, "fileName": name, "contentType": "application/pdf"}))
        .collect();
    json!({ "files": files }).to_string().into_bytes()
}

fn pdf(size: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..size.saturating_sub(9)).map(|i| b'a' + (i % 26) as u8));
    bytes
}

/// Lowercase hex SHA-256 of an ASCII test file. (The gateway's API-key hash is a plain
/// SHA-256 of a string, which saves this test package a dependency.)
fn sha256_hex(bytes: &[u8]) -> String {
    let text = std::str::from_utf8(bytes).expect("test files are ASCII");
    plangrep_api_gateway::auth::hash(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TestApp {
    /// A job in a fresh ready project, once it is `awaiting_uploads`; returns its id.
    async fn job_awaiting_uploads(&self, key: &str) -> String {
        let name = format!("Uploads {}", plangrep_test_support::random_token());
        let project = self.create_ready_project(key, &name).await;
        let created = expect_status(self.post_job(key, &project, json!({})).await, 202).await;
        let job = created["job"]["id"].as_str().expect("job id").to_owned();
        plangrep_test_support::eventually("the job to await uploads", PATIENCE, || async {
            let body = self.get_json(&format!("/jobs/{job}"), key).await;
            (body["job"]["status"] == "awaiting_uploads").then_some(())
        })
        .await;
        job
    }

    /// `POST /jobs/{job}/files` with a raw body and content type.
    async fn post_files(
        &self,
        key: &str,
        job: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.api(reqwest::Method::POST, &format!("/jobs/{job}/files"), key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("gateway reachable")
    }

    async fn post_parts(&self, key: &str, job: &str, parts: &[Part<'_>]) -> reqwest::Response {
        self.post_files(
            key,
            job,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            multipart(parts, false),
        )
        .await
    }

    /// Every file in the app's `file://` storage directory.
    fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.components().any(|c| c.as_os_str() == "documents") {
                    // Uploaded documents only: provisioning's markers are not uploads.
                    out.push(path);
                }
            }
        }
        let url = self
            .settings
            .raw("PLANGREP_STORAGE_URL")
            .expect("storage URL");
        let root = url
            .strip_prefix("file://")
            .expect("TestApp stores under file://");
        let mut files = Vec::new();
        walk(std::path::Path::new(root), &mut files);
        files
    }
}

#[tokio::test]
async fn uploads_need_the_jobs_write_scope_before_the_body_is_looked_at() {
    let app = TestApp::spawn().await;
    let (org, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let reader = app.create_key(&org, &["jobs:read"]).await;
    let response = app
        .post_files(&reader, &job, "text/plain", b"junk".to_vec())
        .await;
    expect_error(response, 403, "insufficient_scope").await;
    app.stop().await;
}

#[tokio::test]
async fn another_organizations_job_or_an_unknown_one_is_not_found() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let (_, stranger) = app.create_customer().await;
    let parts: [Part<'_>; 2] = [
        ("metadata", None, &metadata(&[("file0", "a.pdf")])),
        ("file0", Some("a.pdf"), b"%PDF-1.4"),
    ];
    expect_error(
        app.post_parts(&stranger, &job, &parts).await,
        404,
        "not_found",
    )
    .await;
    let unknown = format!("job_{}", plangrep_test_support::random_token());
    expect_error(
        app.post_parts(&key, &unknown, &parts).await,
        404,
        "not_found",
    )
    .await;
    assert!(app.stored_files().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_cancelled_job_refuses_uploads_with_invalid_job_state() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let cancel = app
        .api(reqwest::Method::POST, &format!("/jobs/{job}/cancel"), &key)
        .send()
        .await
        .unwrap();
    expect_status(cancel, 202).await;
    let parts: [Part<'_>; 2] = [
        ("metadata", None, &metadata(&[("file0", "a.pdf")])),
        ("file0", Some("a.pdf"), b"%PDF-1.4"),
    ];
    expect_error(
        app.post_parts(&key, &job, &parts).await,
        409,
        "invalid_job_state",
    )
    .await;
    assert!(app.stored_files().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn bad_multipart_bodies_are_refused_with_the_part_named_and_nothing_kept() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let before = app.get_json(&format!("/jobs/{job}"), &key).await["job"].clone();

    let file = pdf(2000);
    let one = metadata(&[("file0", "A-101.pdf")]);
    let two = metadata(&[("file0", "A-101.pdf"), ("file1", "A-102.pdf")]);
    let with = |entry: Value| json!({ "files": [entry] }).to_string().into_bytes();
    let entry = |field: &str, value: Value| {
        let mut entry =
            json!({"partName": "file0", "fileName": "A.pdf", "contentType": "application/pdf"});
        entry[field] = value;
        with(entry)
    };
    let duplicate_part_names = json!({"files": [
        {"partName": "file0", "fileName": "A.pdf", "contentType": "application/pdf"},
        {"partName": "file0", "fileName": "B.pdf", "contentType": "application/pdf"}
    ]})
    .to_string()
    .into_bytes();
    let unknown_field = json!({"files": [], "uploadedBy": "me"})
        .to_string()
        .into_bytes();
    let bad_classification = entry("classification", json!("drawings"));
    let empty_name = entry("fileName", json!(""));
    let long_name = entry("fileName", json!("x".repeat(256)));
    let control_name = entry("fileName", json!("A\u{7}.pdf"));
    let bad_checksum = entry("sha256", json!("abc"));

    // (what, parts, truncated, the field `details` must name)
    let cases: Vec<(&str, Vec<Part<'_>>, bool, &str)> = vec![
        (
            "a file before the metadata",
            vec![("file0", Some("A.pdf"), &file), ("metadata", None, &one)],
            false,
            "metadata",
        ),
        ("no parts at all", vec![], false, "metadata"),
        (
            "a part metadata does not name",
            vec![
                ("metadata", None, &one),
                ("file0", Some("A.pdf"), &file),
                ("file9", Some("B.pdf"), &file),
            ],
            false,
            "parts.file9",
        ),
        (
            "a metadata entry without its part",
            vec![("metadata", None, &two), ("file0", Some("A.pdf"), &file)],
            false,
            "parts.file1",
        ),
        (
            "the same part twice",
            vec![
                ("metadata", None, &one),
                ("file0", Some("A.pdf"), &file),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "parts.file0",
        ),
        (
            "a second metadata part",
            vec![("metadata", None, &one), ("metadata", None, &one)],
            false,
            "parts.metadata",
        ),
        (
            "duplicate partNames",
            vec![
                ("metadata", None, &duplicate_part_names),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata.files[1].partName",
        ),
        (
            "an unknown metadata field",
            vec![("metadata", None, &unknown_field)],
            false,
            "metadata.uploadedBy",
        ),
        (
            "metadata that is not JSON",
            vec![
                ("metadata", None, b"{\"files\": ["),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata",
        ),
        (
            "a bad classification",
            vec![
                ("metadata", None, &bad_classification),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata.files[0].classification",
        ),
        (
            "an empty fileName",
            vec![
                ("metadata", None, &empty_name),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata.files[0].fileName",
        ),
        (
            "a 256-character fileName",
            vec![
                ("metadata", None, &long_name),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata.files[0].fileName",
        ),
        (
            "a fileName with a control character",
            vec![
                ("metadata", None, &control_name),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata.files[0].fileName",
        ),
        (
            "a sha256 that is not 64 hex characters",
            vec![
                ("metadata", None, &bad_checksum),
                ("file0", Some("A.pdf"), &file),
            ],
            false,
            "metadata.files[0].sha256",
        ),
        (
            "a body cut off inside a file",
            vec![
                ("metadata", None, &two),
                ("file0", Some("A.pdf"), &file),
                ("file1", Some("B.pdf"), &file),
            ],
            true,
            "parts.file1",
        ),
    ];
    for (what, parts, truncated, field) in cases {
        let response = app
            .post_files(
                &key,
                &job,
                &format!("multipart/form-data; boundary={BOUNDARY}"),
                multipart(&parts, truncated),
            )
            .await;
        let error = expect_error(response, 400, "invalid_request").await;
        let fields: Vec<&str> = error["details"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no details in {error}"))
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{what}: details {fields:?} do not name {field}"
        );
        assert_eq!(
            app.stored_files(),
            Vec::<PathBuf>::new(),
            "{what}: objects were kept"
        );
    }

    // A multipart content type without a boundary, and not multipart at all.
    let response = app
        .post_files(
            &key,
            &job,
            "multipart/form-data",
            multipart(&[("metadata", None, &one)], false),
        )
        .await;
    let error = expect_error(response, 400, "invalid_request").await;
    assert_eq!(error["details"][0]["field"], "body");
    let response = app
        .post_files(&key, &job, "application/json", one.clone())
        .await;
    expect_error(response, 415, "unsupported_media_type").await;

    let after = app.get_json(&format!("/jobs/{job}"), &key).await["job"].clone();
    assert_eq!(after, before, "a refused upload changes nothing");
    assert!(app.stored_files().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_checksum_mismatch_is_refused_and_the_object_deleted() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let file = pdf(10_000);
    let metadata = json!({"files": [{
        "partName": "file0", "fileName": "A-101.pdf", "contentType": "application/pdf",
        "sha256": sha256_hex(b"other bytes")
    }]})
    .to_string()
    .into_bytes();
    let response = app
        .post_parts(
            &key,
            &job,
            &[
                ("metadata", None, &metadata),
                ("file0", Some("A-101.pdf"), &file),
            ],
        )
        .await;
    let error = expect_error(response, 400, "checksum_mismatch").await;
    assert_eq!(error["details"][0]["field"], "parts.file0");
    assert!(app.stored_files().is_empty());
    let job = app.get_json(&format!("/jobs/{job}"), &key).await;
    assert_eq!(job["job"]["status"], "awaiting_uploads");
    assert_eq!(job["job"]["files"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_file_over_the_upload_limit_is_payload_too_large() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_UPLOAD_MAX_FILE_BYTES", "4096"))
            .await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let small = pdf(1000);
    let large = pdf(4097);
    let metadata = metadata(&[("file0", "small.pdf"), ("file1", "large.pdf")]);
    let response = app
        .post_parts(
            &key,
            &job,
            &[
                ("metadata", None, &metadata),
                ("file0", Some("small.pdf"), &small),
                ("file1", Some("large.pdf"), &large),
            ],
        )
        .await;
    let error = expect_error(response, 413, "payload_too_large").await;
    assert_eq!(error["details"][0]["field"], "parts.file1");
    assert!(
        app.stored_files().is_empty(),
        "the small file stored first is deleted too"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_job_limits_of_100_files_and_10_gb_are_job_limit_exceeded() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;

    let names: Vec<(String, String)> = (0..101)
        .map(|i| (format!("file{i}"), format!("{i}.pdf")))
        .collect();
    let entries: Vec<(&str, &str)> = names
        .iter()
        .map(|(p, f)| (p.as_str(), f.as_str()))
        .collect();
    let too_many = metadata(&entries);
    let response = app
        .post_parts(&key, &job, &[("metadata", None, &too_many)])
        .await;
    expect_error(response, 413, "job_limit_exceeded").await;

    // A request that declares more than 10 GB is refused before its body is read: speak
    // HTTP/1.1 by hand, since a client library would insist on sending the bytes.
    let address = app.base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /api/open/v1/jobs/{job}/files HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 10000000001\r\nConnection: close\r\n\r\n--{BOUNDARY}\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buffer[..n]);
            if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to an oversized declaration");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("\"job_limit_exceeded\""), "{response}");
    assert!(app.stored_files().is_empty());
    app.stop().await;
}

/// Needs the orchestrator's RegisterDocuments.
#[tokio::test]
async fn a_customer_uploads_two_files_and_the_job_is_uploading() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let plans = pdf(6 * 1024 * 1024 + 17);
    let specs = pdf(3000);
    let metadata = json!({"clientUploadFlowId": "flow-1", "files": [
        {"partName": "file0", "fileName": "A-101.pdf", "contentType": "application/pdf", "classification": "plans", "sha256": sha256_hex(&plans)},
        {"partName": "file1", "fileName": "Specs.pdf", "contentType": "application/pdf"}
    ]})
    .to_string()
    .into_bytes();
    let response = app
        .post_parts(
            &key,
            &job,
            &[
                ("metadata", None, &metadata),
                ("file0", Some("A-101.pdf"), &plans),
                ("file1", Some("Specs.pdf"), &specs),
            ],
        )
        .await;
    let body = expect_status(response, 200).await;
    assert_eq!(body["job"]["status"], "uploading");
    let uploads = body["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0]["fileName"], "A-101.pdf");
    assert_eq!(uploads[0]["sizeBytes"], plans.len() as u64);
    assert_eq!(uploads[0]["sha256"], sha256_hex(&plans));
    assert_eq!(uploads[1]["sha256"], sha256_hex(&specs));
    assert!(
        uploads[0]["documentId"]
            .as_str()
            .unwrap()
            .starts_with("doc_")
    );
    assert_eq!(app.stored_files().len(), 2);
    app.stop().await;
}

/// Needs the orchestrator's RegisterDocuments.
#[tokio::test]
async fn a_python_requests_client_uploads_a_drawing_set() {
    let app = TestApp::spawn().await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let script = r#"
import hashlib, json, sys
import requests
base, key, job = sys.argv[1:4]
data = b"%PDF-1.4\n" + bytes(range(256)) * 4000
metadata = {"clientUploadFlowId": "python-1", "files": [{
    "partName": "file0", "fileName": "A-101 Site plan.pdf", "contentType": "application/pdf",
    "classification": "plans", "sha256": hashlib.sha256(data).hexdigest()}]}
response = requests.post(
    f"{base}/api/open/v1/jobs/{job}/files",
    headers={"Authorization": f"Bearer {key}"},
    files=[("metadata", (None, json.dumps(metadata), "application/json")),
           ("file0", ("A-101 Site plan.pdf", data, "application/pdf"))],
    timeout=30,
)
print(json.dumps({"status": response.status_code, "body": response.json(),
                  "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}))
"#;
    let python = python_tools();
    let (base, key_arg, job_arg) = (app.base_url.clone(), key.clone(), job.clone());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &base, &key_arg, &job_arg])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"]["job"]["status"], "uploading");
    assert_eq!(result["body"]["uploads"][0]["sha256"], result["sha256"]);
    assert_eq!(result["body"]["uploads"][0]["sizeBytes"], result["size"]);
    assert_eq!(
        result["body"]["uploads"][0]["fileName"],
        "A-101 Site plan.pdf"
    );
    assert_eq!(app.stored_files().len(), 1);
    app.stop().await;
}

/// The keys under `s3://plangrep-test/<prefix>/` on the development S3 server (a signed
/// ListObjectsV2 by curl, which this test package has no S3 client for).
fn s3_keys(prefix: &str) -> Vec<String> {
    use plangrep_test_support::s3::{
        S3_ACCESS_KEY_ID, S3_BUCKET, S3_REGION, S3_SECRET_ACCESS_KEY, s3_endpoint,
    };
    let output = std::process::Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--aws-sigv4",
            &format!("aws:amz:{S3_REGION}:s3"),
            "--user",
            &format!("{S3_ACCESS_KEY_ID}:{S3_SECRET_ACCESS_KEY}"),
            // SigV4 wants the query sorted and `/` percent-encoded (curl does neither).
            &format!(
                "{}/{S3_BUCKET}?list-type=2&prefix={}%2F",
                s3_endpoint(),
                prefix.replace('/', "%2F")
            ),
        ])
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "listing S3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
        .collect()
}

/// A gateway replica storing in the real S3 server (the rest of the app as usual): a
/// refused upload leaves no object there, an accepted one (needs RegisterDocuments)
/// leaves exactly its file.
#[tokio::test]
async fn uploads_to_s3_keep_nothing_when_refused_and_the_file_when_accepted() {
    plangrep_test_support::s3::require_s3_server().await;
    let prefix = format!("system-tests/{}", plangrep_test_support::random_token());
    let mut app = TestApp::spawn().await;
    let mut settings = app.settings.clone();
    for (name, value) in plangrep_test_support::s3::s3_settings(&prefix) {
        settings.set(name, value);
    }
    let gateway = app.start_gateway(settings).await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let file = pdf(6 * 1024 * 1024);
    let declared = |sha256: String| {
        json!({"files": [{"partName": "file0", "fileName": "A.pdf", "contentType": "application/pdf", "sha256": sha256}]})
            .to_string()
            .into_bytes()
    };
    let post = |metadata: Vec<u8>| {
        app.http
            .post(format!("{}/api/open/v1/jobs/{job}/files", gateway.url))
            .bearer_auth(&key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(multipart(
                &[
                    ("metadata", None, &metadata),
                    ("file0", Some("A.pdf"), &file),
                ],
                false,
            ))
            .send()
    };

    let response = post(declared(sha256_hex(b"something else"))).await.unwrap();
    expect_error(response, 400, "checksum_mismatch").await;
    assert_eq!(s3_keys(&prefix), Vec::<String>::new());

    let response = post(declared(sha256_hex(&file))).await.unwrap();
    let body = expect_status(response, 200).await;
    let document = body["uploads"][0]["documentId"].as_str().unwrap();
    assert_eq!(
        s3_keys(&prefix),
        vec![format!("{prefix}/jobs/{job}/documents/{document}")]
    );
    app.stop().await;
}

/// An object store that does not answer is a 503 `unavailable`, fast, and the job is
/// unchanged.
#[tokio::test]
async fn an_unreachable_object_store_is_unavailable() {
    let mut app = TestApp::spawn().await;
    // A port nobody listens on, held for the test.
    let closed = ReservedPort::new();
    let closed_port = closed.addr().port();
    let mut settings = app.settings.clone();
    for (name, value) in plangrep_test_support::s3::s3_settings("unreachable") {
        settings.set(name, value);
    }
    settings.set(
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{closed_port}"),
    );
    let gateway = app.start_gateway(settings).await;
    let (_, key) = app.create_customer().await;
    let job = app.job_awaiting_uploads(&key).await;
    let metadata = metadata(&[("file0", "A.pdf")]);
    let response = app
        .http
        .post(format!("{}/api/open/v1/jobs/{job}/files", gateway.url))
        .bearer_auth(&key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(multipart(
            &[
                ("metadata", None, &metadata),
                ("file0", Some("A.pdf"), &pdf(1000)),
            ],
            false,
        ))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("an answer, not a hang");
    expect_error(response, 503, "unavailable").await;
    let job = app.get_json(&format!("/jobs/{job}"), &key).await;
    assert_eq!(job["job"]["status"], "awaiting_uploads");
    app.stop().await;
}

#[tokio::test]
async fn a_retried_upload_with_the_same_idempotency_key_is_replayed_not_stored_twice() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let job = app.create_job(&key).await;
    app.wait_until_awaiting_uploads(&key, &job).await;
    let send = |name: &'static str| {
        let (app, key, job) = (&app, &key, &job);
        async move {
            let metadata = json!({ "files": [{
                "partName": "file0", "fileName": name, "contentType": "application/pdf"
            }]});
            let form = reqwest::multipart::Form::new()
                .text("metadata", metadata.to_string())
                .part(
                    "file0",
                    reqwest::multipart::Part::bytes(plangrep_test_support::pdf::many_pages(1))
                        .file_name(name),
                );
            app.api(reqwest::Method::POST, &format!("/jobs/{job}/files"), key)
                .header("Idempotency-Key", "upload-1")
                .multipart(form)
                .send()
                .await
                .unwrap()
        }
    };
    let first = expect_status(send("A-101.pdf").await, 200).await;
    let again = expect_status(send("A-101.pdf").await, 200).await;
    assert_eq!(again["idempotent"], true);
    assert_eq!(again["uploads"], first["uploads"]);
    let job_now = app.get_json(&format!("/jobs/{job}"), &key).await;
    assert_eq!(job_now["job"]["files"].as_array().unwrap().len(), 1);
    // The same key with other files is a different request.
    expect_error(send("B-201.pdf").await, 422, "idempotency_key_reused").await;
}
