//! The `webhook-dispatcher` binary: `serve [--migrate]` (default), `migrate`, `healthcheck`.

use std::process::ExitCode;

use plangrep_service::cli::{Command, run_main};
use plangrep_webhook_dispatcher::{App, Config, startup};

#[tokio::main]
async fn main() -> ExitCode {
    run_main("webhook-dispatcher", |command, settings| async move {
        let config = Config::from_settings(&settings)?;
        match command {
            Command::Migrate => startup::migrate(&config).await?,
            Command::Reseal => Err("reseal is a job-orchestrator command")?,
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
