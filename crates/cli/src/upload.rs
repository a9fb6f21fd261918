//! `jobs upload` and the upload step of `run`: each file is hashed in a first streaming
//! pass, then sent in its own multipart request (`metadata` + `file0`) streamed from disk,
//! with a progress bar per file and a total (bytes, rate, ETA) when stdout is a terminal.
//!
//! One file per request because uploads are all-or-nothing per request (SPEC §4): a
//! refused or broken request keeps nothing, so re-sending just that file is safe. A 429,
//! 503 or other 5xx is re-sent (after `Retry-After` when given); the one ambiguous case, a
//! connection that broke so that no answer arrived, is settled before the retry by looking
//! for the file (same name and sha256) on the job: it is never stored twice.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::TryStreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio_util::io::ReaderStream;

use crate::cli::Classification;
use crate::client::{ApiClient, Attempt, read_json, retry_delay};
use crate::error::CliError;
use crate::output::{self, Output};

/// Attempts per file before the upload gives up.
const MAX_ATTEMPTS: u32 = 6;
/// Read size of the hashing pass and of the upload stream.
const CHUNK: usize = 64 * 1024;

/// A local file ready to send: its size and sha256 are known.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// Where it is.
    pub path: PathBuf,
    /// The name the job will show.
    pub file_name: String,
    /// Its length in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of its content.
    pub sha256: String,
}

impl LocalFile {
    /// Reads `path` once, in chunks, to learn its size and sha256.
    pub async fn inspect(path: &Path) -> Result<Self, CliError> {
        let owned = path.to_owned();
        tokio::task::spawn_blocking(move || hash_file(&owned))
            .await
            .map_err(|error| CliError::Unexpected(format!("hashing task: {error}")))?
    }

    fn content_type(&self) -> &'static str {
        let pdf = self
            .path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("pdf"));
        if pdf {
            "application/pdf"
        } else {
            "application/octet-stream"
        }
    }
}

fn hash_file(path: &Path) -> Result<LocalFile, CliError> {
    let context = || format!("reading {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| CliError::io(context(), e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| CliError::io(context(), e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| CliError::Usage(format!("{} is not a file", path.display())))?;
    Ok(LocalFile {
        path: path.to_owned(),
        file_name,
        size,
        sha256,
    })
}

/// Progress bars: one per file and a total, drawn on stdout only when it is a terminal
/// and the output is for people.
struct Progress {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Progress {
    fn new(out: Output, total_bytes: u64) -> Self {
        let target = if out.json {
            ProgressDrawTarget::hidden()
        } else {
            // Hidden by indicatif itself when stdout is not a terminal.
            ProgressDrawTarget::stdout()
        };
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(bar_style());
        total.set_prefix("total");
        Self { multi, total }
    }

    fn file_bar(&self, file: &LocalFile) -> ProgressBar {
        let bar = self
            .multi
            .insert_before(&self.total, ProgressBar::new(file.size));
        bar.set_style(bar_style());
        bar.set_prefix(file.file_name.clone());
        bar
    }

    /// A line for people: above the bars on a terminal, plain otherwise.
    fn line(&self, out: Output, text: String) {
        if out.json {
            return;
        }
        if self.multi.is_hidden() {
            println!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    /// A notice (retries): above the bars on a terminal, else on stderr so that stdout
    /// stays clean for `--json`.
    fn notice(&self, text: String) {
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:<20!} [{bar:25}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}  ETA {eta}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

/// Uploads `paths` to `job_id`; returns the API's `uploads` entries, one per file.
pub async fn upload_files(
    client: &ApiClient,
    job_id: &str,
    paths: &[PathBuf],
    classification: Option<Classification>,
    out: Output,
) -> Result<Vec<Value>, CliError> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        files.push(LocalFile::inspect(path).await?);
    }
    let progress = Progress::new(out, files.iter().map(|file| file.size).sum());
    let mut uploads = Vec::with_capacity(files.len());
    let mut done_bytes = 0;
    for file in &files {
        let bar = progress.file_bar(file);
        let upload = upload_one(
            client,
            job_id,
            file,
            classification,
            &bar,
            &progress,
            done_bytes,
        )
        .await?;
        done_bytes += file.size;
        progress.total.set_position(done_bytes);
        // The line below replaces the finished bar; the total stays until the end.
        bar.finish_and_clear();
        progress.line(
            out,
            format!(
                "uploaded {}  {}  sha256 {}  {}",
                file.file_name,
                output::bytes(file.size),
                file.sha256,
                output::text(&upload, "documentId"),
            ),
        );
        uploads.push(upload);
    }
    progress.total.finish();
    Ok(uploads)
}

/// Sends one file, retrying a broken or refused-for-now request.
async fn upload_one(
    client: &ApiClient,
    job_id: &str,
    file: &LocalFile,
    classification: Option<Classification>,
    bar: &ProgressBar,
    progress: &Progress,
    done_before: u64,
) -> Result<Value, CliError> {
    let mut attempt = 1;
    loop {
        bar.set_position(0);
        progress.total.set_position(done_before);
        let outcome =
            match send_file(client, job_id, file, classification, bar, &progress.total).await {
                Ok(response) => read_json(response).await,
                Err(error) => Err(Attempt::Retry(error, None)),
            };
        let (error, wait) = match outcome {
            Ok((body, _)) => {
                return body["uploads"]
                    .get(0)
                    .cloned()
                    .ok_or_else(|| CliError::Unexpected("no `uploads` in the answer".into()));
            }
            Err(Attempt::Fatal(error)) => return Err(error),
            Err(Attempt::Retry(error, wait)) => (error, wait),
        };
        // An answered request kept nothing (the route is all-or-nothing); without an
        // answer the file may have been stored just before the connection broke.
        if matches!(error, CliError::Transport(_))
            && let Some(stored) = find_stored(client, job_id, file).await?
        {
            return Ok(stored);
        }
        if attempt >= MAX_ATTEMPTS {
            return Err(error);
        }
        progress.notice(format!("retrying {} after: {error}", file.file_name));
        tokio::time::sleep(wait.unwrap_or_else(|| retry_delay(attempt))).await;
        attempt += 1;
    }
}

async fn send_file(
    client: &ApiClient,
    job_id: &str,
    file: &LocalFile,
    classification: Option<Classification>,
    bar: &ProgressBar,
    total: &ProgressBar,
) -> Result<reqwest::Response, CliError> {
    let mut entry = json!({
        "partName": "file0",
        "fileName": file.file_name,
        "contentType": file.content_type(),
        "sha256": file.sha256,
    });
    if let Some(classification) = classification {
        entry["classification"] = json!(classification.as_str());
    }
    let metadata = json!({ "files": [entry] }).to_string();

    let handle = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| CliError::io(format!("opening {}", file.path.display()), e))?;
    let (bar, total) = (bar.clone(), total.clone());
    let stream = ReaderStream::with_capacity(handle, CHUNK).inspect_ok(move |chunk| {
        bar.inc(chunk.len() as u64);
        total.inc(chunk.len() as u64);
    });
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), file.size)
        .file_name(file.file_name.clone())
        .mime_str(file.content_type())?;
    let form = Form::new().text("metadata", metadata).part("file0", part);
    Ok(client
        .request(Method::POST, &format!("/jobs/{job_id}/files"))
        .multipart(form)
        .send()
        .await?)
}

/// The job's file with the same name and sha256, as an `uploads` entry, if it has one.
async fn find_stored(
    client: &ApiClient,
    job_id: &str,
    file: &LocalFile,
) -> Result<Option<Value>, CliError> {
    let job = client.get(&format!("/jobs/{job_id}")).await?;
    let stored = job["job"]["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|stored| stored["fileName"] == file.file_name && stored["sha256"] == file.sha256)
        .map(|stored| {
            json!({
                "documentId": stored["id"],
                "fileName": stored["fileName"],
                "sizeBytes": stored["sizeBytes"],
                "sha256": stored["sha256"],
            })
        });
    Ok(stored)
}

/// Waits (polling with backoff) while the job is still `provisioning`, so that a job
/// created a moment ago can take files. Any other status is left to the upload route to
/// judge (a job that takes no files answers 409 `invalid_job_state`).
pub async fn wait_until_accepting_files(client: &ApiClient, job_id: &str) -> Result<(), CliError> {
    let mut delay = Duration::from_millis(100);
    loop {
        let (body, limits) = client.get_with_limits(&format!("/jobs/{job_id}")).await?;
        if body["job"]["status"] != "provisioning" {
            return Ok(());
        }
        tokio::time::sleep(delay.max(limits.pause())).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hashing_pass_gives_size_and_sha256() {
        let dir = std::env::temp_dir().join(format!("plangrep-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("abc.pdf");
        std::fs::write(&path, b"abc").unwrap();
        let file = hash_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(file.size, 3);
        assert_eq!(file.file_name, "abc.pdf");
        assert_eq!(file.content_type(), "application/pdf");
        assert_eq!(
            file.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
