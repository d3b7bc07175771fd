//! `sandbox-server`: the test sandbox image's entry point. Listens on `SANDBOX_PORT` (8080);
//! `SANDBOX_START_DELAY_MS` holds the first listening back, for tests of slow starts. Started as
//! root, it hands the directories in `SANDBOX_USER_DIRS` (default `/mnt/user-data`) that root owns
//! to the user commands run as.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // /proc/self belongs to the process's effective user.
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let settings = sandbox_image::Settings::from_env(as_root)?;
    let port: u16 = match std::env::var("SANDBOX_PORT") {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("SANDBOX_PORT={v:?} is not a port number"))?,
        Err(_) => 8080,
    };
    if let Ok(delay) = std::env::var("SANDBOX_START_DELAY_MS") {
        let ms: u64 = delay
            .parse()
            .map_err(|_| anyhow::anyhow!("SANDBOX_START_DELAY_MS={delay:?} is not milliseconds"))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    std::fs::create_dir_all(&settings.home_dir).ok();
    if let Some((uid, gid)) = settings.run_as {
        std::os::unix::fs::chown(&settings.home_dir, Some(uid), Some(gid)).ok();
        // A hostPath the kubelet had to create belongs to root; the user must write there.
        let user_dirs =
            std::env::var("SANDBOX_USER_DIRS").unwrap_or_else(|_| "/mnt/user-data".into());
        for dir in user_dirs.split(',').filter(|d| !d.is_empty()) {
            let owned_by_root = std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == 0);
            if owned_by_root {
                if let Err(e) = std::os::unix::fs::chown(dir, Some(uid), Some(gid)) {
                    tracing::warn!(dir, error = %e, "cannot hand the directory to the sandbox user");
                }
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(port, "sandbox server listening");
    axum::serve(listener, sandbox_image::router(settings))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        })
        .await?;
    Ok(())
}
