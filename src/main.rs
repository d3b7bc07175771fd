use std::process::ExitCode;

use clap::Parser;
use sandbox_provisioner::{api, cli::Cli, config::Config, server, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let Some(args) = Cli::parse().serve_args() else {
        print!("{}", api::openapi_document());
        return ExitCode::SUCCESS;
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
