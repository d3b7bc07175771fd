//! Request handlers: parse and validate, call the provisioner, shape the answer.

use std::future::Future;

use axum::{
    body::Bytes,
    extract::{rejection::PathRejection, Path, State},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{error::ApiError, AppState};
use crate::{
    provisioner,
    sandbox::{Sandbox, SandboxId, ThreadId},
};

/// Body of `POST /api/sandboxes`; unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    pub sandbox_id: String,
    pub thread_id: String,
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn create(State(state): State<AppState>, body: Bytes) -> Result<Json<Sandbox>, ApiError> {
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::InvalidRequest(format!(
            "the body must be a JSON object with string fields \"sandbox_id\" and \"thread_id\": {e}"
        ))
    };
    let value: Value = serde_json::from_slice(&body).map_err(|e| invalid(&e))?;
    if !value.is_object() {
        return Err(invalid(&"got something other than an object"));
    }
    let request: CreateRequest = serde_json::from_value(value).map_err(|e| invalid(&e))?;
    let id = SandboxId::parse(&request.sandbox_id)?;
    let thread = ThreadId::parse(&request.thread_id)?;
    let provisioner = state.provisioner.clone();
    let provisioned =
        run_to_completion(async move { provisioner.create(&id, &thread).await }).await?;
    Ok(Json(provisioned.sandbox))
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let id = sandbox_id(path)?;
    Ok(Json(state.provisioner.get(&id).await?))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let sandboxes = state.provisioner.list().await?;
    Ok(Json(
        json!({"count": sandboxes.len(), "sandboxes": sandboxes}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = sandbox_id(path)?;
    let provisioner = state.provisioner.clone();
    let shown = id.to_string();
    run_to_completion(async move { provisioner.delete(&id).await }).await?;
    Ok(Json(json!({"ok": true, "sandbox_id": shown})))
}

pub async fn no_such_route() -> ApiError {
    ApiError::NoSuchRoute
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn sandbox_id(path: Result<Path<String>, PathRejection>) -> Result<SandboxId, ApiError> {
    let Path(raw) =
        path.map_err(|e| ApiError::InvalidRequest(format!("invalid sandbox id in the path: {e}")))?;
    Ok(SandboxId::parse(&raw)?)
}

/// Runs a write in its own task, so that a caller who hangs up half-way does not leave a
/// half-made (or half-deleted) sandbox behind.
async fn run_to_completion<T: Send + 'static>(
    work: impl Future<Output = provisioner::Result<T>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(work).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
