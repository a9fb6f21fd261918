//! The `job-orchestrator` binary: `serve [--migrate]` (default), `migrate`, `healthcheck`,
//! `reseal` (moves every sealed secret to the keyring's primary key), and the
//! hidden `pdf-worker` that the service runs as a child process to parse one PDF under
//! resource limits (see `plangrep_job_orchestrator::pdf`).

use std::process::ExitCode;

use plangrep_job_orchestrator::pdf::worker;
use plangrep_job_orchestrator::{App, Config, startup};
use plangrep_service::cli::{Command, run_main};

fn main() -> ExitCode {
    // The PDF worker runs synchronously, before any runtime, telemetry or settings: it
    // only reads one file and writes JSON lines, and must stay small under its limits.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == "pdf-worker") {
        return worker::run(args);
    }
    serve_main()
}

#[tokio::main]
async fn serve_main() -> ExitCode {
    run_main("job-orchestrator", |command, settings| async move {
        let config = Config::from_settings(&settings)?;
        match command {
            Command::Migrate => startup::migrate(&config).await?,
            Command::Reseal => startup::reseal(&config).await?,
            Command::Healthcheck => plangrep_service::healthcheck::probe(config.http_addr).await?,
            Command::Serve { migrate } => {
                if migrate {
                    startup::migrate(&config).await?;
                }
                let grpc = tokio::net::TcpListener::bind(config.grpc_addr).await?;
                let http = tokio::net::TcpListener::bind(config.http_addr).await?;
                let app = App::build(config, grpc, http).await?;
                app.run_until_stopped(plangrep_service::shutdown::on_signal())
                    .await?;
            }
        }
        Ok(())
    })
    .await
}
