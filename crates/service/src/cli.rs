//! The command line every service shares: `<service> [--config FILE] [serve|migrate|healthcheck]`.

use std::path::PathBuf;

/// What the process was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Probe the running service's `/healthz` and exit 0 or 1.
    Healthcheck,
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
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" => {
                    config_file = Some(PathBuf::from(
                        args.next().ok_or("--config needs a file path")?,
                    ));
                }
                "serve" | "migrate" | "healthcheck" if command.is_none() => {
                    command = Some(match arg.as_str() {
                        "serve" => Command::Serve,
                        "migrate" => Command::Migrate,
                        _ => Command::Healthcheck,
                    });
                }
                other => {
                    return Err(format!(
                        "unexpected argument {other:?}; usage: [--config FILE] [serve|migrate|healthcheck]"
                    ));
                }
            }
        }
        Ok(Self {
            command: command.unwrap_or(Command::Serve),
            config_file,
        })
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
        assert_eq!(parse(&[]).unwrap().command, Command::Serve);
        let cli = parse(&["--config", "a.toml", "migrate"]).unwrap();
        assert_eq!(cli.command, Command::Migrate);
        assert_eq!(cli.config_file, Some(PathBuf::from("a.toml")));
        assert!(parse(&["serve", "migrate"]).is_err());
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["launch"]).is_err());
    }
}
