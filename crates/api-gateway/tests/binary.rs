//! The `api-gateway` binary as an operator runs it: `migrate`, `serve`, `healthcheck`,
//! a clear one-line error for a bad setting, and a clean exit on SIGTERM.

use std::time::Duration;

use plangrep_test_support::TestDatabase;
use plangrep_test_support::process::{ServiceProcess, run};

const BINARY: &str = env!("CARGO_BIN_EXE_api-gateway");

#[tokio::test]
async fn a_bad_setting_stops_the_binary_with_one_line_naming_it() {
    let (code, stderr) = run(
        BINARY,
        &["serve"],
        &[("PLANGREP_RATE_LIMIT_BURST", "lots".to_owned())],
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
async fn migrate_serve_healthcheck_and_sigterm_behave() {
    let db = TestDatabase::create().await;
    let env = vec![("DATABASE_URL", db.url().to_owned())];
    let (code, stderr) = run(BINARY, &["migrate"], &env).await;
    assert_eq!(code, 0, "{stderr}");

    let mut serving_env = env.clone();
    serving_env.push(("PLANGREP_GATEWAY_ADDR", "127.0.0.1:0".to_owned()));
    let mut gateway = ServiceProcess::start(BINARY, &serving_env);
    let line = gateway
        .wait_for_log("api-gateway serving", Duration::from_secs(30))
        .await;
    let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    let addr = log["addr"]
        .as_str()
        .expect("the bound address is logged")
        .to_owned();

    let mut probe_env = env.clone();
    probe_env.push(("PLANGREP_GATEWAY_ADDR", addr.clone()));
    let (code, stderr) = run(BINARY, &["healthcheck"], &probe_env).await;
    assert_eq!(code, 0, "{stderr}");

    assert_eq!(gateway.terminate(Duration::from_secs(30)).await, Some(0));
    let (code, _) = run(BINARY, &["healthcheck"], &probe_env).await;
    assert_eq!(code, 1, "nothing answers once it stopped");
}
