//! The parent side of one worker process: spawning it with its limits, reading its
//! output one bounded line at a time under a wall-clock limit, and killing it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use super::Limits;
use super::protocol::{Request, Task};

/// What waiting for the next line gave.
#[derive(Debug)]
pub enum Line {
    /// A complete line (without its newline).
    Complete(Vec<u8>),
    /// The child closed its output (it exited or died); a partial last line is dropped,
    /// since a child that dies mid-line did not finish its answer.
    End,
    /// The line grew past the bound: a hostile or broken child.
    TooLong,
    /// No complete line within the wall-clock limit.
    TimedOut,
}

/// A running worker child. Dropping it kills the child (`kill_on_drop`); tokio reaps it.
pub struct WorkerProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl WorkerProcess {
    /// Starts `program pdf-worker … task file`. The child gets an empty environment (it
    /// needs none, and must not see the service's secrets), no stdin, and no stderr: a
    /// hostile file must not fill our logs. tokio's spawn is a `posix_spawn`/`vfork`,
    /// which does not block the runtime for long; waiting is asynchronous.
    pub fn spawn(
        program: &Path,
        limits: &Limits,
        task: &Task,
        file: &Path,
    ) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .args(Request::to_args(limits, task, file))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("the worker's stdout is not piped"))?;
        Ok(Self {
            child,
            stdout: BufReader::new(stdout),
        })
    }

    /// The next line of output, at most `max_len` bytes, within `wall_clock`.
    pub async fn next_line(&mut self, max_len: usize, wall_clock: Duration) -> Line {
        match tokio::time::timeout(wall_clock, read_line(&mut self.stdout, max_len)).await {
            Err(_) => Line::TimedOut,
            Ok(line) => line,
        }
    }

    /// Kills the child (if it still runs) and reaps it.
    pub async fn kill(&mut self) -> Exit {
        let _ = self.child.start_kill();
        Exit::from(self.child.wait().await)
    }

    /// How the child ended, after it closed its output. It is exiting then; one that
    /// lingers is killed after a short grace period.
    pub async fn exit(&mut self) -> Exit {
        match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(status) => Exit::from(status),
            Err(_) => self.kill().await,
        }
    }
}

/// How long a child that closed its output may take to exit.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// How a child ended.
#[derive(Debug)]
pub struct Exit {
    /// Exit code 0.
    pub clean: bool,
    /// "exit code 3", "killed by signal 6".
    pub description: String,
}

impl From<std::io::Result<std::process::ExitStatus>> for Exit {
    fn from(status: std::io::Result<std::process::ExitStatus>) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Ok(status) => Self {
                clean: status.success(),
                description: match (status.code(), status.signal()) {
                    (_, Some(signal)) => format!("killed by signal {signal}"),
                    (Some(code), _) => format!("exit code {code}"),
                    (None, None) => "unknown exit".to_owned(),
                },
            },
            Err(error) => Self {
                clean: false,
                description: format!("unknown exit ({error})"),
            },
        }
    }
}

/// Reads up to and including a newline without buffering more than `max_len` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, max_len: usize) -> Line {
    let mut line = Vec::new();
    loop {
        let buffer = match reader.fill_buf().await {
            Ok(buffer) => buffer,
            Err(_) => return Line::End,
        };
        if buffer.is_empty() {
            return Line::End;
        }
        let (chunk, complete) = match buffer.iter().position(|b| *b == b'\n') {
            Some(newline) => (&buffer[..newline], true),
            None => (buffer, false),
        };
        if line.len() + chunk.len() > max_len {
            return Line::TooLong;
        }
        line.extend_from_slice(chunk);
        let consumed = chunk.len() + usize::from(complete);
        reader.consume(consumed);
        if complete {
            return Line::Complete(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded_and_a_partial_last_line_is_dropped() {
        let mut input: &[u8] = b"short\nthis one is far too long\npartial";
        assert!(matches!(read_line(&mut input, 10).await, Line::Complete(l) if l == b"short"));
        assert!(matches!(read_line(&mut input, 10).await, Line::TooLong));
        let mut input: &[u8] = b"partial";
        assert!(matches!(read_line(&mut input, 10).await, Line::End));
    }
}
