//! The worker's command line and its JSON-lines output: the contract between the
//! parent ([`super::Inspector`]) and the child ([`super::worker`]), kept in one place.
//!
//! Command line: `pdf-worker [--cpu-seconds N] [--memory-bytes N] inspect FILE` or
//! `pdf-worker [limits] extract --from N [--to M] FILE`.
//!
//! Output, one JSON object per line:
//! - inspect: `{"pages":[{"widthPt":…,"heightPt":…},…]}`, or `{"error":"…"}` and exit 1;
//! - extract: first `{"pageCount":N}` once the document is open (or `{"error":"…"}` and
//!   exit 1), then per page from `--from` to `--to` (default: the last page), flushed
//!   after each: `{"page":k,"textChars":…,"sheetNumber":…,"sheetTitle":…}` (the sheet
//!   fields only when found) or `{"page":k,"error":"…"}`. After a page, a worker that
//!   has used half its CPU budget may exit 0 early; the parent continues with a fresh
//!   child at the next page (a worker that ends any other way crashed).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Limits;

/// The hidden subcommand that runs the worker.
pub const SUBCOMMAND: &str = "pdf-worker";

/// Exit code of a worker that reported a structured failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a worker started with a bad command line.
pub const EXIT_USAGE: u8 = 2;

/// A page box on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoxLine {
    pub width_pt: f64,
    pub height_pt: f64,
}

/// The one line `inspect` prints.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InspectLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pages: Option<Vec<BoxLine>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One line of `extract`: the header (`page_count`), a page, or a document error.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtractLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text_chars: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sheet_title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the worker was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Inspect,
    Extract { from: u32, to: Option<u32> },
}

/// A parsed worker command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub task: Task,
    pub file: PathBuf,
}

impl Request {
    /// The arguments after the program name that ask a worker for `task` on `file`.
    pub fn to_args(limits: &Limits, task: &Task, file: &std::path::Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            SUBCOMMAND.into(),
            "--cpu-seconds".into(),
            limits.cpu_seconds.to_string().into(),
            "--memory-bytes".into(),
            limits.memory_bytes.to_string().into(),
        ];
        match task {
            Task::Inspect => args.push("inspect".into()),
            Task::Extract { from, to } => {
                args.extend(["extract".into(), "--from".into(), from.to_string().into()]);
                if let Some(to) = to {
                    args.extend(["--to".into(), to.to_string().into()]);
                }
            }
        }
        // `--` so that a file name starting with `-` stays a file name.
        args.extend(["--".into(), file.as_os_str().to_owned()]);
        args
    }

    /// Parses the arguments after `pdf-worker`.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let defaults = Limits::default();
        let mut cpu_seconds = defaults.cpu_seconds;
        let mut memory_bytes = defaults.memory_bytes;
        let mut task = None;
        let mut from = 1;
        let mut to = None;
        let mut file = None;
        let mut args = args.into_iter();
        let number = |value: Option<OsString>, flag: &str| -> Result<u64, String> {
            value
                .as_deref()
                .and_then(OsStr::to_str)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some("--cpu-seconds") => cpu_seconds = number(args.next(), "--cpu-seconds")?,
                Some("--memory-bytes") => memory_bytes = number(args.next(), "--memory-bytes")?,
                Some("--from") => from = page_number(number(args.next(), "--from")?)?,
                Some("--to") => to = Some(page_number(number(args.next(), "--to")?)?),
                Some("inspect") if task.is_none() => task = Some("inspect"),
                Some("extract") if task.is_none() => task = Some("extract"),
                Some("--") => {
                    file = args.next();
                    break;
                }
                _ if file.is_none() && task.is_some() => file = Some(arg),
                _ => return Err(format!("unexpected argument {arg:?}")),
            }
        }
        if let Some(extra) = args.next() {
            return Err(format!("unexpected argument {extra:?}"));
        }
        let task = match task {
            Some("inspect") => Task::Inspect,
            Some(_) => Task::Extract { from, to },
            None => return Err("expected `inspect` or `extract`".to_owned()),
        };
        Ok(Self {
            cpu_seconds,
            memory_bytes,
            task,
            file: file.ok_or("expected a FILE")?.into(),
        })
    }
}

fn page_number(value: u64) -> Result<u32, String> {
    u32::try_from(value)
        .ok()
        .filter(|page| *page >= 1)
        .ok_or_else(|| format!("page numbers start at 1 (got {value})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_command_line_parses_back() {
        let limits = Limits {
            cpu_seconds: 3,
            memory_bytes: 1000,
            wall_clock: std::time::Duration::from_secs(1),
        };
        let task = Task::Extract {
            from: 4,
            to: Some(9),
        };
        let args = Request::to_args(&limits, &task, "-odd name.pdf".as_ref());
        assert_eq!(args[0], SUBCOMMAND);
        let request = Request::parse(args.into_iter().skip(1)).unwrap();
        assert_eq!(
            request,
            Request {
                cpu_seconds: 3,
                memory_bytes: 1000,
                task,
                file: "-odd name.pdf".into()
            }
        );
    }

    #[test]
    fn the_documented_short_forms_parse() {
        let parse = |args: &[&str]| Request::parse(args.iter().map(OsString::from));
        assert_eq!(parse(&["inspect", "a.pdf"]).unwrap().task, Task::Inspect);
        assert_eq!(
            parse(&["extract", "--from", "2", "a.pdf"]).unwrap().task,
            Task::Extract { from: 2, to: None }
        );
        assert!(parse(&["extract", "--from", "0", "a.pdf"]).is_err());
        assert!(parse(&["inspect"]).is_err());
        assert!(parse(&["inspect", "a.pdf", "b.pdf"]).is_err());
        assert!(parse(&["a.pdf"]).is_err());
    }
}
