//! Slow and hostile clients at the gateway's edge (ADR 0014), over real sockets: a
//! slowloris is disconnected after the header-read timeout while others are served,
//! connections beyond the cap wait until a slot frees, a stalled body gets 408, and a
//! flood of guessed API keys from one peer is refused before any key lookup.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Options, PATIENCE, TestApp, python_tools};

/// The value of the gateway's metric `series` (name and labels exactly as exposed).
pub async fn gateway_metric(ops_url: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("{ops_url}/metrics"))
        .await
        .expect("ops listener reachable")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

fn gateway_addr(app: &TestApp) -> String {
    app.base_url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (bounded by `PATIENCE`).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_client_stalling_half_way_through_its_request_line_is_disconnected_while_others_are_served()
 {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_GATEWAY_HEADER_READ_TIMEOUT", "1s"))
            .await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    let mut slowloris = TcpStream::connect(gateway_addr(&app)).await.unwrap();
    slowloris.write_all(b"GET /api/open/v1/proj").await.unwrap();

    // Meanwhile an outside client is served as usual.
    let script = r#"
import sys, requests
r = requests.get(sys.argv[1] + "/openapi.json", timeout=10)
assert r.status_code == 200, r.status_code
print(r.json()["openapi"])
"#;
    let python = python_tools();
    let base_url = app.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &base_url])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The stalled client is cut off, and its slot given back.
    let answer = read_until_closed(&mut slowloris).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    plangrep_test_support::eventually("every connection slot to be free", PATIENCE, || {
        let ops_url = ops_url.clone();
        async move {
            (gateway_metric(&ops_url, "plangrep_http_connections_open").await == 0.0).then_some(())
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_a_slot_frees() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_GATEWAY_MAX_CONNECTIONS", "2")).await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    let first = TcpStream::connect(gateway_addr(&app)).await.unwrap();
    let _second = TcpStream::connect(gateway_addr(&app)).await.unwrap();
    plangrep_test_support::eventually("two connections served", PATIENCE, || {
        let ops_url = ops_url.clone();
        async move {
            (gateway_metric(&ops_url, "plangrep_http_connections_open").await == 2.0).then_some(())
        }
    })
    .await;

    // A third client connects (the kernel's backlog takes it) and sends a whole request.
    let mut third = TcpStream::connect(gateway_addr(&app)).await.unwrap();
    third
        .write_all(b"GET /openapi.json HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(early.is_err(), "answered beyond the cap: {early:?}");
    assert_eq!(
        gateway_metric(&ops_url, "plangrep_http_connections_open").await,
        2.0
    );

    // One of the two leaves: the waiting client is served.
    drop(first);
    let answer = read_until_closed(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn a_request_whose_body_stalls_gets_408_request_timeout() {
    let mut app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    // A replica with a short request timeout (the app's own setup calls keep the default).
    let mut settings = app.settings.clone();
    settings.set("PLANGREP_GATEWAY_REQUEST_TIMEOUT", "1s");
    let replica = app.start_gateway(settings).await;
    let mut client = TcpStream::connect(replica.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/open/v1/projects HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\": "
    );
    client.write_all(head.as_bytes()).await.unwrap();

    let answer = read_until_closed(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect("a body")).unwrap();
    assert_eq!(body["error"]["code"], "request_timeout");
    let listed = app.get_json("/projects", &key).await;
    assert_eq!(listed["projects"], serde_json::json!([]), "nothing created");
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_guessed_keys_from_one_peer_is_refused_before_any_key_lookup() {
    // Five failures, then (practically) no refill during the test.
    let app = TestApp::spawn_with(
        Options::default()
            .with("PLANGREP_RATE_LIMIT_BURST", "5")
            .with("PLANGREP_RATE_LIMIT_PER_SECOND", "0.001"),
    )
    .await;
    let ops_url = format!("http://{}", app.gateway_ops_addr);
    let lookups = || gateway_metric(&ops_url, "plangrep_api_key_lookups_total");
    assert_eq!(lookups().await, 0.0);

    let script = r#"
import sys, requests
base = sys.argv[1]
session = requests.Session()
statuses = []
for i in range(40):
    r = session.get(base + "/api/open/v1/projects",
                    headers={"Authorization": "Bearer pgk_live_guess%d" % i}, timeout=10)
    statuses.append(r.status_code)
    body = r.json()["error"]
    if r.status_code == 429:
        assert body["code"] == "rate_limited", body
        assert int(r.headers["Retry-After"]) >= 1, r.headers
        assert r.headers["RateLimit-Remaining"] == "0", r.headers
        assert r.headers["RateLimit-Limit"] == "5", r.headers
    else:
        assert (r.status_code, body["code"]) == (401, "unauthorized"), (r.status_code, body)
print(" ".join(map(str, statuses)))
"#;
    let python = python_tools();
    let base_url = app.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &base_url])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let statuses = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let expected = ["401"; 5]
        .into_iter()
        .chain(["429"; 35])
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(statuses, expected);
    // Forty guesses, five lookups: the refused ones never reached the database.
    assert_eq!(lookups().await, 5.0);
    app.stop().await;
}
