use std::process::ExitCode;

use clap::Parser;
use sandbox_provisioner::{
    admission, agent, api,
    cli::{Cli, Command},
    config::Config,
    doctor, healthcheck, server, telemetry,
};

/// jemalloc: the watch cache is many small allocations made while large listings come and go,
/// and the system allocators leave that heap fragmented (glibc's held about 40% more pages
/// than jemalloc with 10,000 sandboxes; BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Freed pages go back to the system within about a second, so memory falls again after a
/// large LIST; the background thread does that without waiting for the next allocation
/// (not in static musl builds, where jemalloc's thread start-up cannot be hooked).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &std::ffi::CStr = if cfg!(target_env = "musl") {
    c"dirty_decay_ms:1000,muzzy_decay_ms:0"
} else {
    c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
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
        Some(Command::HashKey { key }) => {
            return match hash_key(key) {
                Ok(digest) => {
                    println!("{digest}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sandbox-provisioner hash-key: {e}");
                    ExitCode::from(2)
                }
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
        Some(Command::NodeAgent(args)) => {
            telemetry::init();
            return match agent::run(*args, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e, 1),
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

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The digest of the key given, or of the first line of standard input.
fn hash_key(key: Option<String>) -> Result<String, String> {
    let key = match key {
        Some(key) => key,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "the key must be at least 16 characters without spaces or control characters, \
            for example from `openssl rand -hex 32`"
                .into(),
        );
    }
    Ok(admission::hex_digest(&key))
}

fn fail(e: impl std::fmt::Display, code: u8) -> ExitCode {
    tracing::error!("{e}");
    eprintln!("sandbox-provisioner: {e}");
    ExitCode::from(code)
}
