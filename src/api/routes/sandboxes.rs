//! The sandbox routes: create, read, list, delete, keepalive and presence. Each parses and
//! checks its input, asks the fleet, and shapes the answer; the `utoipa::path` attributes are
//! their OpenAPI description.

use std::future::Future;

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection, QueryRejection},
        Extension, Path, Query, State,
    },
    http::{header, HeaderMap},
    Json,
};

use crate::{
    admission::Caller,
    api::{
        error::{ApiError, ErrorBody},
        model::{
            CreateRequest, Deleted, GetQuery, InvalidId, KubernetesFailed, ListQuery, NotFound,
            Presence, SandboxList, SandboxPath, Unauthorized,
        },
        AppState,
    },
    cluster::ResumeTrigger,
    fleet::{Scope, Target},
    sandbox::{
        mounts::{check_extra_mounts, check_skills_path},
        LarkRequest, Sandbox, SandboxId, SandboxRequest, ThreadId, UserId,
    },
};

/// The most shell sessions a request may ask for.
const MAX_SHELL_SESSIONS: u32 = 1000;

/// The longest lifetime or idle timeout a request may ask for: a year.
const MAX_TIMER_SECONDS: u32 = 31_536_000;

/// The longest wait a request may ask for.
const MAX_WAIT_SECONDS: u32 = 300;

fn wait_duration(
    field: &str,
    seconds: Option<u32>,
) -> Result<Option<std::time::Duration>, ApiError> {
    match seconds {
        None => Ok(None),
        Some(s) if s <= MAX_WAIT_SECONDS => Ok(Some(std::time::Duration::from_secs(s.into()))),
        Some(s) => Err(ApiError::InvalidRequest(format!(
            "{field} must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}, got {s}"
        ))),
    }
}

/// Create a sandbox, or return the existing one of the same thread.
#[utoipa::path(post, path = "/api/sandboxes", tag = "sandboxes", request_body = CreateRequest,
    responses(
        (status = 200, description = "Created, or already there for the same \
            thread", body = Sandbox),
        (status = 400, description = "An extra mount breaks a mount rule; nothing was \
            created", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key, or no key \
            configured", body = ErrorBody),
        (status = 403, description = "The admin key creates no sandboxes", body = ErrorBody),
        (status = 409, description = "The sandbox exists for another thread, user or tenant, with \
            less shell capacity, in a cluster the request does not select, or is being \
            deleted", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Invalid body, sandbox_id, thread_id, user_id or \
            max_shell_sessions, an unknown cluster or unmatched cluster_labels, or a size or \
            cluster the tenant may not use", body = ErrorBody),
        (status = 429, description = "A quota of the tenant (or SANDBOX_MAX_TOTAL) is used up; \
            nothing was created; Retry-After says when to retry", body = ErrorBody),
        KubernetesFailed,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let Caller::Tenant(tenant) = caller.clone() else {
        return Err(ApiError::Forbidden(
            "the admin key sees every tenant's sandboxes but creates none: create with a tenant's \
                key"
            .into(),
        ));
    };
    require_json(&headers)?;
    let body = body.map_err(|e| match e.status().as_u16() {
        413 => ApiError::PayloadTooLarge(state.max_body_bytes),
        _ => ApiError::InvalidRequest(format!("cannot read the request body: {e}")),
    })?;
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::InvalidRequest(format!(
            "the body must be a JSON object with a string field \"sandbox_id\" (see the \
                CreateRequest schema in /openapi.json): {e}"
        ))
    };
    // An object, not an array that serde would also accept for a struct; duplicate fields are
    // refused by the derived deserializer rather than silently resolved.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(invalid(&"got something other than an object"));
    }
    let request: CreateRequest = serde_json::from_slice(&body).map_err(|e| invalid(&e))?;
    let id = SandboxId::parse(&request.sandbox_id)?;
    let thread = match request.thread_id.as_deref() {
        Some(thread) => ThreadId::parse(thread)?,
        None => ThreadId::of_sandbox(&id),
    };
    let user = match request.user_id.as_deref() {
        Some(user) => UserId::parse(user)?,
        None => UserId::default(),
    };
    if let Some(n) = request.max_shell_sessions {
        if !(1..=MAX_SHELL_SESSIONS).contains(&n) {
            return Err(ApiError::InvalidRequest(format!(
                "max_shell_sessions must be a whole number from 1 to {MAX_SHELL_SESSIONS}, got {n}"
            )));
        }
    }
    let wait = wait_duration("wait_ready_seconds", request.wait_ready_seconds)?;
    for (field, value) in [
        ("ttl_seconds", request.ttl_seconds),
        ("idle_timeout_seconds", request.idle_timeout_seconds),
    ] {
        if value.is_some_and(|v| v > MAX_TIMER_SECONDS) {
            return Err(ApiError::InvalidRequest(format!(
                "{field} must be a whole number of seconds from 0 to {MAX_TIMER_SECONDS} (a year)"
            )));
        }
    }
    let resources = state
        .capabilities
        .sizes
        .choose(request.size.as_deref(), request.resources.as_ref())
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let target = match (request.cluster, request.cluster_labels) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give either cluster or cluster_labels, not both".into(),
            ))
        }
        (Some(name), None) => Target::Named(name),
        (None, Some(labels)) if !labels.is_empty() => Target::Labels(labels),
        (None, _) => Target::Any,
    };
    let skills_path = match request.skills_container_path.as_deref() {
        Some(path) => {
            let fixed: Vec<&str> = state.fixed_mounts.iter().map(String::as_str).collect();
            check_skills_path(path, &fixed)?
        }
        None => None,
    };
    let extra_mounts = check_extra_mounts(
        &request.extra_mounts,
        &state.host_base,
        skills_path.as_deref(),
    )?;
    let size = request
        .size
        .clone()
        .unwrap_or_else(|| state.capabilities.sizes.default_size.clone());
    let wanted = SandboxRequest {
        size: Some(size.clone()),
        user,
        timers: state
            .timers
            .for_request(request.ttl_seconds, request.idle_timeout_seconds),
        resources,
        extra_mounts,
        lark: LarkRequest {
            runtime: request.provision_lark_cli_runtime,
            broker: request.provision_lark_cli_broker,
        },
        max_shell_sessions: request.max_shell_sessions,
        skills_path,
        tenant: tenant.name.clone(),
        ..SandboxRequest::new(id.clone(), thread)
    };
    let fleet = state.fleet.clone();
    let waiting_id = id;
    let creator = tenant.clone();
    let provisioned =
        run_to_completion(async move { fleet.create(&wanted, &size, &target, &creator).await })
            .await?;
    match wait {
        Some(limit) if !provisioned.sandbox.ready => Ok(Json(
            state
                .fleet
                .wait_ready(&waiting_id, limit.min(state.max_wait), &scope(&caller))
                .await?,
        )),
        _ => Ok(Json(provisioned.sandbox)),
    }
}

/// One sandbox: status, readiness and URL.
#[utoipa::path(get, path = "/api/sandboxes/{sandbox_id}", tag = "sandboxes",
    params(SandboxPath, GetQuery),
    responses(
        (status = 200, description = "The sandbox", body = Sandbox),
        Unauthorized,
        NotFound,
        InvalidId,
        KubernetesFailed,
    ))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let id = sandbox_id(path)?;
    let Query(query) =
        query.map_err(|e| ApiError::InvalidRequest(format!("invalid query: {e}")))?;
    match wait_duration("wait_ready", query.wait_ready)? {
        Some(limit) => Ok(Json(
            state
                .fleet
                .wait_ready(&id, limit.min(state.max_wait), &scope(&caller))
                .await?,
        )),
        None => Ok(Json(state.fleet.get(&id, &scope(&caller)).await?)),
    }
}

/// Every sandbox of the caller's tenant (the admin key: of every tenant) in every cluster,
/// sorted by id.
#[utoipa::path(get, path = "/api/sandboxes", tag = "sandboxes",
    params(ListQuery),
    responses(
        (status = 200, description = "All sandboxes", body = SandboxList),
        Unauthorized,
        (status = 403, description = "A tenant's key asked for another tenant's \
            sandboxes", body = ErrorBody),
        (status = 422, description = "Invalid query", body = ErrorBody),
        KubernetesFailed,
    ))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<SandboxList>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::InvalidRequest(format!("invalid query: {e}")))?;
    let scope = match (scope(&caller), query.tenant) {
        (scope, None) => scope,
        (Scope::All, Some(tenant)) => Scope::Tenant(tenant),
        (Scope::Tenant(own), Some(tenant)) if own == tenant => Scope::Tenant(own),
        (Scope::Tenant(_), Some(_)) => {
            return Err(ApiError::Forbidden(
                "only the admin key may list another tenant's sandboxes".into(),
            ))
        }
    };
    let listing = state.fleet.list(&scope).await?;
    Ok(Json(SandboxList {
        count: listing.sandboxes.len(),
        sandboxes: listing.sandboxes,
        clusters: listing.clusters,
    }))
}

/// Delete a sandbox's Pod and Service; also succeeds when it was already gone.
#[utoipa::path(delete, path = "/api/sandboxes/{sandbox_id}", tag = "sandboxes",
    params(SandboxPath),
    responses(
        (status = 200, description = "Deleted (or already gone)", body = Deleted),
        Unauthorized,
        (status = 404, description = "The sandbox is another tenant's", body = ErrorBody),
        InvalidId,
        KubernetesFailed,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let id = sandbox_id(path)?;
    let fleet = state.fleet.clone();
    let shown = id.to_string();
    let scope = scope(&caller);
    run_to_completion(async move { fleet.delete(&id, &scope).await }).await?;
    Ok(Json(Deleted {
        ok: true,
        sandbox_id: shown,
    }))
}

/// Counts as activity (moving an idle deadline) and returns the sandbox with its new expiry.
#[utoipa::path(post, path = "/api/sandboxes/{sandbox_id}/keepalive", tag = "sandboxes",
    params(SandboxPath),
    responses(
        (status = 200, description = "The sandbox, with its new expires_at", body = Sandbox),
        Unauthorized,
        NotFound,
        InvalidId,
        KubernetesFailed,
    ))]
pub async fn keepalive(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let id = sandbox_id(path)?;
    Ok(Json(state.fleet.keepalive(&id, &scope(&caller)).await?))
}

/// Suspends the sandbox: its Pod (and Service) go, its identity, URL (in gateway mode) and
/// files stay. Its next request through the gateway, a create for it, or `resume` wakes it.
/// Suspending a suspended sandbox answers the same again.
#[utoipa::path(post, path = "/api/sandboxes/{sandbox_id}/suspend", tag = "sandboxes",
    params(SandboxPath),
    responses(
        (status = 200, description = "Suspended: status Suspended, ready false, container_id \
            null", body = Sandbox),
        Unauthorized,
        NotFound,
        InvalidId,
        (status = 409, description = "The sandbox is being deleted, or was created before this \
            provisioner recorded requests and cannot be made again", body = ErrorBody),
        KubernetesFailed,
    ))]
pub async fn suspend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let id = sandbox_id(path)?;
    let fleet = state.fleet.clone();
    let scope = scope(&caller);
    let suspended = run_to_completion(async move { fleet.suspend(&id, &scope).await }).await?;
    Ok(Json(suspended))
}

/// Gives a suspended sandbox a Pod again (from the warm pool when its size has a ready one),
/// with its own id, thread, user, timers and URL; within its tenant's quota. An awake sandbox
/// is returned as it is. Like a create, it answers before a cold Pod is ready unless
/// `wait_ready` asks to wait.
#[utoipa::path(post, path = "/api/sandboxes/{sandbox_id}/resume", tag = "sandboxes",
    params(SandboxPath, GetQuery),
    responses(
        (status = 200, description = "Awake (or waking: see ready)", body = Sandbox),
        Unauthorized,
        NotFound,
        InvalidId,
        (status = 409, description = "The sandbox's record cannot be made into a sandbox \
            again", body = ErrorBody),
        (status = 429, description = "A quota of the tenant (or SANDBOX_MAX_TOTAL) has no room \
            for its CPU and memory; it stays suspended; Retry-After says when to retry",
            body = ErrorBody),
        KubernetesFailed,
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let id = sandbox_id(path)?;
    let Query(query) =
        query.map_err(|e| ApiError::InvalidRequest(format!("invalid query: {e}")))?;
    let wait = wait_duration("wait_ready", query.wait_ready)?;
    let fleet = state.fleet.clone();
    let resuming = scope(&caller);
    let waiting = id.clone();
    let resumed =
        run_to_completion(async move { fleet.resume(&id, &resuming, ResumeTrigger::Api).await })
            .await?;
    match wait {
        Some(limit) if !resumed.sandbox.ready => Ok(Json(
            state
                .fleet
                .wait_ready(&waiting, limit.min(state.max_wait), &scope(&caller))
                .await?,
        )),
        _ => Ok(Json(resumed.sandbox)),
    }
}

/// Whether the sandbox's Pod exists, and its UID: the Pod only (not the Service), so that a
/// caller can prove a sandbox is gone. Only a confirmed absence is `exists: false`; not
/// activity.
#[utoipa::path(get, path = "/api/sandboxes/{sandbox_id}/presence", tag = "sandboxes",
    params(SandboxPath),
    responses(
        (status = 200, description = "Whether the Pod exists (another tenant's reads as \
            absent)", body = Presence),
        Unauthorized,
        InvalidId,
        KubernetesFailed,
    ))]
pub async fn presence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Presence>, ApiError> {
    let id = sandbox_id(path)?;
    let found = state.fleet.presence(&id, &scope(&caller)).await?;
    let suspended = found.as_ref().is_some_and(|pod| pod.suspended);
    Ok(Json(Presence {
        sandbox_id: id.to_string(),
        exists: found.is_some() && !suspended,
        container_id: found.and_then(|pod| pod.uid),
        suspended,
    }))
}

/// Whose sandboxes the caller sees.
fn scope(caller: &Caller) -> Scope {
    match caller {
        Caller::Admin => Scope::All,
        Caller::Tenant(t) => Scope::Tenant(t.name.clone()),
    }
}

/// Accepts a missing Content-Type (lenient, as FastAPI is) and any JSON type; refuses others.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(
            text.chars().take(100).collect(),
        ))
    }
}

fn sandbox_id(path: Result<Path<String>, PathRejection>) -> Result<SandboxId, ApiError> {
    let Path(raw) =
        path.map_err(|e| ApiError::InvalidRequest(format!("invalid sandbox id in the path: {e}")))?;
    Ok(SandboxId::parse(&raw)?)
}

/// Runs a write in its own task, so that a caller who hangs up half-way does not leave a
/// half-made (or half-deleted) sandbox behind.
async fn run_to_completion<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    work: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(work).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(require_json(&h).is_ok());
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/merge-patch+json",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(require_json(&h).is_ok(), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "json",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(
                matches!(require_json(&h), Err(ApiError::UnsupportedMediaType(_))),
                "{bad}"
            );
        }
    }
}
