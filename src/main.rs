use std::process::ExitCode;

use clap::Parser;
use sandbox_provisioner::{
    api,
    cli::{Cli, Command},
    config::Config,
    doctor, healthcheck, server, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Openapi) => {
            print!("{}", api::openapi_document());
            return ExitCode::SUCCESS;
        }
        Some(Command::Doctor(args)) => {
            let checks = doctor::run(*args).await;
            print!("{}", doctor::render(&checks));
            let failed = checks.iter().any(|c| c.verdict == doctor::Verdict::Fail);
            return if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Some(Command::Healthcheck { listen }) => {
            return match healthcheck::check(&listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Serve(args)) => *args,
        None => cli.serve,
    };
    telemetry::init();
    let config = match Config::try_from(args) {
        Ok(config) => config,
        Err(e) => return fail(e, 2),
    };
    match server::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("sandbox-provisioner: {e}");
    ExitCode::from(code)
}
