//! Rotating secrets without losing anything (issue 9, ADR 0011): the orchestrator's
//! keyring changes under live jobs (new primary key, then `reseal`, then the old key
//! removed) and every delivery and idempotent replay survives; a job's webhook secret
//! rotates with an overlap that the Python `standardwebhooks` verifier observes.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use plangrep_core::webhook::{self, WebhookSecret};
use plangrep_test_support::receiver::{Captured, Receiver};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Options, PATIENCE, TestApp, expect_error, expect_status, orchestrator_binary, python_tools,
};

/// The key every test app starts with (`PLANGREP_SECRETS_KEY`, key id `default`).
fn old_key() -> String {
    BASE64.encode([42u8; 32])
}

fn new_key() -> String {
    BASE64.encode([7u8; 32])
}

fn job_of(delivery: &Captured) -> (String, String) {
    let body: Value = serde_json::from_slice(&delivery.body).expect("JSON webhook body");
    (
        body["data"]["job"]["id"].as_str().unwrap().to_owned(),
        body["data"]["job"]["status"].as_str().unwrap().to_owned(),
    )
}

/// Whether `secret` verifies `delivery` (our own Standard Webhooks verifier).
fn verifies(secret: &str, delivery: &Captured) -> bool {
    let secret = WebhookSecret::parse(secret).expect("whsec_ secret");
    let timestamp: i64 = delivery.header("webhook-timestamp").parse().unwrap();
    webhook::verify(
        &secret,
        &delivery.header("webhook-id"),
        timestamp,
        &delivery.body,
        &delivery.header("webhook-signature"),
        timestamp,
        webhook::DEFAULT_TOLERANCE_SECONDS,
    )
    .is_ok()
}

/// Deliveries by (job, status), pulled from a receiver as they arrive.
struct Inbox {
    receiver: Receiver,
    seen: HashMap<(String, String), Captured>,
}

impl Inbox {
    async fn start() -> Self {
        Self {
            receiver: Receiver::start().await,
            seen: HashMap::new(),
        }
    }

    /// The delivery of `job`'s change to `status`, waiting for it if needed.
    async fn expect(&mut self, job: &str, status: &str) -> Captured {
        let wanted = (job.to_owned(), status.to_owned());
        loop {
            if let Some(delivery) = self.seen.get(&wanted) {
                return delivery.clone();
            }
            let delivery = self.receiver.next(PATIENCE).await;
            self.seen.insert(job_of(&delivery), delivery);
        }
    }
}

/// `POST /projects/{project}/jobs` with a webhook under `idempotency_key`: `(job, secret,
/// replayed)`.
async fn create_job(
    app: &TestApp,
    key: &str,
    project: &str,
    idempotency_key: &str,
    url: &str,
) -> (String, String, bool) {
    let response = app
        .api(Method::POST, &format!("/projects/{project}/jobs"), key)
        .header("idempotency-key", idempotency_key)
        .json(&json!({ "webhookUrl": url }))
        .send()
        .await
        .unwrap();
    let body = expect_status(response, 202).await;
    (
        body["job"]["id"].as_str().unwrap().to_owned(),
        body["webhookSigningSecret"].as_str().unwrap().to_owned(),
        body["idempotent"] == true,
    )
}

async fn cancel(app: &TestApp, key: &str, job: &str) {
    let response = app
        .api(Method::POST, &format!("/jobs/{job}/cancel"), key)
        .send()
        .await
        .unwrap();
    expect_status(response, 202).await;
}

/// Runs `job-orchestrator reseal` against the app's database with `keyring`; returns
/// what it printed. Panics unless it succeeds.
async fn reseal(app: &TestApp, keyring: &str) -> String {
    let output = tokio::process::Command::new(orchestrator_binary())
        .arg("reseal")
        .env_clear()
        .env("DATABASE_URL", app.database.url())
        .env("PLANGREP_SECRETS_KEYS", keyring)
        .env("PLANGREP_INTERNAL_TOKEN", crate::helpers::INTERNAL_TOKEN)
        .output()
        .await
        .expect("job-orchestrator runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "reseal failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The last progress line reseal printed for `column`.
fn counts<'a>(printed: &'a str, column: &str) -> &'a str {
    printed
        .lines()
        .rfind(|line| line.starts_with(&format!("{column}: ")))
        .unwrap_or_else(|| panic!("no counts for {column} in:\n{printed}"))
}

#[tokio::test]
async fn rotating_the_secrets_key_under_live_jobs_loses_no_delivery_and_no_replay() {
    let mut app = TestApp::spawn().await;
    let mut inbox = Inbox::start().await;
    let url = inbox.receiver.url();
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Keyring").await;

    // Live jobs sealed under the one key of PLANGREP_SECRETS_KEY, created idempotently.
    let (a, secret_a, _) = create_job(&app, &key, &project, "create-a", &url).await;
    let (b, secret_b, _) = create_job(&app, &key, &project, "create-b", &url).await;
    for (job, secret) in [(&a, &secret_a), (&b, &secret_b)] {
        assert!(verifies(
            secret,
            &inbox.expect(job, "awaiting_uploads").await
        ));
    }

    // A new primary key, the old one still in the ring.
    let ring = format!("new:{},default:{}", new_key(), old_key());
    app.restart_orchestrator(&[("PLANGREP_SECRETS_KEYS", ring.clone())])
        .await;
    let replayed = create_job(&app, &key, &project, "create-a", &url).await;
    assert_eq!(replayed, (a.clone(), secret_a.clone(), true));
    let (c, secret_c, _) = create_job(&app, &key, &project, "create-c", &url).await;
    cancel(&app, &key, &a).await;
    assert!(verifies(&secret_a, &inbox.expect(&a, "cancelled").await));
    assert!(verifies(
        &secret_c,
        &inbox.expect(&c, "awaiting_uploads").await
    ));

    // Everything moves to the primary key; a second run finds nothing left to do.
    let first = reseal(&app, &ring).await;
    assert_eq!(
        counts(&first, "jobs.webhook_secret_sealed"),
        "jobs.webhook_secret_sealed: scanned 3, resealed 2, already primary 1, changed concurrently 0, failed 0"
    );
    assert_eq!(
        counts(&first, "idempotency_keys.response_sealed"),
        "idempotency_keys.response_sealed: scanned 3, resealed 2, already primary 1, changed concurrently 0, failed 0"
    );
    let second = reseal(&app, &ring).await;
    assert!(second.contains("done: resealed 0, failed 0"), "{second}");

    // The old key leaves the ring: nothing sealed is lost.
    app.restart_orchestrator(&[("PLANGREP_SECRETS_KEYS", format!("new:{}", new_key()))])
        .await;
    for (idempotency_key, job, secret) in [
        ("create-a", &a, &secret_a),
        ("create-b", &b, &secret_b),
        ("create-c", &c, &secret_c),
    ] {
        let replayed = create_job(&app, &key, &project, idempotency_key, &url).await;
        assert_eq!(replayed, (job.clone(), secret.clone(), true));
    }
    cancel(&app, &key, &b).await;
    cancel(&app, &key, &c).await;
    assert!(verifies(&secret_b, &inbox.expect(&b, "cancelled").await));
    assert!(verifies(&secret_c, &inbox.expect(&c, "cancelled").await));
    app.stop().await;
}

#[tokio::test]
async fn a_key_removed_too_early_fails_only_its_own_rows_until_it_is_back() {
    let mut app = TestApp::spawn().await;
    let mut inbox = Inbox::start().await;
    let url = inbox.receiver.url();
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Early removal").await;
    let (old, secret_old, _) = create_job(&app, &key, &project, "old", &url).await;
    inbox.expect(&old, "awaiting_uploads").await;
    let ring = format!("new:{},default:{}", new_key(), old_key());
    app.restart_orchestrator(&[("PLANGREP_SECRETS_KEYS", ring.clone())])
        .await;
    let (new, secret_new, _) = create_job(&app, &key, &project, "new", &url).await;
    inbox.expect(&new, "awaiting_uploads").await;

    // The old key leaves the ring before any reseal.
    app.restart_orchestrator(&[("PLANGREP_SECRETS_KEYS", format!("new:{}", new_key()))])
        .await;
    let response = app
        .api(Method::POST, &format!("/projects/{project}/jobs"), &key)
        .header("idempotency-key", "old")
        .json(&json!({ "webhookUrl": url }))
        .send()
        .await
        .unwrap();
    expect_error(response, 500, "internal").await;
    let replayed = create_job(&app, &key, &project, "new", &url).await;
    assert_eq!(replayed, (new.clone(), secret_new.clone(), true));
    let job = app.get_json(&format!("/jobs/{old}"), &key).await;
    assert_eq!(job["job"]["status"], "awaiting_uploads");
    cancel(&app, &key, &old).await;
    cancel(&app, &key, &new).await;
    assert!(verifies(
        &secret_new,
        &inbox.expect(&new, "cancelled").await
    ));

    // Putting the key back repairs the rows sealed with it.
    app.restart_orchestrator(&[("PLANGREP_SECRETS_KEYS", ring)])
        .await;
    assert!(verifies(
        &secret_old,
        &inbox.expect(&old, "cancelled").await
    ));
    let replayed = create_job(&app, &key, &project, "old", &url).await;
    assert_eq!(replayed, (old.clone(), secret_old.clone(), true));
    app.stop().await;
}

/// Runs the Python library's `Webhook(secret).verify(body, headers)` (off the runtime the
/// services run on).
async fn python_verifies(secret: &str, delivery: &Captured) -> bool {
    let (secret, delivery) = (secret.to_owned(), delivery.clone());
    tokio::task::spawn_blocking(move || run_python_verifier(&secret, &delivery))
        .await
        .expect("verifier thread")
}

fn run_python_verifier(secret: &str, delivery: &Captured) -> bool {
    use std::io::Write;
    let script = r#"
import json, sys
from standardwebhooks import Webhook
secret, headers, body = sys.argv[1], json.loads(sys.argv[2]), sys.stdin.buffer.read()
Webhook(secret).verify(body, headers)
"#;
    let headers = json!({
        "webhook-id": delivery.header("webhook-id"),
        "webhook-timestamp": delivery.header("webhook-timestamp"),
        "webhook-signature": delivery.header("webhook-signature"),
    });
    let mut child = std::process::Command::new(python_tools())
        .args(["-c", script, secret, &headers.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&delivery.body)
        .unwrap();
    child.wait().unwrap().success()
}

/// `POST /jobs/{job}/webhook-secret/rotate`, optionally under an Idempotency-Key.
async fn rotate(
    app: &TestApp,
    key: &str,
    job: &str,
    idempotency_key: Option<&str>,
) -> reqwest::Response {
    let mut request = app.api(
        Method::POST,
        &format!("/jobs/{job}/webhook-secret/rotate"),
        key,
    );
    if let Some(idempotency_key) = idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn during_the_overlap_a_delivery_verifies_with_either_secret() {
    let app = TestApp::spawn().await;
    let mut inbox = Inbox::start().await;
    let (org, key) = app.create_customer().await;
    let (job, old_secret) = app
        .create_job_with_webhook(&key, &inbox.receiver.url())
        .await;
    inbox.expect(&job, "awaiting_uploads").await;

    let rotated = expect_status(rotate(&app, &key, &job, Some("rotate-1")).await, 200).await;
    let new_secret = rotated["webhookSigningSecret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(rotated["previousSecretExpiresAt"].as_str().unwrap())
            .unwrap();
    let overlap = expires_at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        overlap > chrono::Duration::hours(23),
        "default overlap 24h: {overlap}"
    );
    // A replay answers the same new secret (and rotates nothing); a new key rotates again.
    let replay = expect_status(rotate(&app, &key, &job, Some("rotate-1")).await, 200).await;
    assert_eq!(replay["webhookSigningSecret"], new_secret.as_str());
    assert_eq!(replay["idempotent"], true);

    cancel(&app, &key, &job).await;
    let delivery = inbox.expect(&job, "cancelled").await;
    let signatures = delivery.header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(signatures.split(' ').all(|s| s.starts_with("v1,")));
    assert!(python_verifies(&old_secret, &delivery).await);
    assert!(python_verifies(&new_secret, &delivery).await);
    assert!(!python_verifies(&WebhookSecret::generate().expose(), &delivery).await);

    // Refusals: a job without webhook, an unknown job, a key without jobs:write.
    let plain = app.create_job(&key).await;
    expect_error(rotate(&app, &key, &plain, None).await, 409, "no_webhook").await;
    expect_error(
        rotate(&app, &key, "job_01jd0000000000000000000000", None).await,
        404,
        "not_found",
    )
    .await;
    let reader = app.create_key(&org, &["jobs:read"]).await;
    expect_error(
        rotate(&app, &reader, &job, None).await,
        403,
        "insufficient_scope",
    )
    .await;
    let (_other_org, other_key) = app.create_customer().await;
    expect_error(rotate(&app, &other_key, &job, None).await, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn after_the_overlap_only_the_new_secret_signs() {
    let app =
        TestApp::spawn_with(Options::default().with("PLANGREP_WEBHOOK_SECRET_OVERLAP", "1s")).await;
    let mut inbox = Inbox::start().await;
    let (_org, key) = app.create_customer().await;
    let (job, old_secret) = app
        .create_job_with_webhook(&key, &inbox.receiver.url())
        .await;
    inbox.expect(&job, "awaiting_uploads").await;

    let rotated = expect_status(rotate(&app, &key, &job, None).await, 200).await;
    let new_secret = rotated["webhookSigningSecret"].as_str().unwrap().to_owned();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(rotated["previousSecretExpiresAt"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
    plangrep_test_support::eventually("the overlap to end", PATIENCE, || async {
        (chrono::Utc::now() > expires_at).then_some(())
    })
    .await;

    cancel(&app, &key, &job).await;
    let delivery = inbox.expect(&job, "cancelled").await;
    assert_eq!(delivery.header("webhook-signature").split(' ').count(), 1);
    assert!(python_verifies(&new_secret, &delivery).await);
    assert!(!python_verifies(&old_secret, &delivery).await);
    app.stop().await;
}
