use clap::Parser;
use sandbox_provisioner::{cli::Cli, config::Config, server, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    let config = match Config::try_from(Cli::parse().serve_args()) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sandbox-provisioner: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match server::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sandbox-provisioner: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
