//! What an operator watches: every service's Prometheus `/metrics` after real traffic
//! (on the ops listeners only, never the gateway's public port), and gRPC health that
//! follows the dependencies: `NOT_SERVING` while the broker is gone, `SERVING` after.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use plangrep_test_support::eventually;
use plangrep_test_support::proxy::TcpProxy;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{DispatcherProcess, Options, PATIENCE, TestApp};

/// The `/metrics` text of the ops listener at `addr`.
async fn scrape(http: &reqwest::Client, addr: impl std::fmt::Display) -> String {
    let response = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("ops listener reachable");
    assert_eq!(response.status(), 200);
    response.text().await.expect("metrics text")
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// Asserts `series` is exposed with a value that satisfies `check`.
fn assert_sample(metrics: &str, series: &str, check: impl Fn(f64) -> bool) {
    let value =
        sample(metrics, series).unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"));
    assert!(check(value), "{series} = {value}");
}

#[tokio::test]
async fn every_service_exports_prometheus_metrics_after_real_traffic() {
    let mut app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    // One ready project holding one job.
    let job_id = app.create_job(&key).await;
    let missing = app
        .api(
            reqwest::Method::GET,
            "/projects/proj_00000000000000000000000000",
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The gateway: by route template and status, on the ops listener.
    let gateway = scrape(&app.http, app.gateway_ops_addr).await;
    assert_sample(
        &gateway,
        r#"plangrep_http_requests_total{method="POST",route="/api/open/v1/projects",status="202"}"#,
        |v| v == 1.0,
    );
    assert_sample(
        &gateway,
        r#"plangrep_http_requests_total{method="GET",route="/api/open/v1/projects/{project_id}",status="200"}"#,
        |v| v >= 1.0,
    );
    assert_sample(
        &gateway,
        r#"plangrep_http_request_duration_seconds_count{method="POST",route="/admin/v1/orgs",status="201"}"#,
        |v| v == 1.0,
    );
    assert_sample(&gateway, "plangrep_http_requests_in_flight", |v| v == 0.0);
    assert!(
        !gateway.contains(&job_id),
        "raw paths leaked into labels:\n{gateway}"
    );
    // Nothing ops-only on the public port.
    for path in ["/metrics", "/readyz", "/healthz"] {
        let status = app
            .http
            .get(format!("{}{path}", app.base_url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path} on the public port");
    }

    // The orchestrator: gRPC by method and code, transitions, outbox, relay, stages, DLQs.
    let orchestrator = eventually(
        "the ready project's event to be relayed",
        PATIENCE,
        || async {
            let metrics = scrape(&app.http, app.orchestrator_ops_addr).await;
            sample(
                &metrics,
                r#"plangrep_status_transitions_total{entity="project",status="ready"}"#,
            )
            .is_some()
            .then_some(metrics)
        },
    )
    .await;
    let service = "plangrep.orchestrator.v1.JobOrchestrator";
    assert_sample(
        &orchestrator,
        &format!(
            r#"plangrep_grpc_server_handled_total{{service="{service}",method="CreateProject",code="OK"}}"#
        ),
        |v| v == 1.0,
    );
    assert_sample(
        &orchestrator,
        &format!(
            r#"plangrep_grpc_server_handled_total{{service="{service}",method="GetProject",code="NOT_FOUND"}}"#
        ),
        |v| v == 1.0,
    );
    assert_sample(
        &orchestrator,
        &format!(
            r#"plangrep_grpc_server_handling_seconds_count{{service="{service}",method="GetProject"}}"#
        ),
        |v| v >= 2.0,
    );
    assert_sample(
        &orchestrator,
        r#"plangrep_status_transitions_total{entity="project",status="provisioning"}"#,
        |v| v == 1.0,
    );
    assert_sample(&orchestrator, "plangrep_outbox_relay_leader", |v| v == 1.0);
    assert_sample(&orchestrator, "plangrep_outbox_unpublished_rows", |v| {
        v >= 0.0
    });
    assert_sample(
        &orchestrator,
        "plangrep_outbox_oldest_unpublished_age_seconds",
        |v| (0.0..60.0).contains(&v),
    );
    assert_sample(
        &orchestrator,
        r#"plangrep_pipeline_stage_duration_seconds_count{stage="provision",outcome="ok"}"#,
        |v| v >= 1.0,
    );
    for queue in [
        "plangrep.orchestrator.provision",
        "plangrep.orchestrator.preflight",
        "plangrep.orchestrator.process",
        "plangrep.dispatcher.events",
    ] {
        assert_sample(
            &orchestrator,
            &format!(r#"plangrep_dead_letter_messages{{queue="{queue}.dead"}}"#),
            |v| v == 0.0,
        );
    }

    // The dispatcher: its gRPC calls too (the gateway lists deliveries through it).
    let deliveries = app
        .api(
            reqwest::Method::GET,
            &format!("/jobs/{job_id}/webhook-deliveries"),
            &key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deliveries.status(), 200);
    let dispatcher = scrape(&app.http, app.dispatcher.as_ref().unwrap().http_addr).await;
    assert_sample(
        &dispatcher,
        r#"plangrep_grpc_server_handled_total{service="plangrep.dispatcher.v1.WebhookDispatcher",method="ListDeliveries",code="OK"}"#,
        |v| v == 1.0,
    );
    assert_sample(&dispatcher, "plangrep_webhook_backlog", |v| v == 0.0);

    // Rate-limit rejections, on a gateway whose bucket holds one request.
    let mut settings = app.settings.clone();
    settings.set("PLANGREP_RATE_LIMIT_BURST", "1".to_owned());
    settings.set("PLANGREP_RATE_LIMIT_PER_SECOND", "0.001".to_owned());
    let strict = app.start_gateway(settings).await;
    let list = || {
        app.http
            .get(format!("{}/api/open/v1/projects", strict.url))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(list().await.unwrap().status(), 200);
    assert_eq!(list().await.unwrap().status(), 429);
    let strict_metrics = scrape(&app.http, strict.ops_url.trim_start_matches("http://")).await;
    assert_sample(
        &strict_metrics,
        r#"plangrep_http_rate_limited_total{route="/api/open/v1/projects"}"#,
        |v| v == 1.0,
    );
    assert_sample(
        &strict_metrics,
        r#"plangrep_http_requests_total{method="GET",route="/api/open/v1/projects",status="429"}"#,
        |v| v == 1.0,
    );
    assert_deploy_files_read_only_exported_metrics(&[
        &gateway,
        &orchestrator,
        &dispatcher,
        &strict_metrics,
    ]);
    strict.stop().await;
    app.stop().await;
}

/// Every metric the alert rules and the dashboard (deploy/observability) read is one the
/// services export: a renamed metric breaks this test, not an operator's alert.
fn assert_deploy_files_read_only_exported_metrics(scrapes: &[&str]) {
    let mut exported = HashSet::new();
    for line in scrapes.iter().flat_map(|text| text.lines()) {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split(' ');
            let (name, kind) = (parts.next().unwrap_or_default(), parts.next());
            let suffixes: &[&str] = match kind {
                Some("counter") => &["_total"],
                Some("histogram") => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            exported.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            exported.insert(name.to_owned());
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/observability");
    for file in ["alerts.yaml", "dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("observability file");
        if file.ends_with(".json") {
            let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            assert!(
                dashboard["panels"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
            );
        }
        let mut used = text
            .match_indices("plangrep_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .peekable();
        assert!(used.peek().is_some(), "{file} reads no metric");
        for name in used {
            assert!(
                exported.contains(name),
                "{file} reads {name}, which no service exports"
            );
        }
    }
}

/// The `grpc.health.v1` status of `service` at `addr`.
async fn health(addr: SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

/// Waits until both the server (`""`) and `service` at `addr` report `expected`.
async fn health_becomes(addr: SocketAddr, service: &str, expected: ServingStatus) {
    eventually(
        &format!("{service} at {addr} to report {expected:?}"),
        PATIENCE,
        || async {
            let server = health(addr, "").await?;
            let named = health(addr, service).await?;
            (server == expected && named == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn grpc_health_is_not_serving_while_the_broker_is_unreachable_and_serving_after() {
    let app = TestApp::spawn_with(Options {
        proxy_orchestrator_broker: true,
        ..Options::default()
    })
    .await;

    // The orchestrator, whose every connection to RabbitMQ runs through the proxy.
    let orchestrator = "plangrep.orchestrator.v1.JobOrchestrator";
    health_becomes(app.orchestrator_addr, orchestrator, ServingStatus::Serving).await;
    let broker = app.orchestrator_broker.as_ref().unwrap();
    broker.cut();
    health_becomes(
        app.orchestrator_addr,
        orchestrator,
        ServingStatus::NotServing,
    )
    .await;
    broker.restore();
    health_becomes(app.orchestrator_addr, orchestrator, ServingStatus::Serving).await;

    // A dispatcher replica whose broker connection runs through a proxy of its own.
    let (proxy, proxied) = TcpProxy::in_front_of(&plangrep_test_support::amqp_url()).await;
    let mut settings = app.settings.clone();
    settings.set("AMQP_URL", proxied);
    let (replica, replica_addr) =
        DispatcherProcess::start(settings, "127.0.0.1:0".parse().unwrap()).await;
    let dispatcher = "plangrep.dispatcher.v1.WebhookDispatcher";
    health_becomes(replica_addr, dispatcher, ServingStatus::Serving).await;
    proxy.cut();
    health_becomes(replica_addr, dispatcher, ServingStatus::NotServing).await;
    proxy.restore();
    health_becomes(replica_addr, dispatcher, ServingStatus::Serving).await;

    replica.stop().await;
    app.stop().await;
}
