//! The `api-gateway` binary as an operator runs it: `migrate`, `serve`, `healthcheck`,
//! a clear one-line error for a bad setting or an un-migrated database, and a clean exit
//! on SIGTERM.

use std::time::Duration;

use plangrep_test_support::TestDatabase;
use plangrep_test_support::process::{ServiceProcess, run};

const BINARY: &str = env!("CARGO_BIN_EXE_api-gateway");

/// The internal gRPC credential, required outside dev mode (ADR 0010).
const INTERNAL_TOKEN: (&str, &str) = (
    "PLANGREP_INTERNAL_TOKEN",
    "binary-test-internal-token-0123456789",
);

fn internal_token() -> (&'static str, String) {
    (INTERNAL_TOKEN.0, INTERNAL_TOKEN.1.to_owned())
}

#[tokio::test]
async fn a_bad_setting_stops_the_binary_with_one_line_naming_it() {
    let (code, stderr) = run(
        BINARY,
        &["serve"],
        &[
            internal_token(),
            ("PLANGREP_RATE_LIMIT_BURST", "lots".to_owned()),
        ],
    )
    .await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("api-gateway: invalid PLANGREP_RATE_LIMIT_BURST: "),
        "{stderr}"
    );
}

#[tokio::test]
async fn serve_against_an_unmigrated_database_says_so_in_one_line_and_exits_non_zero() {
    let db = TestDatabase::create().await;
    let env = vec![
        internal_token(),
        ("DATABASE_URL", db.url().to_owned()),
        ("PLANGREP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("PLANGREP_GATEWAY_OPS_ADDR", "127.0.0.1:0".to_owned()),
    ];
    let (code, stderr) = run(BINARY, &["serve"], &env).await;
    assert_eq!(code, 1, "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("api-gateway: the database schema \"gateway\" is not migrated")
            && lines[0].contains("`migrate`"),
        "{stderr}"
    );

    // `serve --migrate` (the dev path) migrates first, then serves.
    let mut gateway = plangrep_test_support::process::ServiceProcess::start_with_args(
        BINARY,
        &["serve", "--migrate"],
        &env,
    );
    gateway
        .wait_for_log("api-gateway serving", Duration::from_secs(30))
        .await;
    assert_eq!(gateway.terminate(Duration::from_secs(30)).await, Some(0));
}

#[tokio::test]
async fn migrate_serve_healthcheck_and_sigterm_behave() {
    let db = TestDatabase::create().await;
    let env = vec![internal_token(), ("DATABASE_URL", db.url().to_owned())];
    let (code, stderr) = run(BINARY, &["migrate"], &env).await;
    assert_eq!(code, 0, "{stderr}");

    let mut serving_env = env.clone();
    serving_env.push(("PLANGREP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()));
    serving_env.push(("PLANGREP_GATEWAY_OPS_ADDR", "127.0.0.1:0".to_owned()));
    let mut gateway = ServiceProcess::start(BINARY, &serving_env);
    let line = gateway
        .wait_for_log("api-gateway serving", Duration::from_secs(30))
        .await;
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let ops = log["ops"]
        .as_str()
        .expect("the bound ops address is logged")
        .to_owned();

    // The probe asks the ops listener, where /healthz lives.
    let mut probe_env = env.clone();
    probe_env.push(("PLANGREP_GATEWAY_OPS_ADDR", ops));
    let (code, stderr) = run(BINARY, &["healthcheck"], &probe_env).await;
    assert_eq!(code, 0, "{stderr}");

    assert_eq!(gateway.terminate(Duration::from_secs(30)).await, Some(0));
    let (code, _) = run(BINARY, &["healthcheck"], &probe_env).await;
    assert_eq!(code, 1, "nothing answers once it stopped");
}

#[tokio::test]
async fn spans_are_exported_over_otlp_in_the_callers_trace() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::create().await;
    let (endpoint, mut exported) = plangrep_test_support::otlp::start().await;
    let (code, stderr) = run(
        BINARY,
        &["migrate"],
        &[internal_token(), ("DATABASE_URL", db.url().to_owned())],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let env = vec![
        internal_token(),
        ("DATABASE_URL", db.url().to_owned()),
        ("PLANGREP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()),
        ("PLANGREP_GATEWAY_OPS_ADDR", "127.0.0.1:0".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_SERVICE_NAME", "gateway-under-test".to_owned()),
    ];
    let mut gateway = ServiceProcess::start(BINARY, &env);
    let line = gateway
        .wait_for_log("api-gateway serving", Duration::from_secs(30))
        .await;
    let log: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = log["addr"].as_str().unwrap().to_owned();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/api/open/v1/projects"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // SIGTERM flushes the exporter.
    assert_eq!(gateway.terminate(Duration::from_secs(30)).await, Some(0));

    let mut seen = Vec::new();
    while let Ok(request) = exported.try_recv() {
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value));
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let id: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    seen.push((service.clone().unwrap_or_default(), id, span.name));
                }
            }
        }
    }
    assert!(
        seen.iter()
            .any(|(service, id, _)| id == trace_id && service.contains("gateway-under-test")),
        "no exported span in the caller's trace: {seen:?}"
    );
}
