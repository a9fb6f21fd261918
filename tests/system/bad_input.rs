//! Bad input gets a clear 4xx in the SPEC format and changes nothing.

use serde_json::json;

use crate::helpers::{Options, TestApp, expect_error};

#[tokio::test]
async fn missing_or_invalid_bearer_tokens_are_401() {
    let app = TestApp::spawn().await;
    let url = format!(
        "{}/api/open/v1/projects/proj_01jd0000000000000000000000",
        app.base_url
    );
    let missing = app.http.get(&url).send().await.unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    expect_error(missing, 401, "unauthorized").await;
    for token in ["nope", "pgk_live_forged", "Basic abc"] {
        let response = app.http.get(&url).bearer_auth(token).send().await.unwrap();
        expect_error(response, 401, "unauthorized").await;
    }
    let wrong_scheme = app
        .http
        .get(&url)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    expect_error(wrong_scheme, 401, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn invalid_job_bodies_are_400_with_details_and_create_nothing() {
    let app = TestApp::spawn_with(Options {
        allow_insecure_webhooks: false,
        ..Options::default()
    })
    .await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Validation").await;

    let cases = [
        (json!({ "externalID": "typo" }), "externalID"),
        (json!({ "externalId": "x".repeat(181) }), "externalId"),
        (json!({ "externalId": 42 }), "externalId"),
        (
            json!({ "webhookUrl": "http://hooks.example.com/x" }),
            "webhookUrl",
        ),
        (json!({ "webhookUrl": "not a url" }), "webhookUrl"),
        (
            json!({ "webhookUrl": "https://user:pw@hooks.example.com/" }),
            "webhookUrl",
        ),
        (
            json!({ "webhookUrl": "https://127.0.0.1/hook" }),
            "webhookUrl",
        ),
        (
            json!({ "webhookUrl": "https://169.254.169.254/latest" }),
            "webhookUrl",
        ),
        (json!({ "webhookUrl": "https://[::1]/hook" }), "webhookUrl"),
        (
            json!({ "webhookUrl": "https://10.0.0.1/hook" }),
            "webhookUrl",
        ),
        (
            json!({ "webhookUrl": "https://localhost/hook" }),
            "webhookUrl",
        ),
    ];
    for (body, field) in cases {
        let response = app.post_job(&key, &project, body.clone()).await;
        let error = expect_error(response, 400, "invalid_request").await;
        assert_eq!(error["details"][0]["field"], field, "for {body}");
        assert!(
            error["details"][0]["issue"]
                .as_str()
                .is_some_and(|i| !i.is_empty())
        );
    }

    let malformed = app
        .api(
            reqwest::Method::POST,
            &format!("/projects/{project}/jobs"),
            &key,
        )
        .header("content-type", "application/json")
        .body("{\"externalId\": ")
        .send()
        .await
        .unwrap();
    expect_error(malformed, 400, "invalid_request").await;

    let not_json = app
        .api(
            reqwest::Method::POST,
            &format!("/projects/{project}/jobs"),
            &key,
        )
        .header("content-type", "text/plain")
        .body("externalId=1")
        .send()
        .await
        .unwrap();
    expect_error(not_json, 415, "unsupported_media_type").await;

    // Nothing was created by any of the refused requests.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM orchestrator.jobs")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(jobs, 0);

    // A public https destination is accepted outside dev mode.
    let ok = app
        .post_job(
            &key,
            &project,
            json!({ "webhookUrl": "https://93.184.216.34/hook" }),
        )
        .await;
    assert_eq!(ok.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_foreign_projects_are_404() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let (_other_org, other_key) = app.create_customer().await;
    let foreign_project = app.create_ready_project(&other_key, "Theirs").await;

    let unknown = app
        .post_job(&key, "proj_01jd0000000000000000000000", json!({}))
        .await;
    expect_error(unknown, 404, "not_found").await;
    let malformed_id = app.post_job(&key, "job_not-a-project", json!({})).await;
    expect_error(malformed_id, 404, "not_found").await;
    let foreign = app.post_job(&key, &foreign_project, json!({})).await;
    expect_error(foreign, 404, "not_found").await;
    let foreign_read = app
        .api(
            reqwest::Method::GET,
            &format!("/projects/{foreign_project}"),
            &key,
        )
        .send()
        .await
        .unwrap();
    expect_error(foreign_read, 404, "not_found").await;

    // The owner still sees it, and another org's job is equally invisible.
    let created = app.post_job(&other_key, &foreign_project, json!({})).await;
    let job: serde_json::Value = created.json().await.unwrap();
    let job_id = job["job"]["id"].as_str().unwrap();
    let foreign_job = app
        .api(reqwest::Method::GET, &format!("/jobs/{job_id}"), &key)
        .send()
        .await
        .unwrap();
    expect_error(foreign_job, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn keys_without_the_scope_get_403_and_unknown_routes_404() {
    let app = TestApp::spawn().await;
    let org = app.create_org("Readers").await;
    let read_only = app.create_key(&org, &["jobs:read"]).await;
    let response = app
        .api(reqwest::Method::POST, "/projects", &read_only)
        .json(&json!({ "name": "nope" }))
        .send()
        .await
        .unwrap();
    expect_error(response, 403, "insufficient_scope").await;

    let unknown_route = app
        .api(reqwest::Method::GET, "/nothing-here", &read_only)
        .send()
        .await
        .unwrap();
    expect_error(unknown_route, 404, "not_found").await;
    let wrong_method = app
        .api(reqwest::Method::DELETE, "/projects", &read_only)
        .send()
        .await
        .unwrap();
    expect_error(wrong_method, 405, "method_not_allowed").await;

    let echoed = app
        .api(reqwest::Method::GET, "/nothing-here", &read_only)
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");
    app.stop().await;
}
