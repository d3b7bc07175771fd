//! Stub sandbox servers: what kube-proxy + the sandbox image would answer at a node port.

use std::net::{Ipv4Addr, SocketAddr};

use axum::{extract::State, routing::get, routing::post, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

/// A running stub; dropping it stops the server.
pub struct Stub {
    _stop: oneshot::Sender<()>,
}

#[derive(Clone)]
struct Identity {
    namespace: String,
    service: String,
    port: u16,
}

/// Starts a stub for `namespace/service` on `ip:port`. Binding happens before this returns,
/// so once it has returned the port answers.
pub fn start(ip: Ipv4Addr, port: u16, namespace: &str, service: &str) -> std::io::Result<Stub> {
    let std_listener = std::net::TcpListener::bind(SocketAddr::from((ip, port)))?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let identity = Identity {
        namespace: namespace.to_string(),
        service: service.to_string(),
        port,
    };
    let app = Router::new()
        .route("/v1/sandbox", get(sandbox_info))
        .route("/v1/shell/exec", post(shell_exec))
        .with_state(identity);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(port, error = %e, "stub server failed");
        }
    });
    Ok(Stub { _stop: stop })
}

async fn sandbox_info(State(id): State<Identity>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "simulated": true,
        "namespace": id.namespace,
        "service": id.service,
        "node_port": id.port,
    }))
}

#[derive(Deserialize)]
struct ExecRequest {
    command: String,
}

async fn shell_exec(Json(req): Json<ExecRequest>) -> Json<Value> {
    Json(json!({
        "status": "success",
        "data": { "output": simulated_output(&req.command), "exit_code": 0 },
    }))
}

/// `echo` prints its arguments; any other command answers what would have run.
fn simulated_output(command: &str) -> String {
    match command.trim().strip_prefix("echo") {
        Some(rest) if rest.is_empty() || rest.starts_with(' ') => format!("{}\n", rest.trim()),
        _ => format!("simulated: {}\n", command.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_is_echoed() {
        assert_eq!(simulated_output("echo hello world"), "hello world\n");
        assert_eq!(simulated_output("echo"), "\n");
        assert_eq!(simulated_output("ls -l"), "simulated: ls -l\n");
        assert_eq!(simulated_output("echoes"), "simulated: echoes\n");
    }
}
