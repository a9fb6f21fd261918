//! The child side: `job-orchestrator pdf-worker …`, run synchronously by `main` before
//! any runtime, telemetry or settings exist.
//!
//! The worker limits itself first (no core dumps, `RLIMIT_CPU`, `RLIMIT_AS`; it cannot
//! be done from the parent without `pre_exec`, which needs `unsafe`), then reads the
//! file and answers on stdout in the format of [`super::protocol`]. Panics inside lopdf
//! are caught and reported, but the real protection is the process boundary: a stack
//! overflow, an allocation failure or a signal ends only this process, and the parent
//! sees a missing line.

use std::ffi::OsString;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lopdf::Document;
use rlimit::Resource;

use super::protocol::{BoxLine, EXIT_FAILURE, EXIT_USAGE, ExtractLine, InspectLine, Request, Task};

/// Runs the worker with the arguments after `pdf-worker` and returns its exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let request = match Request::parse(args) {
        Ok(request) => request,
        Err(problem) => {
            eprintln!("pdf-worker: {problem}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Err(error) = limit_self(request.cpu_seconds, request.memory_bytes) {
        // Never parse without the limits.
        eprintln!("pdf-worker: cannot set resource limits: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    let mut out = std::io::stdout().lock();
    let outcome = match request.task {
        Task::Inspect => inspect(&request.file, &mut out),
        Task::Extract { from, to } => {
            let step_down = Duration::from_secs(request.cpu_seconds) / 2;
            extract(&request.file, from, to, step_down, &mut out)
        }
    };
    match outcome {
        Ok(code) => code,
        // stdout is gone: the parent stopped listening.
        Err(_) => ExitCode::from(EXIT_FAILURE),
    }
}

/// Sets this process's own limits: no core files, CPU seconds (SIGXCPU at the soft
/// limit, SIGKILL one second later) and address space. Never raises a limit.
fn limit_self(cpu_seconds: u64, memory_bytes: u64) -> std::io::Result<()> {
    rlimit::setrlimit(Resource::CORE, 0, 0)?;
    let (_, cpu_hard) = rlimit::getrlimit(Resource::CPU)?;
    let cpu_soft = cpu_seconds.max(1).min(cpu_hard);
    rlimit::setrlimit(
        Resource::CPU,
        cpu_soft,
        cpu_soft.saturating_add(1).min(cpu_hard),
    )?;
    let (_, as_hard) = rlimit::getrlimit(Resource::AS)?;
    let memory = memory_bytes.min(as_hard);
    rlimit::setrlimit(Resource::AS, memory, memory)
}

/// Prints one JSON line and flushes it.
fn emit(out: &mut impl Write, line: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Reads and parses `file`, turning errors and panics into a one-line reason.
fn open(file: &std::path::Path) -> Result<Document, String> {
    let bytes = std::fs::read(file).map_err(|error| format!("cannot read the file: {error}"))?;
    if !bytes.starts_with(b"%PDF-")
        && !bytes[..bytes.len().min(1024)]
            .windows(5)
            .any(|w| w == b"%PDF-")
    {
        return Err("not a PDF: no %PDF- header".to_owned());
    }
    let document = catch_unwind(AssertUnwindSafe(|| Document::load_mem(&bytes)))
        .map_err(|_| "not a PDF: the parser failed on this file".to_owned())?
        .map_err(|error| format!("not a PDF: {error}"))?;
    if document.is_encrypted() {
        return Err("the PDF is encrypted".to_owned());
    }
    check_page_tree(&document)?;
    Ok(document)
}

/// The page tree must be intact: lopdf skips kids it cannot read, so a damaged file can
/// look like a shorter one. The root's `/Count` must match the pages found.
fn check_page_tree(document: &Document) -> Result<(), String> {
    let found = document.get_pages().len();
    if found == 0 {
        return Err("the PDF has no pages".to_owned());
    }
    let declared = document
        .catalog()
        .ok()
        .and_then(|catalog| catalog.get(b"Pages").ok())
        .and_then(|pages| document.dereference(pages).ok())
        .and_then(|(_, pages)| pages.as_dict().ok())
        .and_then(|pages| pages.get(b"Count").ok())
        .and_then(|count| count.as_i64().ok());
    match declared {
        Some(count) if count == found as i64 => Ok(()),
        Some(count) => Err(format!(
            "the page tree is damaged: it declares {count} pages but {found} can be read"
        )),
        None => Err("the page tree is damaged: no /Count".to_owned()),
    }
}

fn inspect(file: &std::path::Path, out: &mut impl Write) -> std::io::Result<ExitCode> {
    let boxes = open(file).and_then(|document| {
        catch_unwind(AssertUnwindSafe(|| {
            document
                .get_pages()
                .into_iter()
                .map(|(number, id)| super::boxes::page_box(&document, number, id))
                .collect::<Result<Vec<_>, _>>()
        }))
        .map_err(|_| "the parser failed on this file".to_owned())?
    });
    match boxes {
        Ok(boxes) => {
            let pages = boxes
                .into_iter()
                .map(|b| BoxLine {
                    width_pt: b.width_pt,
                    height_pt: b.height_pt,
                })
                .collect();
            emit(
                out,
                &InspectLine {
                    pages: Some(pages),
                    error: None,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            emit(
                out,
                &InspectLine {
                    pages: None,
                    error: Some(error),
                },
            )?;
            Ok(ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// CPU time this (single-threaded) process has used, from `/proc/self/schedstat` (its
/// first field is nanoseconds on a CPU). `None` where that file does not exist; the
/// caller then uses wall time, which is never less.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// Prints the header and the pages `from..=to`. `RLIMIT_CPU` counts the whole process,
/// not a page, so a long document would run out of CPU on a healthy page: after any
/// page that ends past `step_down` of CPU time the worker exits cleanly (code 0) instead, and the
/// parent continues with a fresh child. Every child answers at least one page, so this
/// always progresses, and every page starts with at least half the budget left.
fn extract(
    file: &std::path::Path,
    from: u32,
    to: Option<u32>,
    step_down: Duration,
    out: &mut impl Write,
) -> std::io::Result<ExitCode> {
    let started = Instant::now();
    let document = match open(file) {
        Ok(document) => document,
        Err(error) => {
            emit(
                out,
                &ExtractLine {
                    error: Some(error),
                    ..ExtractLine::default()
                },
            )?;
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
    };
    let pages = document.get_pages();
    let page_count = u32::try_from(pages.len()).unwrap_or(u32::MAX);
    emit(
        out,
        &ExtractLine {
            page_count: Some(page_count),
            ..ExtractLine::default()
        },
    )?;
    for page in from..=to.unwrap_or(page_count) {
        let line = match page_text(&document, page, page_count) {
            Ok(text) => {
                let sheet = plangrep_core::sheet::detect_sheet(&text);
                let text_chars = text.chars().filter(|c| !c.is_whitespace()).count();
                ExtractLine {
                    page: Some(page),
                    text_chars: Some(u32::try_from(text_chars).unwrap_or(u32::MAX)),
                    sheet_number: sheet.as_ref().map(|s| s.number.clone()),
                    sheet_title: sheet.and_then(|s| s.title),
                    ..ExtractLine::default()
                }
            }
            Err(error) => ExtractLine {
                page: Some(page),
                error: Some(error),
                ..ExtractLine::default()
            },
        };
        emit(out, &line)?;
        if cpu_time().unwrap_or_else(|| started.elapsed()) >= step_down {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of one page. A chunk in a font lopdf cannot decode is skipped; the page
/// fails only when nothing on it can be read.
fn page_text(document: &Document, page: u32, page_count: u32) -> Result<String, String> {
    if page > page_count {
        return Err(format!("no such page: the document has {page_count} pages"));
    }
    let chunks = catch_unwind(AssertUnwindSafe(|| document.extract_text_chunks(&[page])))
        .map_err(|_| "the PDF parser failed on this page".to_owned())?;
    let mut text = String::new();
    let mut first_error = None;
    let mut any_text = false;
    for chunk in chunks {
        match chunk {
            Ok(chunk) => {
                any_text = true;
                text.push_str(&chunk);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if !any_text => Err(format!("the page's text cannot be read: {error}")),
        _ => Ok(text),
    }
}
