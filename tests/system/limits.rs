//! Rate limits, body limits and dependency outages: clear 4xx for the client's excess,
//! a fast 503 (never a hang, never a 500) when a dependency is down.

use plangrep_test_support::ports::ReservedPort;
use serde_json::json;

use crate::helpers::{Options, TestApp, expect_error, expect_status};

/// How long a client waits for the 503 of an outage. Above the gateway's own bounds on a
/// missing dependency (3 s to get a database connection, 2 s to connect to a gRPC peer)
/// with room for a loaded machine, and below its 10 s gRPC deadline: a gateway that waited
/// on a deadline, or hung, instead of failing fast makes these requests time out.
const FAST_ANSWER: std::time::Duration = std::time::Duration::from_secs(6);

#[tokio::test]
async fn each_api_key_has_its_own_bucket_and_every_response_says_where_it_stands() {
    let app = TestApp::spawn_with(
        Options::default()
            .with("PLANGREP_RATE_LIMIT_PER_SECOND", "0.5")
            .with("PLANGREP_RATE_LIMIT_BURST", "3"),
    )
    .await;
    let (_org, key) = app.create_customer().await;
    let (_other, other_key) = app.create_customer().await;

    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = app
            .api(reqwest::Method::GET, "/projects", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert!(response.headers().contains_key("ratelimit-reset"));
        remaining.push(
            response.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = app
        .api(reqwest::Method::GET, "/projects", &key)
        .send()
        .await
        .unwrap();
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    expect_error(refused, 429, "rate_limited").await;

    let other = app
        .api(reqwest::Method::GET, "/projects", &other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200, "another key is not affected");
    let anonymous = app
        .http
        .get(format!("{}/api/open/v1/projects", app.base_url))
        .send()
        .await
        .unwrap();
    assert!(anonymous.headers().contains_key("ratelimit-remaining"));
    expect_error(anonymous, 401, "unauthorized").await;
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let huge = json!({ "name": "x".repeat(1024 * 1024 + 1) });
    let response = app
        .api(reqwest::Method::POST, "/projects", &key)
        .json(&huge)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "payload_too_large").await;
    let listed = app.get_json("/projects", &key).await;
    assert_eq!(listed["projects"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_orchestrator_is_a_fast_503() {
    let mut app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    // A gateway whose orchestrator address has nobody listening.
    let mut settings = app.settings.clone();
    let closed = ReservedPort::new();
    settings.set("PLANGREP_ORCHESTRATOR_ADDR", closed.addr().to_string());
    let url = app.start_gateway(settings).await.url;

    let client = reqwest::Client::builder()
        .timeout(FAST_ANSWER)
        .build()
        .unwrap();
    let response = client
        .post(format!("{url}/api/open/v1/projects"))
        .bearer_auth(&key)
        .json(&json!({ "name": "During the outage" }))
        .send()
        .await
        .expect("an answer, not a hang");
    expect_error(response, 503, "unavailable").await;
    expect_status(
        app.api(reqwest::Method::GET, "/projects", &key)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_database_outage_is_a_fast_503_and_readiness_flips_until_it_is_back() {
    use plangrep_test_support::proxy::TcpProxy;
    let mut app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    // A gateway that reaches PostgreSQL through a proxy the test can cut.
    let (proxy, proxied) = TcpProxy::in_front_of(app.database.url()).await;
    let mut settings = app.settings.clone();
    settings.set("DATABASE_URL", proxied);
    let replica = app.start_gateway(settings).await;
    let (url, ops_url) = (replica.url.clone(), replica.ops_url.clone());
    let client = reqwest::Client::builder()
        .timeout(FAST_ANSWER)
        .build()
        .unwrap();
    let list = || {
        client
            .get(format!("{url}/api/open/v1/projects"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);
    assert_eq!(
        client
            .get(format!("{ops_url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    proxy.cut();
    // The key it remembers is served until the gateway sees its key-changes session
    // cut (ADR 0024); from then on the key is read, and the outage answers 503.
    let refused = plangrep_test_support::eventually(
        "the outage answered 503",
        crate::helpers::PATIENCE,
        || async {
            let response = list().await.expect("an answer, not a hang");
            match response.status().as_u16() {
                200 => None,
                _ => Some(response),
            }
        },
    )
    .await;
    expect_error(refused, 503, "unavailable").await;
    assert_eq!(
        client
            .get(format!("{ops_url}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    proxy.restore();
    plangrep_test_support::eventually(
        "the gateway to recover",
        crate::helpers::PATIENCE,
        || async { (list().await.ok()?.status() == 200).then_some(()) },
    )
    .await;
    app.stop().await;
}
