//! The command line every service shares:
//! `<service> [--config FILE] [serve [--migrate]|migrate|healthcheck|reseal]`, and
//! [`run_main`], the body of every `main`. `reseal` is the orchestrator's (ADR 0011); the
//! other services refuse it.
//!
//! Migrations run once per deploy (`migrate`: a k8s Job, a one-shot compose service), not
//! on every replica start: `serve` only checks that they were applied. `serve --migrate`
//! keeps the one-process development path (`make run`).

use std::path::PathBuf;

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the service (the default); with `migrate`, apply the migrations first (the
    /// one-process development path), else refuse to start on an un-migrated database.
    Serve {
        /// `serve --migrate`.
        migrate: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Probe the running service's `/healthz` and exit 0 or 1.
    Healthcheck,
    /// Re-seal every stored secret with the primary key of the keyring and exit
    /// (job-orchestrator only).
    Reseal,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// The subcommand.
    pub command: Command,
    /// An optional settings file layered under the environment.
    pub config_file: Option<PathBuf>,
}

impl Cli {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut command = None;
        let mut config_file = None;
        let mut migrate_first = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" => {
                    config_file = Some(PathBuf::from(
                        args.next().ok_or("--config needs a file path")?,
                    ));
                }
                "--migrate" if command == Some(Command::Serve { migrate: false }) => {
                    migrate_first = true;
                }
                "serve" | "migrate" | "healthcheck" | "reseal" if command.is_none() => {
                    command = Some(match arg.as_str() {
                        "serve" => Command::Serve { migrate: false },
                        "migrate" => Command::Migrate,
                        "reseal" => Command::Reseal,
                        _ => Command::Healthcheck,
                    });
                }
                other => {
                    return Err(format!(
                        "unexpected argument {other:?}; usage: [--config FILE] [serve [--migrate]|migrate|healthcheck|reseal]"
                    ));
                }
            }
        }
        let command = match command.unwrap_or(Command::Serve { migrate: false }) {
            Command::Serve { .. } => Command::Serve {
                migrate: migrate_first,
            },
            other => other,
        };
        Ok(Self {
            command,
            config_file,
        })
    }
}

/// An error that ends the process (printed as one line after the service name).
pub type MainError = Box<dyn std::error::Error + Send + Sync>;

/// The whole `main` of a service, around `body`: parses the command line, loads the
/// settings, installs telemetry, runs `body` with the command and settings, flushes the
/// exported spans, and turns an error into one line on stderr and exit code 1.
pub async fn run_main<F, Fut>(service_name: &'static str, body: F) -> std::process::ExitCode
where
    F: FnOnce(Command, crate::Settings) -> Fut,
    Fut: std::future::Future<Output = Result<(), MainError>>,
{
    let outcome = async {
        let cli = Cli::parse(std::env::args().skip(1))?;
        let settings = crate::Settings::load(cli.config_file.as_deref())?;
        let telemetry = plangrep_telemetry::init(plangrep_telemetry::TelemetryConfig {
            service_name,
            log_format: settings.raw("LOG_FORMAT"),
        })?;
        let outcome = body(cli.command, settings).await;
        // Services flush their span export when they stop; this flushes any export left
        // running. The exporter's shutdown blocks, so not on a runtime worker.
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        outcome
    }
    .await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{service_name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        Cli::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn subcommands_and_config_parse() {
        assert_eq!(
            parse(&[]).unwrap().command,
            Command::Serve { migrate: false }
        );
        assert_eq!(
            parse(&["serve", "--migrate"]).unwrap().command,
            Command::Serve { migrate: true }
        );
        assert!(parse(&["--migrate"]).is_err(), "--migrate belongs to serve");
        assert!(parse(&["migrate", "--migrate"]).is_err());
        let cli = parse(&["--config", "a.toml", "migrate"]).unwrap();
        assert_eq!(cli.command, Command::Migrate);
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        assert_eq!(parse(&["reseal"]).unwrap().command, Command::Reseal);
        assert!(parse(&["serve", "migrate"]).is_err());
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["launch"]).is_err());
    }
}
