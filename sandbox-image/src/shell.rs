//! Commands: `/v1/shell/*` (sessions that keep their working directory, output with stderr
//! folded in, as the real image's console does) and `/v1/bash/exec` (a fresh session per call,
//! per-command environment, stdout and stderr apart).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{bad_request, ok, Env, Failure, Shared};

/// Printed after a shell command so that the session learns its new working directory.
const CWD_MARK: &str = "\u{1e}sandbox-cwd:";
/// The implicit session of calls that name none.
const DEFAULT_SESSION: &str = "default";

pub(crate) struct Session {
    cwd: PathBuf,
    used: Instant,
}

/// The shell sessions, at most `max` of them: past it the least recently used one goes, as
/// the real image evicts its oldest idle session.
pub(crate) struct Sessions {
    max: usize,
    home: PathBuf,
    by_id: HashMap<String, Session>,
}

impl Sessions {
    pub fn new(max: usize, home: PathBuf) -> Sessions {
        Sessions {
            max,
            home,
            by_id: HashMap::new(),
        }
    }

    /// The session's working directory, creating the session (and evicting) when new.
    fn enter(&mut self, id: &str, exec_dir: Option<&str>) -> PathBuf {
        if !self.by_id.contains_key(id) && self.by_id.len() >= self.max {
            let oldest = self.by_id.iter().min_by_key(|(_, s)| s.used);
            if let Some(oldest) = oldest.map(|(id, _)| id.clone()) {
                self.by_id.remove(&oldest);
            }
        }
        let home = self.home.clone();
        let session = self.by_id.entry(id.to_string()).or_insert(Session {
            cwd: home,
            used: Instant::now(),
        });
        session.used = Instant::now();
        if let Some(dir) = exec_dir {
            session.cwd = dir.into();
        }
        session.cwd.clone()
    }

    fn moved(&mut self, id: &str, cwd: PathBuf) {
        if let Some(session) = self.by_id.get_mut(id) {
            session.cwd = cwd;
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// What one run of `/bin/sh -c` gave.
struct Ran {
    stdout: String,
    stderr: String,
    exit_code: Option<i32>,
    timed_out: bool,
}

async fn run(
    state: &Shared,
    script: &str,
    cwd: &std::path::Path,
    env: &Env,
    limit: Option<f64>,
) -> Result<Ran, Failure> {
    let mut command = tokio::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so that a timeout stops what the command started too.
        .process_group(0)
        .env("HOME", &state.settings.home_dir);
    if cwd.is_dir() {
        command.current_dir(cwd);
    } else {
        command.current_dir(&state.settings.home_dir);
    }
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    if let Some((uid, gid)) = state.settings.run_as {
        command.uid(uid).gid(gid);
    }
    let child = command.spawn().map_err(|e| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot start /bin/sh: {e}"),
        )
    })?;
    let group = child.id();
    let output = child.wait_with_output();
    let limit = limit
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64);
    let output = match limit {
        Some(limit) => match tokio::time::timeout(limit, output).await {
            Ok(output) => output,
            Err(_) => {
                if let Some(group) = group {
                    stop_group(group);
                }
                return Ok(Ran {
                    stdout: String::new(),
                    stderr: String::new(),
                    exit_code: None,
                    timed_out: true,
                });
            }
        },
        None => output.await,
    }
    .map_err(|e| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("command failed: {e}"),
        )
    })?;
    Ok(Ran {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        exit_code: output.status.code(),
        timed_out: false,
    })
}

/// SIGKILL to every process of the group (`kill -KILL -PGID`): the shell's children do not
/// go with the shell when it is killed alone.
fn stop_group(group: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status();
}

#[derive(Deserialize)]
pub(crate) struct ShellExec {
    command: String,
    id: Option<String>,
    exec_dir: Option<String>,
    hard_timeout: Option<f64>,
    timeout: Option<f64>,
}

pub(crate) async fn exec(
    State(state): State<Shared>,
    Json(body): Json<ShellExec>,
) -> Result<Json<Value>, Failure> {
    if body.command.trim().is_empty() {
        return Err(bad_request(
            "command is empty: send the shell command to run",
        ));
    }
    let id = body.id.unwrap_or_else(|| DEFAULT_SESSION.to_string());
    let cwd = state
        .sessions
        .lock()
        .expect("sessions")
        .enter(&id, body.exec_dir.as_deref());
    // stderr folded into the output, and the directory the command ended in printed last.
    let script = format!(
        "exec 2>&1\n{}\n__rc=$?\nprintf '\\n{CWD_MARK}%s' \"$(pwd)\"\nexit $__rc",
        body.command
    );
    let limit = body.hard_timeout.or(body.timeout);
    let ran = run(&state, &script, &cwd, &Env::new(), limit).await?;
    let mut output = ran.stdout;
    if let Some(at) = output.rfind(CWD_MARK) {
        let dir = output[at + CWD_MARK.len()..].trim_end().to_string();
        output.truncate(at);
        if output.ends_with('\n') {
            output.pop();
        }
        state
            .sessions
            .lock()
            .expect("sessions")
            .moved(&id, dir.into());
    }
    let status = if ran.timed_out {
        "hard_timeout"
    } else {
        "completed"
    };
    Ok(ok(
        "command executed",
        json!({
            "session_id": id,
            "command": body.command,
            "status": status,
            "output": output,
            "exit_code": ran.exit_code,
            "console": [],
        }),
    ))
}

#[derive(Deserialize, Default)]
pub(crate) struct CreateSession {
    id: Option<String>,
    exec_dir: Option<String>,
}

pub(crate) async fn create_session(
    State(state): State<Shared>,
    body: Option<Json<CreateSession>>,
) -> Json<Value> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let id = body.id.unwrap_or_else(|| new_id("session"));
    let cwd = state
        .sessions
        .lock()
        .expect("sessions")
        .enter(&id, body.exec_dir.as_deref());
    ok(
        "session created",
        json!({"session_id": id, "working_dir": cwd.display().to_string()}),
    )
}

pub(crate) async fn cleanup_session(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Failure> {
    match state.sessions.lock().expect("sessions").by_id.remove(&id) {
        Some(_) => Ok(ok("session cleaned up", Value::Null)),
        None => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no shell session {id:?}: it ended or was never created"),
        )),
    }
}

#[derive(Deserialize)]
pub(crate) struct BashExec {
    command: String,
    session_id: Option<String>,
    exec_dir: Option<String>,
    #[serde(default)]
    env: Env,
    hard_timeout: Option<f64>,
    timeout: Option<f64>,
}

pub(crate) async fn bash_exec(
    State(state): State<Shared>,
    Json(body): Json<BashExec>,
) -> Result<Json<Value>, Failure> {
    if body.command.trim().is_empty() {
        return Err(bad_request(
            "command is empty: send the shell command to run",
        ));
    }
    if let Some(bad) = body.env.keys().find(|k| !is_env_name(k)) {
        return Err(bad_request(format!(
            "env name {bad:?} is not a valid variable name (letters, digits, _; not first a digit)"
        )));
    }
    let session = body.session_id.unwrap_or_else(|| new_id("bash"));
    let cwd = body
        .exec_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| state.settings.home_dir.clone());
    let limit = body.hard_timeout.or(body.timeout);
    let ran = run(&state, &body.command, &cwd, &body.env, limit).await?;
    let status = if ran.timed_out {
        "timed_out"
    } else {
        "completed"
    };
    Ok(ok(
        "command executed",
        json!({
            "session_id": session,
            "command_id": new_id("command"),
            "command": body.command,
            "status": status,
            "stdout": ran.stdout,
            "stderr": ran.stderr,
            "exit_code": ran.exit_code,
            "offset": ran.stdout.len(),
            "stderr_offset": ran.stderr.len(),
        }),
    ))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}
