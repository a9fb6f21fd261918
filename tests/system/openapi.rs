//! The OpenAPI document matches the server: every route is documented with SPEC's
//! parameter names, the document passes a strict OpenAPI 3.1 validator, the reference page
//! renders it, and a property-based run of the document (schemathesis) against the live
//! stack finds no 5xx and no response that contradicts it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{TestApp, python_tools};

/// Every operation the gateway serves, as `METHOD path`.
const OPERATIONS: [&str; 23] = [
    "GET /api/open/v1/jobs/{jobId}",
    "GET /api/open/v1/jobs/{jobId}/events",
    "GET /api/open/v1/jobs/{jobId}/result",
    "POST /api/open/v1/jobs/{jobId}/uploads/complete",
    "PATCH /admin/v1/orgs/{orgId}",
    "GET /api/open/v1/jobs/{jobId}/webhook-deliveries",
    "GET /api/open/v1/projects",
    "GET /api/open/v1/projects/{projectId}",
    "GET /api/open/v1/projects/{projectId}/jobs",
    "GET /admin/v1/dead-letters",
    "GET /admin/v1/orgs/{orgId}",
    "POST /admin/v1/api-keys/{keyId}/revoke",
    "POST /admin/v1/dead-letters/redrive",
    "POST /admin/v1/orgs",
    "POST /admin/v1/orgs/{orgId}/api-keys",
    "POST /admin/v1/orgs/{orgId}/credits",
    "POST /api/open/v1/jobs/{jobId}/cancel",
    "POST /api/open/v1/jobs/{jobId}/files",
    "POST /api/open/v1/jobs/{jobId}/resume",
    "POST /api/open/v1/projects",
    "POST /api/open/v1/projects/{projectId}/jobs",
    "POST /api/open/v1/webhook-deliveries/{deliveryId}/redeliver",
    "POST /api/open/v1/jobs/{jobId}/webhook-secret/rotate",
];

#[tokio::test]
async fn the_document_lists_every_route_and_the_reference_page_renders_it() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .http
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let expected: BTreeSet<String> = OPERATIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(documented, expected);
    // Every public operation declares the scope the gateway checks before any input.
    for operation in OPERATIONS.iter().filter(|o| o.contains("/api/open/")) {
        let (method, path) = operation.split_once(' ').unwrap();
        let route = path
            .replace("{jobId}", "{job_id}")
            .replace("{projectId}", "{project_id}")
            .replace("{deliveryId}", "{delivery_id}");
        assert!(
            plangrep_api_gateway::auth::route_scope(method, &route).is_some(),
            "{operation} has no scope"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for status in ["400", "401", "404", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} lacks {status}"
                );
            }
            assert!(
                operation["security"].is_array(),
                "{method} {path} has no security"
            );
            // Path parameters are named as SPEC names them (camelCase), and match the path.
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().unwrap();
                    assert!(!name.contains('_'), "{method} {path}: {name}");
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: {name}"
                    );
                }
            }
            if method == "post" {
                let takes_key = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "header" && p["name"] == "Idempotency-Key");
                assert!(takes_key, "POST {path} takes no Idempotency-Key");
            }
        }
    }

    let page = app
        .http
        .get(format!("{}/docs", app.base_url))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    for operation in OPERATIONS {
        let path = operation.split_once(' ').unwrap().1;
        assert!(html.contains(path), "{path} missing from /docs");
    }
    if std::env::var_os("TEST_LOG").is_some() {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap());
    }
    app.stop().await;
}

#[tokio::test]
async fn the_document_passes_a_strict_openapi_3_1_validator() {
    let app = TestApp::spawn().await;
    let document = app.openapi_document().await;
    let path = std::env::temp_dir().join(format!(
        "plangrep-openapi-{}.json",
        plangrep_test_support::random_token()
    ));
    std::fs::write(&path, &document).unwrap();
    let python = python_tools();
    let checked = path.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([
                "-c",
                "import json, sys\n\
                 from openapi_spec_validator import validate\n\
                 from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
                 validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n\
                 print('valid')",
            ])
            .arg(&checked)
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "the document is not valid OpenAPI 3.1:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // No dangling reference either (a generator stops at the first one).
    let doc: Value = serde_json::from_str(&document).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for reference in document.split("\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_contract_violation() {
    let app = TestApp::spawn_with(
        crate::helpers::Options::default().with("PLANGREP_RATE_LIMIT_BURST", "1000000"),
    )
    .await;
    let (_org, key) = app.create_customer().await;
    app.create_ready_project(&key, "Fuzzed").await;
    // The public API with an API key, the admin API with the admin token.
    run_schemathesis(&app, &key, "--exclude-path-regex").await;
    run_schemathesis(&app, crate::helpers::ADMIN_TOKEN, "--include-path-regex").await;
    app.stop().await;
}

async fn run_schemathesis(app: &TestApp, token: &str, admin_filter: &'static str) {
    let python = python_tools();
    let schemathesis = python.with_file_name("schemathesis");
    let base_url = app.base_url.clone();
    let token = token.to_owned();
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".into());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(schemathesis)
            .args([
                "run",
                &format!("{base_url}/openapi.json"),
                admin_filter,
                "^/admin/",
                "--header",
                &format!("Authorization: Bearer {token}"),
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                &examples,
                "--seed",
                "1138",
                // One worker: hypothesis' source introspection is not thread-safe and
                // fails runs with internal errors under several workers.
                "--workers",
                "1",
                "--request-timeout",
                "10",
                "--suppress-health-check",
                "all",
                "--no-color",
            ])
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}"
    );
}
