//! The parent side, for the pipeline: [`Inspector`] runs worker children and turns
//! their answers (or their deaths) into page boxes, [`InvalidPdf`]s and per-page
//! outcomes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::protocol::{ExtractLine, InspectLine, Task};
use super::read::{Line, WorkerProcess};
use super::{InvalidPdf, Limits, PageBox, PageOutcome, PageText};

/// Longest `inspect` answer read: about 180 000 pages. A file with more is refused.
const MAX_INSPECT_LINE: usize = 8 << 20;
/// Longest `extract` line read (a page's numbers and a short title fit many times over).
const MAX_EXTRACT_LINE: usize = 64 << 10;

/// Runs PDF parsing in resource-limited child processes of `program`. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inspector {
    inner: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    /// The orchestrator binary, which has the hidden `pdf-worker` subcommand.
    program: PathBuf,
    limits: Limits,
}

impl Inspector {
    /// `program` is the orchestrator binary (`std::env::current_exe()` in production,
    /// the built binary in tests).
    pub fn new(program: PathBuf, limits: Limits) -> Self {
        Self {
            inner: Arc::new(Settings { program, limits }),
        }
    }

    /// The limits every child runs under.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// An inspector for a file of `file_bytes`: the parser holds the whole file and the
    /// objects parsed from it, so the address-space limit grows to four times the file's
    /// size when that is more than the configured limit (a legitimate 500 MB drawing set
    /// must not be refused as "crashed"). CPU and wall clock stay as configured.
    pub fn for_file_size(&self, file_bytes: u64) -> Self {
        let needed = file_bytes.saturating_mul(4);
        if needed <= self.inner.limits.memory_bytes {
            return self.clone();
        }
        Self::new(
            self.inner.program.clone(),
            Limits {
                memory_bytes: needed,
                ..self.inner.limits
            },
        )
    }

    /// Page boxes of a local PDF file, or why the file is not a readable PDF.
    #[tracing::instrument(skip_all)]
    pub async fn inspect(&self, path: &Path) -> Result<Vec<PageBox>, InvalidPdf> {
        let Settings { program, limits } = &*self.inner;
        let mut worker = WorkerProcess::spawn(program, limits, &Task::Inspect, path)
            .map_err(|error| {
                // Not the file's fault: operators must see it.
                tracing::error!(%error, program = %program.display(), "cannot start the PDF worker");
                InvalidPdf::new(format!("the PDF parser could not start: {error}"))
            })?;
        let line = match worker.next_line(MAX_INSPECT_LINE, limits.wall_clock).await {
            Line::Complete(line) => line,
            Line::TimedOut => {
                worker.kill().await;
                return Err(InvalidPdf::new(format!(
                    "the PDF parser timed out after {:?}",
                    limits.wall_clock
                )));
            }
            Line::TooLong => {
                worker.kill().await;
                return Err(InvalidPdf::new("the PDF has too many pages"));
            }
            Line::End => {
                let how = worker.exit().await.description;
                tracing::warn!(exit = %how, "the PDF parser crashed");
                return Err(InvalidPdf::new(format!(
                    "the PDF parser crashed on this file ({how})"
                )));
            }
        };
        drop(worker);
        let answer: InspectLine = serde_json::from_slice(&line)
            .map_err(|_| InvalidPdf::new("the PDF parser gave an unreadable answer"))?;
        match (answer.pages, answer.error) {
            (_, Some(error)) => Err(InvalidPdf::new(error)),
            (Some(pages), None) => Ok(pages
                .into_iter()
                .map(|b| PageBox {
                    width_pt: b.width_pt,
                    height_pt: b.height_pt,
                })
                .collect()),
            (None, None) => Err(InvalidPdf::new("the PDF parser gave an unreadable answer")),
        }
    }

    /// Extracts pages `first..=last` one at a time; see [`PageStream`].
    pub fn extract(&self, path: &Path, first: u32, last: u32) -> PageStream {
        PageStream {
            inspector: self.clone(),
            path: path.to_owned(),
            next: first.max(1),
            last,
            worker: None,
            document_error: None,
        }
    }
}

/// A child that has opened the document.
struct Running {
    process: WorkerProcess,
    /// Pages this child answered: a child that ends cleanly after at least one page
    /// stepped down to renew its CPU budget; one that ends before any page crashed.
    pages_done: u32,
}

/// Pages of one extraction, produced lazily by a worker child that is restarted after
/// the page it died on.
pub struct PageStream {
    inspector: Inspector,
    path: PathBuf,
    /// The page the next outcome is for.
    next: u32,
    last: u32,
    /// The child working on `next`, once it has opened the document.
    worker: Option<Running>,
    /// Set when the document itself cannot be opened: every remaining page fails with it
    /// and no further child is started.
    document_error: Option<String>,
}

impl PageStream {
    /// The next page's outcome, in page order, or None after `last`. If the child dies or
    /// times out while on page k, page k is an error ("the parser crashed on this page" /
    /// "timed out") and a fresh child continues at k+1, so one bad page never costs the
    /// rest. Dropping the stream kills the child.
    ///
    /// Cancel-safe: dropping this future mid-page kills the child, and the next call
    /// starts that page again with a fresh one.
    #[tracing::instrument(skip_all, fields(page = self.next))]
    pub async fn next_page(&mut self) -> Option<PageOutcome> {
        if self.next > self.last {
            self.worker = None;
            return None;
        }
        let page_number = self.next;
        let result = self.extract_page(page_number).await;
        self.next += 1;
        if self.next > self.last {
            self.worker = None;
        }
        Some(PageOutcome {
            page_number,
            result,
        })
    }

    async fn extract_page(&mut self, page: u32) -> Result<PageText, String> {
        if let Some(error) = &self.document_error {
            return Err(error.clone());
        }
        let wall_clock = self.inspector.inner.limits.wall_clock;
        let (mut worker, line) = loop {
            let mut worker = match self.worker.take() {
                Some(worker) => worker,
                None => Running {
                    process: self.start_worker(page).await?,
                    pages_done: 0,
                },
            };
            match worker.process.next_line(MAX_EXTRACT_LINE, wall_clock).await {
                Line::Complete(line) => break (worker, line),
                Line::TimedOut => {
                    worker.process.kill().await;
                    return Err(format!(
                        "the PDF parser timed out on this page after {wall_clock:?}"
                    ));
                }
                Line::TooLong => {
                    worker.process.kill().await;
                    return Err("the PDF parser gave an oversized answer for this page".to_owned());
                }
                Line::End => {
                    let exit = worker.process.exit().await;
                    if exit.clean && worker.pages_done > 0 {
                        // It used half its CPU budget and stepped down (see the worker):
                        // a fresh child continues at this page.
                        continue;
                    }
                    tracing::warn!(page, exit = %exit.description, "the PDF parser crashed on a page");
                    return Err(format!(
                        "the PDF parser crashed on this page ({})",
                        exit.description
                    ));
                }
            }
        };
        let answer = match serde_json::from_slice::<ExtractLine>(&line) {
            Ok(answer) if answer.page == Some(page) => answer,
            _ => {
                worker.process.kill().await;
                return Err("the PDF parser gave an unreadable answer for this page".to_owned());
            }
        };
        // Keep the child for the next page.
        worker.pages_done += 1;
        self.worker = Some(worker);
        match (answer.error, answer.text_chars) {
            (Some(error), _) => Err(error),
            (None, Some(text_chars)) => Ok(PageText {
                text_chars,
                sheet_number: answer.sheet_number,
                sheet_title: answer.sheet_title,
            }),
            (None, None) => {
                Err("the PDF parser gave an unreadable answer for this page".to_owned())
            }
        }
    }

    /// Starts a child at `page` and waits for it to open the document (its header line).
    /// A document that cannot be opened fails this and every later page.
    async fn start_worker(&mut self, page: u32) -> Result<WorkerProcess, String> {
        let Settings { program, limits } = &*self.inspector.inner;
        let task = Task::Extract {
            from: page,
            to: Some(self.last),
        };
        let mut worker = WorkerProcess::spawn(program, limits, &task, &self.path)
            .map_err(|error| {
                tracing::error!(%error, program = %program.display(), "cannot start the PDF worker");
                format!("the PDF parser could not start: {error}")
            })?;
        let failure = match worker.next_line(MAX_EXTRACT_LINE, limits.wall_clock).await {
            Line::Complete(line) => match serde_json::from_slice::<ExtractLine>(&line) {
                Ok(ExtractLine {
                    page_count: Some(_),
                    ..
                }) => return Ok(worker),
                Ok(ExtractLine {
                    error: Some(error), ..
                }) => error,
                _ => "the PDF parser gave an unreadable answer".to_owned(),
            },
            Line::TimedOut => format!(
                "the PDF parser timed out opening the document after {:?}",
                limits.wall_clock
            ),
            Line::TooLong => "the PDF parser gave an oversized answer".to_owned(),
            Line::End => format!(
                "the PDF parser crashed opening the document ({})",
                worker.exit().await.description
            ),
        };
        worker.kill().await;
        self.document_error = Some(failure.clone());
        Err(failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_grows_with_a_large_file_and_nothing_else_does() {
        let limits = Limits {
            cpu_seconds: 7,
            memory_bytes: 1 << 30,
            wall_clock: std::time::Duration::from_secs(9),
        };
        let inspector = Inspector::new(PathBuf::from("/bin/true"), limits);
        assert_eq!(inspector.for_file_size(10 << 20).limits(), limits);
        let big = inspector.for_file_size(512 << 20).limits();
        assert_eq!(big.memory_bytes, 2 << 30);
        assert_eq!((big.cpu_seconds, big.wall_clock), (7, limits.wall_clock));
    }
}
