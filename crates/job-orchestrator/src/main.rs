//! The `job-orchestrator` binary: `serve` (default), `migrate`, `healthcheck`.

use std::process::ExitCode;

use plangrep_job_orchestrator::{App, Config, startup};
use plangrep_service::Settings;
use plangrep_service::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("job-orchestrator: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse(std::env::args().skip(1)).map_err(anyhow::Error::msg)?;
    let settings = Settings::load(cli.config_file.as_deref())?;
    let telemetry = plangrep_telemetry::init(plangrep_telemetry::TelemetryConfig {
        service_name: "job-orchestrator",
        log_format: settings.raw("LOG_FORMAT"),
        otlp_endpoint: settings.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
        otel_service_name: settings.raw("OTEL_SERVICE_NAME"),
    })?;
    let outcome = async {
        let config = Config::from_settings(&settings)?;
        match cli.command {
            Command::Migrate => startup::migrate(&config).await?,
            Command::Healthcheck => plangrep_service::healthcheck::probe(config.http_addr)
                .await
                .map_err(anyhow::Error::msg)?,
            Command::Serve => {
                let grpc = tokio::net::TcpListener::bind(config.grpc_addr).await?;
                let http = tokio::net::TcpListener::bind(config.http_addr).await?;
                let app = App::build(config, grpc, http).await?;
                app.run_until_stopped(plangrep_service::shutdown::on_signal())
                    .await?;
            }
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    // Export the last spans; the exporter's shutdown blocks, so not on a runtime worker.
    tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
    outcome
}
