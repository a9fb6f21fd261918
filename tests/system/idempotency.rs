//! SPEC §2: `Idempotency-Key` on mutating requests, Stripe-grade.

use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_error, expect_status};

async fn jobs_in_db(app: &TestApp) -> i64 {
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM orchestrator.jobs")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

fn create_job(
    app: &TestApp,
    base_url: &str,
    key: &str,
    project: &str,
    idempotency_key: &str,
    body: &Value,
) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{base_url}/api/open/v1/projects/{project}/jobs"))
        .bearer_auth(key)
        .header("idempotency-key", idempotency_key)
        .json(body)
}

#[tokio::test]
async fn a_replay_after_a_gateway_restart_returns_the_same_job_and_secret() {
    let mut app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Idempotent").await;
    let body = json!({ "externalId": "PO-7", "webhookUrl": "https://93.184.216.34/hook" });

    // The first request goes through a gateway that is then stopped ("the response was
    // lost"); the retry reaches a freshly started one.
    let before_restart = app.start_gateway_replica().await;
    let first = expect_status(
        create_job(
            &app,
            &before_restart.url,
            &key,
            &project,
            "create-po-7",
            &body,
        )
        .send()
        .await
        .unwrap(),
        202,
    )
    .await;
    assert!(first.get("idempotent").is_none());
    // The same body with other key order and spacing is the same request.
    let reordered = json!({ "webhookUrl": "https://93.184.216.34/hook", "externalId": "PO-7" });
    before_restart.stop().await;
    let after_restart = app.start_gateway_replica().await;
    let replay = expect_status(
        create_job(
            &app,
            &after_restart.url,
            &key,
            &project,
            "create-po-7",
            &reordered,
        )
        .send()
        .await
        .unwrap(),
        202,
    )
    .await;
    assert_eq!(replay["idempotent"], true);
    assert_eq!(replay["job"]["id"], first["job"]["id"]);
    assert_eq!(
        replay["webhookSigningSecret"],
        first["webhookSigningSecret"]
    );
    assert!(
        replay["webhookSigningSecret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(jobs_in_db(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn reusing_a_key_for_a_different_request_is_422_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Reuse").await;
    let send = |body: Value| create_job(&app, &app.base_url, &key, &project, "k-1", &body).send();
    expect_status(send(json!({ "externalId": "a" })).await.unwrap(), 202).await;
    let reused = send(json!({ "externalId": "b" })).await.unwrap();
    expect_error(reused, 422, "idempotency_key_reused").await;
    assert_eq!(jobs_in_db(&app).await, 1);

    // The scope is (org, route, key): the same key on another route is independent.
    let project_create = app
        .api(reqwest::Method::POST, "/projects", &key)
        .header("idempotency-key", "k-1")
        .json(&json!({ "name": "Other" }))
        .send()
        .await
        .unwrap();
    expect_status(project_create, 202).await;
    app.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_identical_creates_make_exactly_one_job() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Stampede").await;
    let body = json!({ "webhookUrl": "https://93.184.216.34/hook" });

    let requests =
        (0..50).map(|_| create_job(&app, &app.base_url, &key, &project, "stampede", &body).send());
    let responses = futures_util::future::join_all(requests).await;
    let mut created = Vec::new();
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            202 => created.push(response.json::<Value>().await.unwrap()),
            409 => {
                expect_error(response, 409, "idempotency_request_in_progress").await;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    assert!(!created.is_empty());
    assert!(
        created
            .iter()
            .all(|c| c["job"]["id"] == created[0]["job"]["id"])
    );
    assert!(
        created
            .iter()
            .all(|c| c["webhookSigningSecret"] == created[0]["webhookSigningSecret"])
    );
    assert_eq!(jobs_in_db(&app).await, 1);
    app.stop().await;
}

/// Creates with distinct keys share transactions (ADR 0023): each key keeps its own
/// job and secret, and each retry, concurrent again, replays its own.
#[tokio::test]
async fn concurrent_creates_with_distinct_keys_each_replay_their_own_job() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Together").await;
    let send = |n: usize| {
        let body = json!({ "externalId": format!("sheet-{n}"), "webhookUrl": "https://93.184.216.34/hook" });
        create_job(
            &app,
            &app.base_url,
            &key,
            &project,
            &format!("sheet-{n}"),
            &body,
        )
        .send()
    };

    let mut first = Vec::new();
    for response in futures_util::future::join_all((0..30).map(send)).await {
        first.push(expect_status(response.unwrap(), 202).await);
    }
    for (n, created) in first.iter().enumerate() {
        assert_eq!(created["job"]["externalId"], format!("sheet-{n}"));
        assert!(created.get("idempotent").is_none());
    }
    let mut ids: Vec<&str> = first
        .iter()
        .map(|c| c["job"]["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30, "one job per key");

    let retries = futures_util::future::join_all((0..30).map(send)).await;
    for (created, response) in first.iter().zip(retries) {
        let replay = expect_status(response.unwrap(), 202).await;
        assert_eq!(replay["idempotent"], true);
        assert_eq!(replay["job"]["id"], created["job"]["id"]);
        assert_eq!(
            replay["webhookSigningSecret"],
            created["webhookSigningSecret"]
        );
    }
    assert_eq!(jobs_in_db(&app).await, 30);
    app.stop().await;
}

#[tokio::test]
async fn a_4xx_outcome_is_stored_and_replayed() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let unknown = "proj_01jd0000000000000000000000";
    let send = || create_job(&app, &app.base_url, &key, unknown, "ghost", &json!({})).send();

    let first = expect_status(send().await.unwrap(), 404).await;
    assert_eq!(first["error"]["code"], "not_found");
    assert!(first.get("idempotent").is_none());
    let replay = expect_status(send().await.unwrap(), 404).await;
    assert_eq!(replay["error"]["code"], "not_found");
    assert_eq!(replay["error"]["message"], first["error"]["message"]);
    assert_eq!(replay["idempotent"], true);
    app.stop().await;
}

#[tokio::test]
async fn cancel_with_a_key_replays_instead_of_conflicting() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Cancel").await;
    let created = expect_status(app.post_job(&key, &project, json!({})).await, 202).await;
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    let cancel = |idempotency_key: Option<&'static str>| {
        let mut request = app.api(reqwest::Method::POST, &format!("/jobs/{job}/cancel"), &key);
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        request.send()
    };
    let first = expect_status(cancel(Some("cancel-1")).await.unwrap(), 202).await;
    assert_eq!(first["job"]["status"], "cancelled");
    let replay = expect_status(cancel(Some("cancel-1")).await.unwrap(), 202).await;
    assert_eq!(replay["idempotent"], true);
    assert_eq!(replay["job"]["status"], "cancelled");
    expect_error(cancel(None).await.unwrap(), 409, "invalid_job_state").await;

    let read = app.get_json(&format!("/jobs/{job}"), &key).await;
    assert_eq!(read["job"]["status"], "cancelled");
    assert!(read["job"]["completedAt"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn malformed_idempotency_keys_are_400() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    for bad in ["k".repeat(257), "tab\tkey".to_owned(), String::new()] {
        let response = app
            .api(reqwest::Method::POST, "/projects", &key)
            .header("idempotency-key", bad.as_str())
            .json(&json!({ "name": "x" }))
            .send()
            .await
            .unwrap();
        let error = expect_error(response, 400, "invalid_request").await;
        assert_eq!(error["details"][0]["field"], "Idempotency-Key");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_not_ready_project_answer_is_not_replayed_to_the_retry() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Not yet").await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    let set_status = |status: &'static str| {
        sqlx::query("UPDATE orchestrator.projects SET status = $1 WHERE id = $2")
            .bind(status)
            .bind(project.clone())
    };
    set_status("provisioning").execute(&mut db).await.unwrap();
    let send = || create_job(&app, &app.base_url, &key, &project, "early", &json!({})).send();
    expect_error(send().await.unwrap(), 409, "project_not_ready").await;

    set_status("ready").execute(&mut db).await.unwrap();
    let created = expect_status(send().await.unwrap(), 202).await;
    assert!(
        created.get("idempotent").is_none(),
        "a fresh answer, not a replay"
    );
    assert_eq!(jobs_in_db(&app).await, 1);
    app.stop().await;
}
