//! The `plangrep` command line (SPEC §8) as a customer runs it: the real binary as a child
//! process, pointed at the real stack (`TestApp`), with generated PDFs on disk. Terminal
//! output (progress bars, spinner) is checked through a pseudo-terminal (`script` from
//! util-linux), not only through `--json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use plangrep_test_support::pdf;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{Options, PATIENCE, TestApp, UploadFile, expect_status};

/// How long one CLI invocation may take (a whole `run` included).
const CLI_PATIENCE: Duration = Duration::from_secs(60);

/// The built `plangrep` binary, beside this test binary (`target/<profile>/plangrep`);
/// `cargo nextest run --workspace` builds it.
fn plangrep_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("plangrep");
    assert!(
        binary.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        binary.display()
    );
    binary
}

/// What one finished invocation printed.
struct Finished {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|_| panic!("stdout is not JSON: {}", self.stdout))
    }

    #[track_caller]
    fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The CLI configured like a customer's shell: only `PLANGREP_API_URL`/`PLANGREP_API_KEY`.
fn command(app: &TestApp, key: &str, args: &[&str]) -> Command {
    let mut command = Command::new(plangrep_binary());
    command
        .args(args)
        .env_clear()
        .env("PLANGREP_API_URL", &app.base_url)
        .env("PLANGREP_API_KEY", key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `plangrep args…` to completion.
async fn plangrep(app: &TestApp, key: &str, args: &[&str]) -> Finished {
    finish(command(app, key, args)).await
}

/// Runs `plangrep args…` with `stdin` as its standard input.
async fn plangrep_with_stdin(args: &[&str], stdin: &Path) -> Finished {
    let mut command = Command::new(plangrep_binary());
    command
        .args(args)
        .env_clear()
        .stdin(std::fs::File::open(stdin).expect("saved request"))
        .kill_on_drop(true);
    finish(command).await
}

async fn finish(mut command: Command) -> Finished {
    let output = tokio::time::timeout(CLI_PATIENCE, command.output())
        .await
        .expect("plangrep finished in time")
        .expect("plangrep runs");
    Finished {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A long-running `plangrep` (the webhook listener) whose stdout lines the test reads.
struct Running {
    _child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("plangrep starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            _child: child,
            lines,
        }
    }

    /// The next line printed, waiting at most [`PATIENCE`].
    async fn next_line(&mut self) -> String {
        tokio::time::timeout(PATIENCE, self.lines.recv())
            .await
            .expect("a line within the patience")
            .expect("plangrep still runs")
    }
}

/// A fresh directory for the test's files.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "plangrep-cli-{}",
            plangrep_test_support::random_token()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// Writes `bytes` as `name`; returns its path as a string.
    fn file(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A customer with `credits` and a ready project made with the CLI: `(app, org, key,
/// project)`.
async fn customer_with_project(credits: i64) -> (TestApp, String, String, String) {
    customer_with_project_on(TestApp::spawn().await, credits).await
}

/// [`customer_with_project`] on an app started by the test.
async fn customer_with_project_on(app: TestApp, credits: i64) -> (TestApp, String, String, String) {
    let (org, key) = app.create_customer().await;
    if credits > 0 {
        app.grant_credits(&org, credits).await;
    }
    let created = plangrep(
        &app,
        &key,
        &["projects", "create", "Tower B", "--wait", "--json"],
    )
    .await;
    let project = created.assert_ok().json()["project"].clone();
    assert_eq!(project["status"], "ready");
    let id = project["id"].as_str().expect("project id").to_owned();
    (app, org, key, id)
}

#[tokio::test]
async fn files_uploaded_and_watched_from_the_terminal_take_a_job_to_completed() {
    let (app, _org, key, project) = customer_with_project(100).await;
    let scratch = Scratch::new();
    let drawings = scratch.file("drawings.pdf", &pdf::drawing_set_and_spec_book());
    let specs = scratch.file("specs.pdf", &pdf::many_pages(3));

    let created = plangrep(
        &app,
        &key,
        &[
            "jobs",
            "create",
            "--project",
            &project,
            "--external-id",
            "tower-b-42",
            "--json",
        ],
    )
    .await;
    let job = created.assert_ok().json()["job"]["id"]
        .as_str()
        .expect("job id")
        .to_owned();

    // Not a terminal: one plain line per file, no progress bar escapes.
    let uploaded = plangrep(
        &app,
        &key,
        &["jobs", "upload", &job, &drawings, &specs, "--complete"],
    )
    .await;
    uploaded.assert_ok();
    assert!(
        uploaded.stdout.contains("uploaded drawings.pdf"),
        "{}",
        uploaded.stdout
    );
    assert!(
        uploaded.stdout.contains("uploaded specs.pdf"),
        "{}",
        uploaded.stdout
    );
    assert!(
        uploaded.stdout.contains("uploads complete"),
        "{}",
        uploaded.stdout
    );
    assert!(
        !uploaded.stdout.contains('\u{1b}'),
        "no terminal escapes when piped"
    );

    let watched = plangrep(&app, &key, &["jobs", "watch", &job]).await;
    watched.assert_ok();
    let statuses: Vec<&str> = watched
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .take(6)
        .collect();
    assert_eq!(
        statuses,
        [
            "provisioning",
            "awaiting_uploads",
            "uploading",
            "preflighting",
            "processing",
            "completed"
        ],
        "each status printed once, in order: {}",
        watched.stdout
    );

    // The stored files carry the sha256 the CLI computed.
    let got = plangrep(&app, &key, &["jobs", "get", &job, "--json"]).await;
    let files = got.assert_ok().json()["job"]["files"].clone();
    let expected_sha = sha256_hex(&std::fs::read(&drawings).unwrap());
    assert_eq!(files.as_array().unwrap().len(), 2);
    assert_eq!(files[0]["sha256"], expected_sha.as_str());

    let saved = scratch.0.join("result.json");
    let saved_arg = saved.display().to_string();
    plangrep(&app, &key, &["jobs", "result", &job, "-o", &saved_arg])
        .await
        .assert_ok();
    let result: Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(result["schemaVersion"], "v1");
    assert_eq!(result["usage"]["pageCount"], 9);

    let listed = plangrep(&app, &key, &["jobs", "list", "--project", &project]).await;
    assert!(
        listed.assert_ok().stdout.contains(&job),
        "{}",
        listed.stdout
    );
    let events = plangrep(&app, &key, &["jobs", "events", &job, "--json"]).await;
    assert_eq!(
        events.assert_ok().json()["events"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let projects = plangrep(&app, &key, &["projects", "list"]).await;
    assert!(
        projects.assert_ok().stdout.contains("Tower B"),
        "{}",
        projects.stdout
    );
}

#[tokio::test]
async fn run_does_everything_and_summarises_pages_drawings_sheets_and_credits() {
    let (app, org, key, project) = customer_with_project(100).await;
    let scratch = Scratch::new();
    let drawings = scratch.file("drawings.pdf", &pdf::drawing_set_and_spec_book());

    let run = plangrep(&app, &key, &["run", &drawings, "--project", &project]).await;
    run.assert_ok();
    let out = &run.stdout;
    assert!(out.contains("uploaded drawings.pdf"), "{out}");
    assert!(out.contains("pages     6 (6 succeeded)"), "{out}");
    assert!(out.contains("drawings  4  documents 2"), "{out}");
    for sheet in ["A1.01", "S-201", "M-101"] {
        assert!(out.contains(sheet), "sheet {sheet} in {out}");
    }
    assert!(out.contains("credits   42 debited"), "{out}");
    assert_eq!(app.balance(&org).await, 58);

    let json = plangrep(
        &app,
        &key,
        &["run", &drawings, "--project", &project, "--json"],
    )
    .await;
    let summary = json.assert_ok().json();
    assert_eq!(summary["job"]["status"], "completed");
    assert_eq!(summary["result"]["usage"]["creditsDebited"], 42);
}

#[tokio::test]
async fn rotate_secret_prints_a_new_secret_once_and_refuses_a_job_without_webhook() {
    let (app, _org, key, project) = customer_with_project(0).await;
    let receiver = plangrep_test_support::receiver::Receiver::start().await;
    let url = receiver.url();
    let create = ["jobs", "create", "--project", &project, "--json"];
    let with_webhook = [&create[..], &["--webhook-url", &url]].concat();
    let created = plangrep(&app, &key, &with_webhook).await.assert_ok().json();
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    let old = created["webhookSigningSecret"].as_str().unwrap().to_owned();

    let rotated = plangrep(&app, &key, &["jobs", "rotate-secret", &job]).await;
    let stdout = &rotated.assert_ok().stdout;
    let new = stdout
        .split_whitespace()
        .find(|word| word.starts_with("whsec_"))
        .unwrap_or_else(|| panic!("no secret in {stdout}"));
    assert_ne!(new, old);
    assert!(stdout.contains("signs beside it until"), "{stdout}");

    let plain = plangrep(&app, &key, &create).await.assert_ok().json()["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = plangrep(&app, &key, &["jobs", "rotate-secret", &plain]).await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("no_webhook"), "{}", refused.stderr);
}

#[tokio::test]
async fn a_job_that_ends_cancelled_under_watch_exits_3() {
    let (app, _org, key, project) = customer_with_project(0).await;
    let created = plangrep(
        &app,
        &key,
        &["jobs", "create", "--project", &project, "--json"],
    )
    .await;
    let job = created.assert_ok().json()["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let cancelled = plangrep(&app, &key, &["jobs", "cancel", &job]).await;
    assert!(
        cancelled.assert_ok().stdout.contains("cancelled"),
        "{}",
        cancelled.stdout
    );
    let watched = plangrep(&app, &key, &["jobs", "watch", &job]).await;
    assert_eq!(watched.code, 3, "stderr: {}", watched.stderr);
    assert!(
        watched.stderr.contains("ended cancelled"),
        "{}",
        watched.stderr
    );

    // Cancelling again, or uploading, is a state conflict: an API error, exit 1, its code.
    let again = plangrep(&app, &key, &["jobs", "cancel", &job]).await;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("invalid_job_state"),
        "{}",
        again.stderr
    );
    let scratch = Scratch::new();
    let file = scratch.file("late.pdf", &pdf::many_pages(1));
    let late = plangrep(&app, &key, &["jobs", "upload", &job, &file]).await;
    assert_eq!(late.code, 1, "{}", late.stderr);
    assert!(late.stderr.contains("(HTTP 409"), "{}", late.stderr);
}

#[tokio::test]
async fn refused_uploads_are_re_sent_after_retry_after_without_storing_a_file_twice() {
    // One request per second, no burst: every request right after another is a 429.
    let app = TestApp::spawn_with(
        Options::default()
            .with("PLANGREP_RATE_LIMIT_PER_SECOND", "1")
            .with("PLANGREP_RATE_LIMIT_BURST", "1"),
    )
    .await;
    // Only the CLI talks to the public API here: it waits out every 429.
    let (app, _org, key, project) = customer_with_project_on(app, 100).await;
    let created = plangrep(
        &app,
        &key,
        &["jobs", "create", "--project", &project, "--json"],
    )
    .await;
    let job = created.assert_ok().json()["job"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let scratch = Scratch::new();
    let files: Vec<String> = (1..=3)
        .map(|n| scratch.file(&format!("part{n}.pdf"), &pdf::many_pages(n)))
        .collect();
    let mut args = vec!["jobs", "upload", job.as_str()];
    args.extend(files.iter().map(String::as_str));
    args.push("--complete");

    let uploaded = plangrep(&app, &key, &args).await;
    uploaded.assert_ok();
    assert!(
        uploaded
            .stderr
            .contains("retrying part1.pdf after: rate_limited"),
        "{}",
        uploaded.stderr
    );
    let watched = plangrep(&app, &key, &["jobs", "watch", &job]).await;
    assert!(
        watched.assert_ok().stdout.contains("completed"),
        "{}",
        watched.stdout
    );

    let got = plangrep(&app, &key, &["jobs", "get", &job, "--json"]).await;
    let job = got.assert_ok().json()["job"].clone();
    let names: Vec<&str> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file["fileName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["part1.pdf", "part2.pdf", "part3.pdf"],
        "each file stored once"
    );
    assert_eq!(job["pageCount"], 6);
}

#[tokio::test]
async fn api_errors_exit_1_with_their_code_and_usage_errors_exit_2() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;

    let missing = plangrep(
        &app,
        &key,
        &["jobs", "get", "job_01jzzzzzzzzzzzzzzzzzzzzzzz"],
    )
    .await;
    assert_eq!(missing.code, 1, "{}", missing.stderr);
    assert!(missing.stderr.contains("not_found"), "{}", missing.stderr);

    let bad_key = plangrep(&app, "pgk_live_nope", &["projects", "list"]).await;
    assert_eq!(bad_key.code, 1);
    assert!(
        bad_key.stderr.contains("unauthorized"),
        "{}",
        bad_key.stderr
    );

    let not_ready = plangrep(
        &app,
        &key,
        &[
            "jobs",
            "create",
            "--project",
            "proj_01jzzzzzzzzzzzzzzzzzzzzzzz",
        ],
    )
    .await;
    assert_eq!(not_ready.code, 1);
    assert!(
        not_ready.stderr.contains("not_found"),
        "{}",
        not_ready.stderr
    );

    for usage in [
        vec!["jobs", "frobnicate"],
        vec!["jobs", "upload", "job_x"],
        vec!["run", "a.pdf"],
        vec![
            "webhooks",
            "listen",
            "--port",
            "0",
            "--secret",
            "not-a-secret",
        ],
    ] {
        let finished = plangrep(&app, &key, &usage).await;
        assert_eq!(finished.code, 2, "{usage:?}: {}", finished.stderr);
    }
    let no_key = plangrep(&app, "", &["projects", "list"]).await;
    assert_eq!(no_key.code, 2, "{}", no_key.stderr);
    assert!(
        no_key.stderr.contains("PLANGREP_API_KEY"),
        "{}",
        no_key.stderr
    );
}

#[tokio::test]
async fn webhooks_listen_verifies_real_deliveries_and_verify_rejects_a_tampered_body() {
    let app = TestApp::spawn().await;
    let (org, key) = app.create_customer().await;
    app.grant_credits(&org, 100).await;
    let scratch = Scratch::new();
    let saved_dir = scratch.0.join("saved");

    // The secret exists only once the job does, and the job needs the listener's URL:
    // take a free port first, create the job, then start the listener on that port. The
    // platform retries the deliveries it could not make in the meantime.
    let port = free_port();
    let (job, secret) = app
        .create_job_with_webhook(&key, &format!("http://127.0.0.1:{port}/hooks"))
        .await;
    let mut listen = command(
        &app,
        &key,
        &[
            "webhooks",
            "listen",
            "--port",
            &port.to_string(),
            "--secret",
            &secret,
            "--save-dir",
            &saved_dir.display().to_string(),
        ],
    );
    listen.env_remove("PLANGREP_API_KEY");
    let mut listener = Running::start(listen);
    assert!(
        listener
            .next_line()
            .await
            .contains(&format!("listening on http://127.0.0.1:{port}"))
    );

    app.wait_until_awaiting_uploads(&key, &job).await;
    expect_status(
        app.upload(
            &key,
            &job,
            vec![UploadFile::pdf("a.pdf", pdf::drawing_set_and_spec_book())],
        )
        .await,
        200,
    )
    .await;
    expect_status(app.complete_uploads(&key, &job).await, 202).await;

    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|line: &String| line.contains(" completed "))
    {
        let line = listener.next_line().await;
        assert!(line.contains(&job), "{line}");
        assert!(line.contains("signature valid"), "{line}");
        assert!(!line.contains("duplicate"), "{line}");
        seen.push(line);
    }
    for sequence in 1..=6 {
        assert!(
            seen.iter()
                .any(|line| line.contains(&format!("seq {sequence} "))),
            "sequence {sequence} in {seen:#?}"
        );
    }

    // A redelivery carries the same webhook-id: the listener flags it.
    let delivery = app
        .wait_for_delivery(&key, &job, 6, "the completed delivery to succeed", |d| {
            d["state"] == "succeeded"
        })
        .await;
    let listed = plangrep(&app, &key, &["deliveries", "list", &job]).await;
    assert!(
        listed.assert_ok().stdout.contains("succeeded"),
        "{}",
        listed.stdout
    );
    let dlv = delivery["id"].as_str().unwrap();
    plangrep(&app, &key, &["deliveries", "redeliver", dlv])
        .await
        .assert_ok();
    let again = listener.next_line().await;
    assert!(
        again.contains("duplicate") && again.contains("signature valid"),
        "{again}"
    );

    // `webhooks verify` reads a saved request: valid as saved, invalid once tampered with
    // or checked with another secret.
    let first = std::fs::read_dir(&saved_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .min()
        .expect("saved requests");
    let verified = plangrep_with_stdin(&["webhooks", "verify", "--secret", &secret], &first).await;
    assert!(
        verified.assert_ok().stdout.contains("signature valid"),
        "{}",
        verified.stdout
    );

    let original = std::fs::read_to_string(&first).unwrap();
    assert!(original.contains("\"sequence\":1"), "{original}");
    let tampered = scratch.file(
        "tampered.http",
        original
            .replace("\"sequence\":1", "\"sequence\":7")
            .as_bytes(),
    );
    let refused = plangrep_with_stdin(
        &["webhooks", "verify", "--secret", &secret],
        Path::new(&tampered),
    )
    .await;
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stdout.contains("INVALID"), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("signature invalid"),
        "{}",
        refused.stderr
    );

    let other_secret = plangrep_core::webhook::WebhookSecret::generate().expose();
    let wrong =
        plangrep_with_stdin(&["webhooks", "verify", "--secret", &other_secret], &first).await;
    assert_eq!(wrong.code, 1);
}

#[tokio::test]
async fn a_listener_answering_500_sees_the_platform_retry_the_same_event() {
    let app = TestApp::spawn().await;
    let (_org, key) = app.create_customer().await;
    let port = free_port();
    let (job, secret) = app
        .create_job_with_webhook(&key, &format!("http://127.0.0.1:{port}/hooks"))
        .await;
    let listen = command(
        &app,
        &key,
        &[
            "webhooks",
            "listen",
            "--port",
            &port.to_string(),
            "--secret",
            &secret,
            "--status",
            "500",
        ],
    );
    let mut listener = Running::start(listen);
    assert!(listener.next_line().await.contains("answering 500"));

    // Event 1 is refused, so it is retried (same webhook-id) and event 2 waits behind it.
    let first = listener.next_line().await;
    assert!(
        first.contains("seq 1 ") && first.contains("signature valid"),
        "{first}"
    );
    assert!(first.ends_with("-> 500"), "{first}");
    let event = first.split_whitespace().next().unwrap().to_owned();
    let retry = listener.next_line().await;
    assert!(
        retry.starts_with(&event) && retry.contains("duplicate"),
        "{retry}"
    );

    let listed = plangrep(&app, &key, &["deliveries", "list", &job]).await;
    assert!(
        listed.assert_ok().stdout.contains("HTTP 500"),
        "{}",
        listed.stdout
    );
}

#[tokio::test]
async fn progress_bars_and_status_lines_are_drawn_on_a_terminal() {
    let (app, _org, key, project) = customer_with_project(100).await;
    let scratch = Scratch::new();
    let drawings = scratch.file("drawings.pdf", &pdf::drawing_set_and_spec_book());
    let specs = scratch.file("specs.pdf", &pdf::many_pages(2));

    // `script` gives the CLI a pseudo-terminal as stdout and copies what it drew.
    let binary = plangrep_binary().display().to_string();
    let line = format!("{binary} run {drawings} {specs} --project {project}");
    let mut script = Command::new("script");
    script
        .args(["-qfec", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TERM", "xterm-256color")
        .env("PLANGREP_API_URL", &app.base_url)
        .env("PLANGREP_API_KEY", &key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let drawn = finish(script).await;
    assert_eq!(drawn.code, 0, "{}", drawn.stdout);
    let screen = &drawn.stdout;
    // A bar per file and the total, with bytes, rate and ETA, redrawn in place.
    for needle in [
        "drawings.pdf",
        "specs.pdf",
        "total",
        "ETA",
        "[====",
        "/s",
        "\u{1b}[",
    ] {
        assert!(
            screen.contains(needle),
            "{needle:?} on the terminal:\n{screen}"
        );
    }
    // A spinner with the job while it runs.
    assert!(
        "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
            .chars()
            .any(|tick| screen.contains(&format!("{tick} job_"))),
        "a spinner on the terminal:\n{screen}"
    );
    // Then the status lines and the summary.
    for needle in ["processing", "completed", "credits   44 debited"] {
        assert!(
            screen.contains(needle),
            "{needle:?} on the terminal:\n{screen}"
        );
    }
}

/// A port nothing listens on right now, for a listener (a child process) whose URL must
/// exist before the job whose secret it needs.
fn free_port() -> u16 {
    let [addr] = plangrep_test_support::ports::ports_for_child_processes();
    addr.port()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
