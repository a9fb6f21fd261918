//! PDF inspection and text extraction, isolated in child processes.
//!
//! PDFs are hostile input: a crafted file can make a parser panic, allocate without
//! bound, spin, or overflow its stack, and a stack overflow aborts the whole process
//! where no `catch_unwind` can stop it. So the orchestrator never parses a PDF itself.
//! Every parse runs in a child process of the orchestrator's own binary (the hidden
//! `job-orchestrator pdf-worker …` subcommand, [`worker`]) that first limits its own CPU
//! time and address space (`RLIMIT_CPU`, `RLIMIT_AS`), while the parent ([`Inspector`])
//! enforces a wall-clock limit, reads at most a bounded line of output, and kills the
//! child on timeout or when the caller drops the work. A file that crashes, exhausts or
//! hangs its parser is that file's `invalid_pdf` (or, during extraction, that page's
//! error): never a crashed orchestrator.
//!
//! - [`Inspector::inspect`]: page sizes of a file (preflight);
//! - [`Inspector::extract`]: per-page text statistics and sheet numbers (processing),
//!   one page at a time, surviving a page that kills its parser.

mod boxes;
mod inspector;
mod protocol;
mod read;
pub mod worker;

use std::time::Duration;

pub use inspector::{Inspector, PageStream};

/// Resource limits for one parser child process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU seconds the child may use (`RLIMIT_CPU`; SIGXCPU, then SIGKILL a second later).
    pub cpu_seconds: u64,
    /// Address space of the child in bytes (`RLIMIT_AS`): allocations beyond it fail and
    /// abort the child.
    pub memory_bytes: u64,
    /// How long the parent waits for the child's answer: for a whole inspection, or for
    /// each page of an extraction. The child is killed when it passes.
    pub wall_clock: Duration,
}

impl Default for Limits {
    /// 20 s of CPU, 1 GiB of address space, 60 s of wall clock.
    fn default() -> Self {
        Self {
            cpu_seconds: 20,
            memory_bytes: 1 << 30,
            wall_clock: Duration::from_secs(60),
        }
    }
}

/// The size of a page as displayed: the effective crop box (the media box clipped by
/// the crop box, both inherited through the page tree), scaled by `/UserUnit` and
/// turned by `/Rotate`, in points (1/72 in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageBox {
    /// Displayed width in points.
    pub width_pt: f64,
    /// Displayed height in points.
    pub height_pt: f64,
}

/// Why a file is not a readable PDF: "not a PDF: …", "the PDF parser crashed …", "the
/// PDF parser timed out …", "the PDF has no pages", ….
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidPdf {
    /// A one-line description, safe to show to the customer (no paths, no internals).
    pub message: String,
}

impl InvalidPdf {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// What the text layer of one page holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageText {
    /// Non-whitespace characters of extracted text (0 for a scanned page).
    pub text_chars: u32,
    /// The drawing sheet number found on the page, if any (see
    /// [`plangrep_core::sheet::detect_sheet`]); the caller decides whether the page is a
    /// drawing.
    pub sheet_number: Option<String>,
    /// The sheet title next to the number, if any.
    pub sheet_title: Option<String>,
}

/// The outcome of one page of an extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageOutcome {
    /// 1-based page number.
    pub page_number: u32,
    /// The page's text statistics, or why they could not be extracted.
    pub result: Result<PageText, String>,
}
