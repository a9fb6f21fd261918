//! The `api-gateway` binary: `serve [--migrate]` (default), `migrate`, `healthcheck`.

use std::process::ExitCode;

use plangrep_api_gateway::{App, Config, startup};
use plangrep_service::cli::{Command, run_main};

#[tokio::main]
async fn main() -> ExitCode {
    run_main("api-gateway", |command, settings| async move {
        let config = Config::from_settings(&settings)?;
        match command {
            Command::Migrate => startup::migrate(&config).await?,
            Command::Reseal => Err("reseal is a job-orchestrator command")?,
            Command::Healthcheck => plangrep_service::healthcheck::probe(config.ops_addr).await?,
            Command::Serve { migrate } => {
                if migrate {
                    startup::migrate(&config).await?;
                }
                let listener = tokio::net::TcpListener::bind(config.addr).await?;
                let ops = tokio::net::TcpListener::bind(config.ops_addr).await?;
                let app = App::build(config, listener, ops).await?;
                app.run_until_stopped(plangrep_service::shutdown::on_signal())
                    .await?;
            }
        }
        Ok(())
    })
    .await
}
