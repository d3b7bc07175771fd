//! The real binary, started as an operator would start it.

use std::{path::PathBuf, time::Duration};

use crate::{eventually, free_port};
/// The service's binary, which cargo builds beside the test or benchmark that runs
/// (`target/<profile>/sandbox-provisioner`, one level above the test's own `deps/`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the running test's own path");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("sandbox-provisioner");
    assert!(
        binary.is_file(),
        "{} is missing: run the tests and benchmarks through cargo, which builds it",
        binary.display()
    );
    binary
}

/// The real binary, started with a clean environment plus `env`, serving on a free port.
pub struct RunningBinary {
    pub child: std::process::Child,
    pub base: String,
}

impl RunningBinary {
    /// Starts the binary and waits until `/health` answers; its output is kept for
    /// `wait_exit`.
    pub async fn start(env: &[(&str, String)]) -> RunningBinary {
        Self::launch(env, true).await.0
    }

    /// Starts the binary with its output discarded (nobody reads it under load); returns it
    /// and how long it took to serve `/health`.
    pub async fn start_quiet(env: &[(&str, String)]) -> (RunningBinary, Duration) {
        Self::launch(env, false).await
    }

    async fn launch(env: &[(&str, String)], keep_output: bool) -> (RunningBinary, Duration) {
        let port = free_port();
        let output = || {
            if keep_output {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            }
        };
        let started = std::time::Instant::now();
        let mut cmd = std::process::Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("PROVISIONER_LISTEN", format!("127.0.0.1:{port}"))
            // Without a key the API is closed; tests about the key set one (or unset this).
            .env("PROVISIONER_ALLOW_NO_API_KEY", "true")
            .stdin(std::process::Stdio::null())
            .stdout(output())
            .stderr(output());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the binary");
        let running = RunningBinary {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        loop {
            let answer = http.get(format!("{}/health", running.base)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return (running, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the service did not answer /health within 30s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The process's resident memory, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// Waits until `/readyz` reports the cache synced.
    pub async fn wait_synced(&self) {
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "the cache to sync", || async {
            let body: serde_json::Value = http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["cache"] == "synced").then_some(())
        })
        .await;
    }

    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, failing the test after `limit`; returns the status and
    /// what it logged.
    pub async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut log);
        }
        (status, log)
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
