//! The `job-orchestrator` binary: `serve` (default), `migrate`, `healthcheck`.

use std::process::ExitCode;

use plangrep_job_orchestrator::{App, Config, startup};
use plangrep_service::cli::{Command, run_main};

#[tokio::main]
async fn main() -> ExitCode {
    run_main("job-orchestrator", |command, settings| async move {
        let config = Config::from_settings(&settings)?;
        match command {
            Command::Migrate => startup::migrate(&config).await?,
            Command::Healthcheck => plangrep_service::healthcheck::probe(config.http_addr).await?,
            Command::Serve => {
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
