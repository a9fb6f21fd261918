//! SPEC §1, §3, §4 and §6 resources: projects, job lists and history, cancel and resume,
//! the admin API (keys, revocation, expiry, credits).

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_error, expect_status};

#[tokio::test]
async fn project_names_are_unique_per_organization_and_projects_list_newest_first() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let (_other, other_key) = app.create_customer().await;
    let first = app.create_ready_project(&key, "Tower A").await;
    let second = app.create_ready_project(&key, "Tower B").await;

    let taken = app
        .api(reqwest::Method::POST, "/projects", &key)
        .json(&json!({ "name": "Tower A" }))
        .send()
        .await
        .unwrap();
    expect_error(taken, 409, "project_name_taken").await;
    // Another organization may use the same name.
    app.create_ready_project(&other_key, "Tower A").await;
    for bad in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": "x".repeat(181) }),
    ] {
        let response = app
            .api(reqwest::Method::POST, "/projects", &key)
            .json(&bad)
            .send()
            .await
            .unwrap();
        let error = expect_error(response, 400, "invalid_request").await;
        assert_eq!(error["details"][0]["field"], "name");
    }

    let page = app.get_json("/projects?limit=1", &key).await;
    assert_eq!(page["projects"][0]["id"], second.as_str());
    assert_eq!(page["hasMore"], true);
    let cursor = page["nextCursor"].as_str().unwrap();
    let rest = app
        .get_json(&format!("/projects?limit=1&cursor={cursor}"), &key)
        .await;
    assert_eq!(rest["projects"][0]["id"], first.as_str());
    assert_eq!(rest["hasMore"], false);
    assert_eq!(rest["nextCursor"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn job_pages_are_stable_under_concurrent_inserts_and_filters_apply() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Paging").await;
    let mut created = Vec::new();
    for n in 0..5 {
        let body = json!({ "externalId": if n % 2 == 0 { "even" } else { "odd" } });
        let job = expect_status(app.post_job(&key, &project, body).await, 202).await;
        created.push(job["job"]["id"].as_str().unwrap().to_owned());
    }

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/projects/{project}/jobs?limit=2&cursor={c}"),
            None => format!("/projects/{project}/jobs?limit=2"),
        };
        let page = app.get_json(&path, &key).await;
        seen.extend(
            page["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap().to_owned()),
        );
        // A job created between pages is newer than every cursor: it never shifts them.
        expect_status(app.post_job(&key, &project, json!({})).await, 202).await;
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "newest first, each job exactly once");

    let odd = app
        .get_json(&format!("/projects/{project}/jobs?externalId=odd"), &key)
        .await;
    let odd_ids: HashSet<&str> = odd["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        odd_ids,
        HashSet::from([created[1].as_str(), created[3].as_str()])
    );
    let cancelled = app
        .get_json(&format!("/projects/{project}/jobs?status=cancelled"), &key)
        .await;
    assert_eq!(cancelled["jobs"], json!([]));

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("cursor=garbage", "cursor"),
        ("status=done", "status"),
        ("stauts=completed", "stauts"),
    ] {
        let response = app
            .api(
                reqwest::Method::GET,
                &format!("/projects/{project}/jobs?{query}"),
                &key,
            )
            .send()
            .await
            .unwrap();
        let error = expect_error(response, 400, "invalid_request").await;
        assert_eq!(error["details"][0]["field"], field, "for {query}: {error}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_event_history_follows_the_lifecycle_and_resume_needs_a_blocked_job() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "History").await;
    let created = expect_status(app.post_job(&key, &project, json!({})).await, 202).await;
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    plangrep_test_support::eventually("awaiting uploads", crate::helpers::PATIENCE, || async {
        let read = app.get_json(&format!("/jobs/{job}"), &key).await;
        (read["job"]["status"] == "awaiting_uploads").then_some(())
    })
    .await;

    let resume = app
        .api(reqwest::Method::POST, &format!("/jobs/{job}/resume"), &key)
        .send()
        .await
        .unwrap();
    expect_error(resume, 409, "invalid_job_state").await;
    let cancel = app
        .api(reqwest::Method::POST, &format!("/jobs/{job}/cancel"), &key)
        .send()
        .await
        .unwrap();
    expect_status(cancel, 202).await;

    let history = app.get_json(&format!("/jobs/{job}/events"), &key).await;
    let events = history["events"].as_array().unwrap();
    let summary: Vec<(u64, &str, Value)> = events
        .iter()
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap(),
                e["status"].as_str().unwrap(),
                e["previousStatus"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "provisioning", Value::Null),
            (2, "awaiting_uploads", json!("provisioning")),
            (3, "cancelled", json!("awaiting_uploads")),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e["id"].as_str().unwrap().starts_with("evt_"))
    );
    app.stop().await;
}

#[tokio::test]
async fn revoked_and_expired_keys_are_401_and_credits_add_up() {
    let app = TestApp::spawn().await;
    let org = app.create_org("Ledger").await;
    let key_body = expect_status(
        app.admin(reqwest::Method::POST, &format!("/orgs/{org}/api-keys"))
            .json(&json!({ "label": "ci", "scopes": ["jobs:read"] }))
            .send()
            .await
            .unwrap(),
        201,
    )
    .await;
    let key = key_body["plaintextKey"].as_str().unwrap().to_owned();
    let key_id = key_body["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.api(reqwest::Method::GET, "/projects", &key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    app.revoke_key(&key_id).await;
    let after = app
        .api(reqwest::Method::GET, "/projects", &key)
        .send()
        .await
        .unwrap();
    expect_error(after, 401, "unauthorized").await;

    let expiring = app.create_key(&org, &["jobs:read"]).await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(app.database.url())
        .await
        .unwrap();
    sqlx::query("UPDATE gateway.api_keys SET expires_at = now() - interval '1 second' WHERE revoked_at IS NULL")
        .execute(&mut db)
        .await
        .unwrap();
    let expired = app
        .api(reqwest::Method::GET, "/projects", &expiring)
        .send()
        .await
        .unwrap();
    expect_error(expired, 401, "unauthorized").await;

    let past = app
        .admin(reqwest::Method::POST, &format!("/orgs/{org}/api-keys"))
        .json(&json!({ "label": "old", "scopes": ["jobs:read"], "expiresAt": "2001-01-01T00:00:00.000Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(past, 400, "invalid_request").await["details"][0]["field"],
        "expiresAt"
    );
    let bad_scope = app
        .admin(reqwest::Method::POST, &format!("/orgs/{org}/api-keys"))
        .json(&json!({ "label": "x", "scopes": ["jobs:delete"] }))
        .send()
        .await
        .unwrap();
    expect_error(bad_scope, 400, "invalid_request").await;

    let grant = |amount: i64| {
        app.admin(reqwest::Method::POST, &format!("/orgs/{org}/credits"))
            .json(&json!({ "amount": amount, "reason": "test" }))
            .send()
    };
    assert_eq!(
        expect_status(grant(500).await.unwrap(), 200).await["balance"],
        500
    );
    assert_eq!(
        expect_status(grant(-200).await.unwrap(), 200).await["balance"],
        300
    );
    expect_error(grant(-301).await.unwrap(), 400, "invalid_request").await;
    expect_error(grant(0).await.unwrap(), 400, "invalid_request").await;
    let read = expect_status(
        app.admin(reqwest::Method::GET, &format!("/orgs/{org}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(read["org"]["creditBalance"], 300);
    assert_eq!(read["org"]["id"], org.as_str());

    let no_admin = app
        .http
        .get(format!("{}/admin/v1/orgs/{org}", app.base_url))
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    expect_error(no_admin, 401, "unauthorized").await;
    app.stop().await;
}

/// Requests that arrive together share their key look-ups and their job creations
/// (ADR 0022); each is still answered for its own key and its own project.
#[tokio::test]
async fn concurrent_requests_are_each_answered_for_their_own_key_and_project() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let (other_org, other_key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Tower A").await;
    let other_project = app.create_ready_project(&other_key, "Tower B").await;
    let created_key = expect_status(
        app.admin(
            reqwest::Method::POST,
            &format!("/orgs/{other_org}/api-keys"),
        )
        .json(&json!({ "label": "revoked", "scopes": ["jobs:read", "jobs:write"] }))
        .send()
        .await
        .unwrap(),
        201,
    )
    .await;
    let revoked_key = created_key["plaintextKey"].as_str().unwrap().to_owned();
    app.revoke_key(created_key["key"]["id"].as_str().unwrap())
        .await;
    let unknown_key = format!("pgk_live_{}", "A".repeat(43));

    // (key, project, the status expected)
    let cases = [
        (&key, &project, 202),
        (&other_key, &other_project, 202),
        (&key, &other_project, 404),
        (&revoked_key, &other_project, 401),
        (&unknown_key, &project, 401),
    ];
    let requests = (0..6).flat_map(|_| cases.iter()).map(|(key, project, _)| {
        app.post_job(
            key,
            project,
            json!({ "externalId": format!("set-{}", &project[..12]) }),
        )
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut created: Vec<(String, String)> = Vec::new();
    for ((_, project, status), response) in (0..6).flat_map(|_| cases.iter()).zip(responses) {
        assert_eq!(response.status().as_u16(), *status);
        if *status == 202 {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["job"]["projectId"], project.as_str());
            created.push((
                body["job"]["id"].as_str().unwrap().to_owned(),
                project.to_string(),
            ));
        }
    }
    assert_eq!(created.len(), 12);
    let ids: HashSet<&str> = created.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 12, "every create made its own job");

    // Each organization sees exactly its own six jobs.
    for (key, project) in [(&key, &project), (&other_key, &other_project)] {
        let page = app
            .get_json(&format!("/projects/{project}/jobs?limit=100"), key)
            .await;
        let listed: HashSet<&str> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["id"].as_str().unwrap())
            .collect();
        let own: HashSet<&str> = created
            .iter()
            .filter(|(_, of)| of == project)
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(listed, own);
        assert_eq!(own.len(), 6);
    }
    app.stop().await;
}
