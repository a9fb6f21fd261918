//! The public contract to the letter (issue 8): scope before input, strings stored as
//! given, one meaning per body, retries that never lose a secret, Idempotency-Key on every
//! mutating POST, redelivery after a 410, the JSON charset, RateLimit-* everywhere, and
//! 413s that reach clients sending the whole body first.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, expect_error, expect_status, python_tools};

#[tokio::test]
async fn a_key_without_the_scope_gets_403_whatever_the_path_headers_or_body() {
    let app = TestApp::spawn().await;
    let org = app.create_org("Readers").await;
    let reader = app.create_key(&org, &["jobs:read"]).await;
    let writer = app.create_key(&org, &["jobs:write"]).await;
    let owner = app
        .create_key(&org, &["jobs:read", "jobs:write", "artifacts:read"])
        .await;
    let project = app.create_ready_project(&owner, "Scoped").await;

    let refusals = [
        // Bad body, bad path, bad header: the scope is checked first.
        app.api(Method::POST, &format!("/projects/{project}/jobs"), &reader)
            .header("content-type", "application/json")
            .body(r#"{"x":1}"#),
        app.api(Method::POST, "/projects/not-an-id/jobs", &reader)
            .body("not json"),
        app.api(Method::POST, "/projects", &reader)
            .header("idempotency-key", "")
            .json(&json!({ "name": null, "name": 5 })),
        app.api(Method::POST, "/jobs/job_nope/cancel", &reader),
        app.api(Method::POST, "/webhook-deliveries/nope/redeliver", &reader),
        app.api(Method::POST, "/jobs/nope/files", &reader)
            .header("content-type", "text/plain")
            .body("garbage"),
        // Reads need jobs:read (whatever the query), results artifacts:read.
        app.api(Method::GET, "/projects?limit=zero&bogus=1", &writer),
        app.api(Method::GET, "/projects/nope/jobs?status=nope", &writer),
        app.api(Method::GET, "/jobs/nope/result", &reader),
    ];
    for request in refusals {
        expect_error(request.send().await.unwrap(), 403, "insufficient_scope").await;
    }
    // A method the route does not serve stays a 405.
    let trace = app.api(Method::from_bytes(b"TRACE").unwrap(), "/projects", &reader);
    expect_error(trace.send().await.unwrap(), 405, "method_not_allowed").await;
    // Authentication comes before the scope and the input, too.
    let anonymous = app
        .http
        .post(format!("{}/api/open/v1/projects/nope/jobs", app.base_url))
        .body("{");
    expect_error(anonymous.send().await.unwrap(), 401, "unauthorized").await;
    let admin = app
        .http
        .post(format!("{}/admin/v1/orgs/nope/api-keys", app.base_url))
        .body("{");
    expect_error(admin.send().await.unwrap(), 401, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn an_external_id_comes_back_byte_for_byte() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "As given").await;
    let long = "é".repeat(180);
    for external_id in ["", "   ", "a\tb", " padded\n", long.as_str()] {
        let created = expect_status(
            app.post_job(&key, &project, json!({ "externalId": external_id }))
                .await,
            202,
        )
        .await;
        assert_eq!(created["job"]["externalId"], external_id);
        let id = created["job"]["id"].as_str().unwrap();
        let read = app.get_json(&format!("/jobs/{id}"), &key).await;
        assert_eq!(read["job"]["externalId"], external_id);
    }
    let too_long = "x".repeat(181);
    let error = expect_error(
        app.post_job(&key, &project, json!({ "externalId": too_long }))
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "externalId");
    app.stop().await;
}

#[tokio::test]
async fn the_webhook_url_limit_applies_to_the_stored_form() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Long URLs").await;
    // 2020 bytes as sent, about 5,400 once percent-encoded.
    let url = format!("https://example.com/{}", "é".repeat(1000));
    assert!(url.len() <= 2048);
    let error = expect_error(
        app.post_job(&key, &project, json!({ "webhookUrl": url }))
            .await,
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(error["details"][0]["field"], "webhookUrl");
    // What is accepted is stored, shown and replayed as one string.
    let url = format!("http://127.0.0.1:9/{}", "é".repeat(100));
    let send = || {
        app.api(Method::POST, &format!("/projects/{project}/jobs"), &key)
            .header("idempotency-key", "long-url")
            .json(&json!({ "webhookUrl": url }))
            .send()
    };
    let created = expect_status(send().await.unwrap(), 202).await;
    let stored = created["job"]["webhookUrl"].as_str().unwrap().to_owned();
    assert!(stored.len() <= 2048);
    let id = created["job"]["id"].as_str().unwrap();
    let read = app.get_json(&format!("/jobs/{id}"), &key).await;
    assert_eq!(read["job"]["webhookUrl"], stored.as_str());
    let replay = expect_status(send().await.unwrap(), 202).await;
    assert_eq!(replay["job"]["webhookUrl"], stored.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_repeated_json_key_is_400_and_null_means_absent_to_the_fingerprint_too() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "One meaning").await;
    let duplicate = app
        .api(Method::POST, &format!("/projects/{project}/jobs"), &key)
        .header("content-type", "application/json")
        .body(r#"{"externalId": "a", "externalId": "b"}"#)
        .send()
        .await
        .unwrap();
    let error = expect_error(duplicate, 400, "invalid_request").await;
    assert!(
        error["message"].as_str().unwrap().contains("duplicate key"),
        "{error}"
    );

    let send = |body: &'static str| {
        app.api(Method::POST, &format!("/projects/{project}/jobs"), &key)
            .header("idempotency-key", "null-or-absent")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = expect_status(
        send(r#"{"externalId": "po-1", "webhookUrl": null}"#)
            .await
            .unwrap(),
        202,
    )
    .await;
    let retry = expect_status(send(r#"{"externalId": "po-1"}"#).await.unwrap(), 202).await;
    assert_eq!(retry["idempotent"], true);
    assert_eq!(retry["job"]["id"], first["job"]["id"]);
    app.stop().await;
}

#[tokio::test]
async fn a_retry_replays_the_stored_job_and_secret_whatever_validation_says_now() {
    let mut app = TestApp::spawn().await; // dev mode: loopback receivers accepted
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Retries").await;
    let body = json!({ "webhookUrl": "http://127.0.0.1:9/hook" });
    let http = app.http.clone();
    let create = |base_url: &str, idempotency_key: &str, body: &Value| {
        http.post(format!("{base_url}/api/open/v1/projects/{project}/jobs"))
            .bearer_auth(&key)
            .header("idempotency-key", idempotency_key)
            .json(body)
            .send()
    };
    let first = expect_status(
        create(&app.base_url, "lost-response", &body).await.unwrap(),
        202,
    )
    .await;

    // A replica whose destination check now refuses the URL (as a host that resolves
    // elsewhere would be refused): the stored response wins, secret included.
    let mut strict = app.settings.clone();
    strict.set("PLANGREP_WEBHOOK_ALLOW_INSECURE", "false".to_owned());
    let replica = app.start_gateway(strict).await;
    let replay = expect_status(
        create(&replica.url, "lost-response", &body).await.unwrap(),
        202,
    )
    .await;
    assert_eq!(replay["idempotent"], true);
    assert_eq!(replay["job"]["id"], first["job"]["id"]);
    assert_eq!(
        replay["webhookSigningSecret"],
        first["webhookSigningSecret"]
    );

    // A refusal decided by the gateway is stored like any 4xx: replayed, and the key is
    // bound to its request.
    let refused = expect_error(
        create(&replica.url, "refused", &body).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(refused["details"][0]["field"], "webhookUrl");
    let again = expect_status(create(&replica.url, "refused", &body).await.unwrap(), 400).await;
    assert_eq!(again["idempotent"], true);
    assert_eq!(again["error"]["message"], refused["message"]);
    expect_error(
        create(&replica.url, "refused", &json!({})).await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;
    // And so is a body refused before any field is read (syntax, unknown fields).
    let raw = |idempotency_key: &'static str, body: &'static str| {
        http.post(format!(
            "{}/api/open/v1/projects/{project}/jobs",
            replica.url
        ))
        .bearer_auth(&key)
        .header("idempotency-key", idempotency_key)
        .header("content-type", "application/json")
        .body(body)
        .send()
    };
    for body in [
        r#"{"x": 1}"#,
        "{",
        r#"{"externalId": "a", "externalId": "b"}"#,
    ] {
        let first = expect_error(raw(body, body).await.unwrap(), 400, "invalid_request").await;
        let again = expect_status(raw(body, body).await.unwrap(), 400).await;
        assert_eq!(again["idempotent"], true, "{body}");
        assert_eq!(again["error"]["message"], first["message"]);
        expect_error(
            raw(body, "{}").await.unwrap(),
            422,
            "idempotency_key_reused",
        )
        .await;
    }
    // Same for project names.
    let name = |body: Value| {
        http.post(format!("{}/api/open/v1/projects", replica.url))
            .bearer_auth(&key)
            .header("idempotency-key", "bad-name")
            .json(&body)
            .send()
    };
    expect_error(
        name(json!({ "name": "  " })).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    let again = expect_status(name(json!({ "name": "  " })).await.unwrap(), 400).await;
    assert_eq!(again["idempotent"], true);
    replica.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn redeliver_and_the_admin_api_take_an_idempotency_key() {
    let app = TestApp::spawn().await;
    let create_org = |key: &str, name: &str| {
        app.admin(Method::POST, "/orgs")
            .header("idempotency-key", key)
            .json(&json!({ "name": name }))
            .send()
    };
    let first = expect_status(create_org("org-1", "Once").await.unwrap(), 201).await;
    let replay = expect_status(create_org("org-1", "Once").await.unwrap(), 201).await;
    assert_eq!(replay["idempotent"], true);
    assert_eq!(replay["org"]["id"], first["org"]["id"]);
    expect_error(
        create_org("org-1", "Twice").await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;
    let org = first["org"]["id"].as_str().unwrap();

    // A minted key is replayed (it is shown once, and on replays), sealed at rest.
    let mint = || {
        app.admin(Method::POST, &format!("/orgs/{org}/api-keys"))
            .header("idempotency-key", "mint-1")
            .json(&json!({ "label": "ci", "scopes": ["jobs:read", "jobs:write"] }))
            .send()
    };
    let minted = expect_status(mint().await.unwrap(), 201).await;
    let again = expect_status(mint().await.unwrap(), 201).await;
    assert_eq!(again["plaintextKey"], minted["plaintextKey"]);
    let key = minted["plaintextKey"].as_str().unwrap().to_owned();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let bodies: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT body FROM gateway.idempotency_records WHERE scope = 'admin'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert!(!bodies.is_empty());
    for body in bodies {
        assert!(!body.windows(key.len()).any(|w| w == key.as_bytes()));
    }

    let grant = || {
        app.admin(Method::POST, &format!("/orgs/{org}/credits"))
            .header("idempotency-key", "grant-1")
            .json(&json!({ "amount": 100, "reason": "once" }))
            .send()
    };
    expect_status(grant().await.unwrap(), 200).await;
    assert_eq!(
        expect_status(grant().await.unwrap(), 200).await["balance"],
        100
    );
    assert_eq!(app.balance(org).await, 100, "granted once");
    // Expired records are reaped on the way and no longer hold their key.
    sqlx::query("UPDATE gateway.idempotency_records SET expires_at = now() WHERE key = 'grant-1'")
        .execute(&mut db)
        .await
        .unwrap();
    let granted_again = expect_status(grant().await.unwrap(), 200).await;
    assert!(granted_again.get("idempotent").is_none());
    assert_eq!(app.balance(org).await, 200, "a fresh request after expiry");

    // Redelivery: the second request with the key schedules nothing more.
    let mut receiver = plangrep_test_support::receiver::Receiver::start().await;
    let (job_id, _) = app.create_job_with_webhook(&key, &receiver.url()).await;
    receiver.next(PATIENCE).await;
    let delivery = app
        .wait_for_delivery(&key, &job_id, 1, "event 1 delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let id = delivery["id"].as_str().unwrap();
    let redeliver = || {
        app.api(
            Method::POST,
            &format!("/webhook-deliveries/{id}/redeliver"),
            &key,
        )
        .header("idempotency-key", "again-1")
        .send()
    };
    let first = expect_status(redeliver().await.unwrap(), 202).await;
    assert!(first.get("idempotent").is_none());
    let replay = expect_status(redeliver().await.unwrap(), 202).await;
    assert_eq!(replay["idempotent"], true);
    receiver.next(PATIENCE).await;
    let done = app
        .wait_for_delivery(&key, &job_id, 1, "the manual attempt", |d| {
            d["attempts"].as_array().unwrap().len() >= 2 && d["state"] == "succeeded"
        })
        .await;
    assert_eq!(
        done["attempts"].as_array().unwrap().len(),
        2,
        "one manual attempt"
    );
    app.stop().await;
}

#[tokio::test]
async fn redelivering_after_a_410_revives_the_jobs_webhook() {
    use plangrep_test_support::receiver::{Receiver, Reply};
    let app = TestApp::spawn().await;
    let mut receiver = Receiver::start().await;
    receiver.script([Reply::Status(410)]);
    let (_org, key) = app.create_customer().await;
    let (job_id, _secret) = app.create_job_with_webhook(&key, &receiver.url()).await;
    receiver.next(PATIENCE).await;
    let stopped = app
        .wait_for_delivery(&key, &job_id, 2, "event 2 stopped", |d| {
            d["state"] == "stopped"
        })
        .await;
    assert!(stopped["attempts"].as_array().unwrap().is_empty());

    // The receiver is back: redeliver the event it never got.
    let id = stopped["id"].as_str().unwrap();
    let pending = expect_status(app.redeliver(&key, id).await, 202).await;
    assert_eq!(pending["delivery"]["state"], "pending");
    let got = receiver.next(PATIENCE).await;
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["data"]["sequence"], 2);
    let delivered = app
        .wait_for_delivery(&key, &job_id, 2, "event 2 delivered", |d| {
            d["state"] == "succeeded"
        })
        .await;
    assert_eq!(delivered["attempts"][0]["trigger"], "manual");

    // Later events reach the receiver again.
    let cancelled = app
        .api(Method::POST, &format!("/jobs/{job_id}/cancel"), &key)
        .send()
        .await
        .unwrap();
    expect_status(cancelled, 202).await;
    let got = receiver.next(PATIENCE).await;
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["data"]["job"]["status"], "cancelled");
    app.stop().await;
}

#[tokio::test]
async fn every_json_response_declares_utf8_and_every_public_one_its_rate_limit() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let public = [
        app.api(Method::GET, "/projects", &key),
        app.api(Method::GET, "/projects/nope", &key),
        app.api(Method::POST, "/projects", &key).body("{"),
        app.api(Method::GET, "/no-such-route", &key),
        app.http.get(format!("{}/no-such-route", app.base_url)),
        app.api(Method::DELETE, "/projects", &key),
        app.http
            .get(format!("{}/api/open/v1/projects", app.base_url)),
        app.api(Method::POST, "/projects", &key)
            .header("content-type", "application/json")
            .body(vec![b' '; 2 * 1024 * 1024]),
        app.http.get(format!("{}/openapi.json", app.base_url)),
    ];
    for request in public {
        let response = request.send().await.unwrap();
        let what = format!("{} {}", response.status(), response.url());
        assert_eq!(
            response.headers()["content-type"],
            "application/json; charset=utf-8",
            "{what}"
        );
        for header in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
            assert!(
                response.headers().contains_key(header),
                "{what} lacks {header}"
            );
        }
    }
    let admin = app.admin(Method::GET, "/orgs/nope").send().await.unwrap();
    assert_eq!(
        admin.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_body_sent_whole_on_a_kept_alive_connection_always_gets_its_413() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let script = r#"
import json, sys, requests
base, key = sys.argv[1], sys.argv[2]
session = requests.Session()
headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}
body = json.dumps({"name": "x" * (2 * 1024 * 1024)})
for i in range(20):
    r = session.post(base + "/api/open/v1/projects", data=body, headers=headers, timeout=30)
    assert r.status_code == 413, (i, r.status_code, r.text)
    assert r.json()["error"]["code"] == "payload_too_large", r.text
    ok = session.get(base + "/api/open/v1/projects", headers=headers, timeout=30)
    assert ok.status_code == 200, (i, ok.status_code)
print("ok")
"#;
    let python = python_tools();
    let base_url = app.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &base_url, &key])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    app.stop().await;
}
