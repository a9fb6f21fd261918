//! Live responses against the published document: a representative run of every
//! operation (successes and refusals) is recorded, and each response must be documented
//! for its operation and status and validate against the document's schema for it
//! (JSON Schema 2020-12, as OpenAPI 3.1 defines it, checked by Python's `jsonschema`).
//! The document can no longer drift from what the server answers.

use plangrep_test_support::pdf::PdfBuilder;
use plangrep_test_support::receiver::Receiver;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, UploadFile, python_tools};

/// The responses of one run, each with the documented operation it answers.
#[derive(Default)]
struct Recorder {
    exchanges: Vec<Value>,
}

impl Recorder {
    /// Sends `request` (documented as `operation`, e.g. `GET /api/open/v1/jobs/{jobId}`),
    /// checks its media type and records it; returns the status and the JSON body.
    async fn send(&mut self, operation: &str, request: RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("gateway reachable");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{operation} {status}: not JSON: {text}"));
        assert_eq!(
            content_type, "application/json; charset=utf-8",
            "{operation} {status}"
        );
        self.exchanges.push(json!({
            "operation": operation,
            "status": status,
            "body": body,
        }));
        (status, body)
    }

    /// [`Self::send`], asserting the status.
    async fn expect(&mut self, operation: &str, request: RequestBuilder, status: u16) -> Value {
        let (actual, body) = self.send(operation, request).await;
        assert_eq!(actual, status, "{operation}: {body}");
        body
    }
}

const VALIDATE: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
doc = json.load(open(sys.argv[1]))
exchanges = json.load(open(sys.argv[2]))
problems = []
for x in exchanges:
    method, path = x["operation"].split(" ", 1)
    operation = doc["paths"].get(path, {}).get(method.lower())
    where = "%s -> %s" % (x["operation"], x["status"])
    if operation is None:
        problems.append("%s: the operation is not documented" % where)
        continue
    response = operation["responses"].get(str(x["status"]))
    if response is None:
        problems.append("%s: the status is not documented" % where)
        continue
    media = response.get("content", {}).get("application/json")
    if media is None:
        problems.append("%s: no application/json content documented" % where)
        continue
    schema = dict(media.get("schema", {}))
    schema["components"] = doc["components"]
    for error in sorted(Draft202012Validator(schema).iter_errors(x["body"]), key=str)[:3]:
        problems.append("%s: %s at %s" % (where, error.message, list(error.absolute_path)))
if problems:
    print("\n".join(problems))
    sys.exit(1)
print("%d responses conform" % len(exchanges))
"#;

#[tokio::test]
async fn every_response_of_a_representative_run_validates_against_the_document() {
    let app = TestApp::spawn_with(
        crate::helpers::Options::default().with("PLANGREP_RATE_LIMIT_BURST", "100000"),
    )
    .await;
    let mut run = Recorder::default();
    let admin = |method: Method, path: &str| app.admin(method, path);
    let api = |method: Method, path: &str, key: &str| app.api(method, path, key);

    // Admin API.
    const ORGS: &str = "/admin/v1/orgs";
    let org = run
        .expect(
            &format!("POST {ORGS}"),
            admin(Method::POST, "/orgs").json(&json!({ "name": "Conformance" })),
            201,
        )
        .await["org"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run.expect(
        &format!("POST {ORGS}"),
        admin(Method::POST, "/orgs").json(&json!({ "name": "" })),
        400,
    )
    .await;
    run.expect(
        &format!("POST {ORGS}"),
        app.http
            .post(format!("{}/admin/v1/orgs", app.base_url))
            .json(&json!({})),
        401,
    )
    .await;
    const ORG: &str = "/admin/v1/orgs/{orgId}";
    run.expect(
        &format!("GET {ORG}"),
        admin(Method::GET, &format!("/orgs/{org}")),
        200,
    )
    .await;
    run.expect(
        &format!("GET {ORG}"),
        admin(Method::GET, "/orgs/org_nope"),
        404,
    )
    .await;
    run.expect(
        &format!("PATCH {ORG}"),
        admin(Method::PATCH, &format!("/orgs/{org}")).json(&json!({ "documentPageRate": 1 })),
        200,
    )
    .await;
    run.expect(
        &format!("PATCH {ORG}"),
        admin(Method::PATCH, &format!("/orgs/{org}")).json(&json!({ "documentPageRate": -1 })),
        400,
    )
    .await;
    const KEYS: &str = "/admin/v1/orgs/{orgId}/api-keys";
    let all = ["jobs:read", "jobs:write", "artifacts:read"];
    let minted = run
        .expect(
            &format!("POST {KEYS}"),
            admin(Method::POST, &format!("/orgs/{org}/api-keys"))
                .json(&json!({ "label": "conformance", "scopes": all })),
            201,
        )
        .await;
    let key = minted["plaintextKey"].as_str().unwrap().to_owned();
    run.expect(
        &format!("POST {KEYS}"),
        admin(Method::POST, &format!("/orgs/{org}/api-keys"))
            .json(&json!({ "label": "x", "scopes": ["root"] })),
        400,
    )
    .await;
    let spare = run
        .expect(
            &format!("POST {KEYS}"),
            admin(Method::POST, &format!("/orgs/{org}/api-keys"))
                .header("idempotency-key", "spare")
                .json(&json!({ "label": "spare", "scopes": ["jobs:read"] })),
            201,
        )
        .await;
    let reader = spare["plaintextKey"].as_str().unwrap().to_owned();
    run.expect(
        &format!("POST {KEYS}"),
        admin(Method::POST, &format!("/orgs/{org}/api-keys"))
            .header("idempotency-key", "spare")
            .json(&json!({ "label": "spare", "scopes": ["jobs:read"] })),
        201,
    )
    .await;
    const CREDITS: &str = "/admin/v1/orgs/{orgId}/credits";
    run.expect(
        &format!("POST {CREDITS}"),
        admin(Method::POST, &format!("/orgs/{org}/credits"))
            .json(&json!({ "amount": 1000, "reason": "conformance" })),
        200,
    )
    .await;
    run.expect(
        &format!("POST {CREDITS}"),
        admin(Method::POST, &format!("/orgs/{org}/credits")).json(&json!({ "amount": 0 })),
        400,
    )
    .await;

    // Projects.
    const PROJECTS: &str = "/api/open/v1/projects";
    let created = run
        .expect(
            &format!("POST {PROJECTS}"),
            api(Method::POST, "/projects", &key).json(&json!({ "name": "Tower B" })),
            202,
        )
        .await;
    let project = created["project"]["id"].as_str().unwrap().to_owned();
    run.expect(
        &format!("POST {PROJECTS}"),
        api(Method::POST, "/projects", &key).json(&json!({ "nam": "x" })),
        400,
    )
    .await;
    run.expect(
        &format!("POST {PROJECTS}"),
        api(Method::POST, "/projects", &reader).json(&json!({ "name": "x" })),
        403,
    )
    .await;
    run.expect(
        &format!("POST {PROJECTS}"),
        api(Method::POST, "/projects", &key)
            .header("content-type", "text/plain")
            .body("x"),
        415,
    )
    .await;
    run.expect(
        &format!("GET {PROJECTS}"),
        api(Method::GET, "/projects?limit=2", &key),
        200,
    )
    .await;
    run.expect(
        &format!("GET {PROJECTS}"),
        api(Method::GET, "/projects?limit=0", &key),
        400,
    )
    .await;
    const PROJECT: &str = "/api/open/v1/projects/{projectId}";
    plangrep_test_support::eventually("the project to be ready", PATIENCE, || async {
        let body = app.get_json(&format!("/projects/{project}"), &key).await;
        (body["project"]["status"] == "ready").then_some(())
    })
    .await;
    run.expect(
        &format!("GET {PROJECT}"),
        api(Method::GET, &format!("/projects/{project}"), &key),
        200,
    )
    .await;
    run.expect(
        &format!("GET {PROJECT}"),
        api(Method::GET, "/projects/proj_nope", &key),
        404,
    )
    .await;

    // Jobs.
    let mut receiver = Receiver::start().await;
    const JOBS: &str = "/api/open/v1/projects/{projectId}/jobs";
    let create = |body: Value, idempotency_key: &str| {
        api(Method::POST, &format!("/projects/{project}/jobs"), &key)
            .header("idempotency-key", idempotency_key)
            .json(&body)
    };
    let with_webhook = json!({ "externalId": "PO-1", "webhookUrl": receiver.url() });
    let job = run
        .expect(
            &format!("POST {JOBS}"),
            create(with_webhook.clone(), "job-1"),
            202,
        )
        .await;
    let job = job["job"]["id"].as_str().unwrap().to_owned();
    run.expect(&format!("POST {JOBS}"), create(with_webhook, "job-1"), 202)
        .await;
    run.expect(&format!("POST {JOBS}"), create(json!({}), "job-1"), 422)
        .await;
    run.expect(
        &format!("POST {JOBS}"),
        create(json!({ "webhookUrl": "ftp://x" }), "job-2"),
        400,
    )
    .await;
    run.expect(
        &format!("POST {JOBS}"),
        create(json!({ "webhookUrl": "ftp://x" }), "job-2"),
        400,
    )
    .await;
    run.expect(
        &format!("POST {JOBS}"),
        api(
            Method::POST,
            "/projects/proj_01jd0000000000000000000000/jobs",
            &key,
        )
        .json(&json!({})),
        404,
    )
    .await;
    run.expect(
        &format!("GET {JOBS}"),
        api(
            Method::GET,
            &format!("/projects/{project}/jobs?externalId=PO-1"),
            &key,
        ),
        200,
    )
    .await;
    run.expect(
        &format!("GET {JOBS}"),
        api(
            Method::GET,
            &format!("/projects/{project}/jobs?status=nope"),
            &key,
        ),
        400,
    )
    .await;
    const JOB: &str = "/api/open/v1/jobs/{jobId}";
    app.wait_until_awaiting_uploads(&key, &job).await;
    run.expect(
        &format!("GET {JOB}"),
        api(Method::GET, &format!("/jobs/{job}"), &key),
        200,
    )
    .await;
    run.expect(
        &format!("GET {JOB}"),
        api(Method::GET, "/jobs/job_nope", &key),
        404,
    )
    .await;
    const COMPLETE: &str = "/api/open/v1/jobs/{jobId}/uploads/complete";
    run.expect(
        &format!("POST {COMPLETE}"),
        api(Method::POST, &format!("/jobs/{job}/uploads/complete"), &key),
        409,
    )
    .await;
    const RESULT: &str = "/api/open/v1/jobs/{jobId}/result";
    run.expect(
        &format!("GET {RESULT}"),
        api(Method::GET, &format!("/jobs/{job}/result"), &key),
        409,
    )
    .await;
    const RESUME: &str = "/api/open/v1/jobs/{jobId}/resume";
    run.expect(
        &format!("POST {RESUME}"),
        api(Method::POST, &format!("/jobs/{job}/resume"), &key),
        409,
    )
    .await;

    // Uploads (the status only: the route's JSON is recorded like any other).
    const FILES: &str = "/api/open/v1/jobs/{jobId}/files";
    let pdf = PdfBuilder::new()
        .page(612.0, 792.0, &["Section 01 10 00"])
        .build();
    let upload = app
        .upload(&key, &job, vec![UploadFile::pdf("spec.pdf", pdf)])
        .await;
    let status = upload.status().as_u16();
    let content_type = upload.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = upload.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/json; charset=utf-8");
    run.exchanges
        .push(json!({ "operation": format!("POST {FILES}"), "status": status, "body": body }));
    run.expect(
        &format!("POST {FILES}"),
        api(Method::POST, &format!("/jobs/{job}/files"), &key)
            .header("content-type", "text/plain")
            .body("x"),
        415,
    )
    .await;
    run.expect(
        &format!("POST {COMPLETE}"),
        api(Method::POST, &format!("/jobs/{job}/uploads/complete"), &key),
        202,
    )
    .await;
    app.wait_for_job(&key, &job, &["completed", "completed_with_errors"])
        .await;
    run.expect(
        &format!("GET {RESULT}"),
        api(Method::GET, &format!("/jobs/{job}/result"), &key),
        200,
    )
    .await;
    const EVENTS: &str = "/api/open/v1/jobs/{jobId}/events";
    run.expect(
        &format!("GET {EVENTS}"),
        api(Method::GET, &format!("/jobs/{job}/events"), &key),
        200,
    )
    .await;
    const CANCEL: &str = "/api/open/v1/jobs/{jobId}/cancel";
    run.expect(
        &format!("POST {CANCEL}"),
        api(Method::POST, &format!("/jobs/{job}/cancel"), &key),
        409,
    )
    .await;
    let other = app.create_job(&key).await;
    run.expect(
        &format!("POST {CANCEL}"),
        api(Method::POST, &format!("/jobs/{other}/cancel"), &key),
        202,
    )
    .await;

    // Webhook deliveries.
    receiver.next(PATIENCE).await;
    const DELIVERIES: &str = "/api/open/v1/jobs/{jobId}/webhook-deliveries";
    let delivery = app
        .wait_for_delivery(&key, &job, 1, "event 1 delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    run.expect(
        &format!("GET {DELIVERIES}"),
        api(
            Method::GET,
            &format!("/jobs/{job}/webhook-deliveries"),
            &key,
        ),
        200,
    )
    .await;
    run.expect(
        &format!("GET {DELIVERIES}"),
        api(
            Method::GET,
            "/jobs/job_01jd0000000000000000000000/webhook-deliveries",
            &key,
        ),
        404,
    )
    .await;
    const REDELIVER: &str = "/api/open/v1/webhook-deliveries/{deliveryId}/redeliver";
    let id = delivery["id"].as_str().unwrap();
    run.expect(
        &format!("POST {REDELIVER}"),
        api(
            Method::POST,
            &format!("/webhook-deliveries/{id}/redeliver"),
            &key,
        ),
        202,
    )
    .await;
    run.expect(
        &format!("POST {REDELIVER}"),
        api(Method::POST, "/webhook-deliveries/dlv_nope/redeliver", &key),
        404,
    )
    .await;

    // Webhook secret rotation.
    const ROTATE: &str = "/api/open/v1/jobs/{jobId}/webhook-secret/rotate";
    let rotated = run
        .expect(
            &format!("POST {ROTATE}"),
            api(
                Method::POST,
                &format!("/jobs/{job}/webhook-secret/rotate"),
                &key,
            ),
            200,
        )
        .await;
    assert!(
        rotated["webhookSigningSecret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    run.expect(
        &format!("POST {ROTATE}"),
        api(
            Method::POST,
            &format!("/jobs/{other}/webhook-secret/rotate"),
            &key,
        ),
        409,
    )
    .await;
    run.expect(
        &format!("POST {ROTATE}"),
        api(
            Method::POST,
            "/jobs/job_01jd0000000000000000000000/webhook-secret/rotate",
            &key,
        ),
        404,
    )
    .await;

    // Revocation last: the key stops working.
    const REVOKE: &str = "/admin/v1/api-keys/{keyId}/revoke";
    let spare_id = spare["key"]["id"].as_str().unwrap();
    run.expect(
        &format!("POST {REVOKE}"),
        admin(Method::POST, &format!("/api-keys/{spare_id}/revoke")),
        200,
    )
    .await;
    run.expect(
        &format!("POST {REVOKE}"),
        admin(Method::POST, "/api-keys/key_nope/revoke"),
        404,
    )
    .await;
    run.expect(
        &format!("GET {PROJECTS}"),
        api(Method::GET, "/projects", &reader),
        401,
    )
    .await;

    validate(&app, &run.exchanges).await;
    app.stop().await;
}

/// Runs the validator over `exchanges` against the live document.
async fn validate(app: &TestApp, exchanges: &[Value]) {
    let document = app.openapi_document().await;
    let dir = std::env::temp_dir().join(format!(
        "plangrep-conformance-{}",
        plangrep_test_support::random_token()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (doc_path, run_path) = (dir.join("openapi.json"), dir.join("responses.json"));
    std::fs::write(&doc_path, document).unwrap();
    std::fs::write(&run_path, serde_json::to_vec(exchanges).unwrap()).unwrap();
    let python = python_tools();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(VALIDATE)
            .arg(&doc_path)
            .arg(&run_path)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "responses that contradict /openapi.json:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
