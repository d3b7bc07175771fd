//! The test sandbox image's server: the part of the all-in-one sandbox API that DeerFlow's
//! `AioSandbox` and the `agent-sandbox` SDK (0.0.30) call, with answers in the SDK's shapes
//! (`{"success", "message", "data"}` envelopes), running real commands with `/bin/sh -c`.
//!
//! Served: `GET /v1/ping` (open), `GET /v1/sandbox`, `POST /v1/shell/exec`,
//! `POST /v1/shell/sessions/create`, `DELETE /v1/shell/sessions/{id}`, `POST /v1/bash/exec`,
//! `POST /v1/file/{read,write,list,find,grep}`, `GET /v1/file/download`, and test hooks under
//! `/test/` (`identity`, `slow`, `stream`). A shell session keeps its working directory from one
//! command to the next; exported variables do not carry over (each command is its own `sh`).

pub mod files;
mod shell;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// The server's settings, read once from the environment at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `SANDBOX_API_KEY`: when set, every route but `/v1/ping` needs it.
    pub api_key: Option<String>,
    /// `MAX_SHELL_SESSIONS` (default 10): past it, the least recently used session goes.
    pub max_shell_sessions: usize,
    /// `SANDBOX_HOME` (default `/home/gem`): the home directory commands start in.
    pub home_dir: PathBuf,
    /// `SANDBOX_RUN_AS` (default `1000:1000` when started as root, else unset): the uid and
    /// gid commands run as, like the real image's user.
    pub run_as: Option<(u32, u32)>,
    /// `POD_NAME`, `POD_UID`, `SANDBOX_ID`: reported by `/test/identity`.
    pub identity: Identity,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Identity {
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub sandbox_id: Option<String>,
}

impl Settings {
    /// Reads the settings, saying which variable is wrong and how to fix it.
    pub fn from_env(started_as_root: bool) -> anyhow::Result<Settings> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let max_shell_sessions = match var("MAX_SHELL_SESSIONS") {
            None => 10,
            Some(v) => v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                anyhow::anyhow!("MAX_SHELL_SESSIONS={v:?} is not a positive whole number")
            })?,
        };
        let run_as = match var("SANDBOX_RUN_AS") {
            None if started_as_root => Some((1000, 1000)),
            None => None,
            Some(v) => Some(parse_run_as(&v).ok_or_else(|| {
                anyhow::anyhow!("SANDBOX_RUN_AS={v:?} must be UID:GID, such as 1000:1000")
            })?),
        };
        Ok(Settings {
            api_key: var("SANDBOX_API_KEY"),
            max_shell_sessions,
            home_dir: var("SANDBOX_HOME")
                .unwrap_or_else(|| "/home/gem".into())
                .into(),
            run_as,
            identity: Identity {
                pod_name: var("POD_NAME"),
                pod_uid: var("POD_UID"),
                sandbox_id: var("SANDBOX_ID"),
            },
        })
    }
}

fn parse_run_as(value: &str) -> Option<(u32, u32)> {
    let (uid, gid) = value.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

pub(crate) struct AppState {
    pub settings: Settings,
    pub sessions: Mutex<shell::Sessions>,
}

pub(crate) type Shared = Arc<AppState>;

/// An error answer: the SDK raises `ApiError` on any non-2xx status, with this body.
#[derive(Debug)]
pub(crate) struct Failure(pub StatusCode, pub String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({"success": false, "message": self.1, "data": null});
        (self.0, Json(body)).into_response()
    }
}

pub(crate) fn bad_request(message: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, message.into())
}

/// The SDK's success envelope.
pub(crate) fn ok(message: &str, data: Value) -> Json<Value> {
    Json(json!({"success": true, "message": message, "data": data}))
}

/// The API of one sandbox.
pub fn router(settings: Settings) -> Router {
    let state = Arc::new(AppState {
        sessions: Mutex::new(shell::Sessions::new(
            settings.max_shell_sessions,
            settings.home_dir.clone(),
        )),
        settings,
    });
    let guarded = Router::new()
        .route("/v1/sandbox", get(context))
        .route("/v1/shell/exec", post(shell::exec))
        .route("/v1/shell/sessions/create", post(shell::create_session))
        .route("/v1/shell/sessions/{id}", delete(shell::cleanup_session))
        .route("/v1/bash/exec", post(shell::bash_exec))
        .route("/v1/file/read", post(files::read))
        .route("/v1/file/write", post(files::write))
        .route("/v1/file/list", post(files::list))
        .route("/v1/file/find", post(files::find))
        .route("/v1/file/grep", post(files::grep))
        .route("/v1/file/download", get(files::download))
        .route("/test/identity", get(identity))
        .route("/test/slow", get(slow))
        .route("/test/stream", get(files::stream))
        .route("/test/upload", post(files::upload))
        .route("/test/ws", get(echo))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/v1/ping", get(|| async { ok("pong", Value::Null) }))
        .merge(guarded)
        .with_state(state)
}

/// The real image's key rule: `X-AIO-API-Key`, `Authorization: Bearer` or `?api_key=`.
async fn require_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(wanted) = state.settings.api_key.as_deref() else {
        return next.run(request).await;
    };
    if presented_keys(request.headers(), request.uri().query()).any(|k| k == wanted) {
        return next.run(request).await;
    }
    Failure(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API key: send X-AIO-API-Key or Authorization: Bearer".into(),
    )
    .into_response()
}

fn presented_keys<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> impl Iterator<Item = &'a str> {
    let header = headers.get("x-aio-api-key").and_then(|v| v.to_str().ok());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let param = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("api_key="));
    header.into_iter().chain(bearer).chain(param)
}

async fn context(State(state): State<Shared>) -> Json<Value> {
    let home = state.settings.home_dir.display().to_string();
    let user = match state.settings.run_as {
        Some((1000, _)) | None => "gem".to_string(),
        Some((uid, _)) => uid.to_string(),
    };
    Json(json!({
        "success": true,
        "message": "sandbox context",
        "data": null,
        "home_dir": home,
        "workspace": home,
        "version": env!("CARGO_PKG_VERSION"),
        "detail": {
            "system": {
                "os": std::env::consts::OS,
                "os_version": "",
                "arch": std::env::consts::ARCH,
                "user": user,
                "home_dir": home,
                "workspace": home,
                "timezone": "UTC",
                "occupied_ports": ["8080"],
            },
            "runtime": {"python": [], "nodejs": []},
            "utils": [],
        },
    }))
}

async fn identity(State(state): State<Shared>) -> Json<Value> {
    ok("identity", json!(state.settings.identity))
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: u64,
}

/// Answers after `ms` milliseconds: for tests of timeouts and of requests in flight.
async fn slow(Query(q): Query<SlowQuery>) -> Json<Value> {
    tokio::time::sleep(std::time::Duration::from_millis(q.ms)).await;
    ok("slept", json!({"ms": q.ms}))
}

/// A WebSocket that sends every text and binary message back (a closing frame ends it).
async fn echo(upgrade: axum::extract::ws::WebSocketUpgrade) -> Response {
    use axum::extract::ws::Message;
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

pub(crate) type Env = HashMap<String, Option<String>>;

#[cfg(test)]
mod tests;
