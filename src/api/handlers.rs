//! Request handlers: parse and validate, call the provisioner, shape the answer. The
//! `utoipa::path` attributes are the OpenAPI description of each route.

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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    error::{ApiError, ErrorBody},
    AppState,
};
use crate::{
    admission::{Caller, Usage},
    fleet::{self, ClusterInfo, ClusterListing, Scope, Target},
    k8s::cache::CacheSummary,
    k8s::refusals::MissingPermission,
    sandbox::{
        mounts::{check_extra_mounts, check_skills_path, ExtraMountRequest},
        LarkRequest, Resources, Sandbox, SandboxId, SandboxRequest, Sizes, ThreadId, UserId,
    },
};

/// The most shell sessions a request may ask for.
const MAX_SHELL_SESSIONS: u32 = 1000;

/// Body of `POST /api/sandboxes`; unknown fields are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateRequest {
    /// Becomes part of the Pod and Service names.
    #[schema(
        min_length = 1,
        max_length = 51,
        pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        example = "abc-123"
    )]
    pub sandbox_id: String,
    /// Becomes part of the user-data path. Absent or null: the sandbox_id is the thread (an
    /// anonymous sandbox).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-]+$",
        example = "thread-456"
    )]
    pub thread_id: Option<String>,
    /// Whose sandbox this is: part of the per-user skills and claim paths, and recorded on the
    /// pod. Absent or null: `default`.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = "^[A-Za-z0-9_-]+$",
        example = "default"
    )]
    pub user_id: Option<String>,
    /// Host directories to mount, each at one of DeerFlow's allowed container paths (at most
    /// 10; a breach of a mount rule is 400 and nothing is created).
    #[serde(default)]
    #[schema(max_items = 10)]
    pub extra_mounts: Vec<ExtraMountRequest>,
    /// Accepted for DeerFlow's gateway and ignored, as DeerFlow's provisioner does.
    #[serde(default)]
    pub include_legacy_skills: bool,
    /// Stage the Lark CLI runtime with an init container (when LARK_CLI_INIT_IMAGE is set).
    #[serde(default)]
    pub provision_lark_cli_runtime: bool,
    /// Run the Lark CLI broker sidecar, which alone gets the Lark credential mounts (when
    /// LARK_CLI_BROKER_IMAGE is set; supersedes provision_lark_cli_runtime).
    #[serde(default)]
    pub provision_lark_cli_broker: bool,
    /// Where the sandbox's skills appear. `/mnt/skills` (the default) keeps the provisioner's
    /// own skills mounts; another absolute, normalised path mounts none of them and lets
    /// extra_mounts place the categories `{path}/public`, `{path}/custom`, `{path}/legacy` and
    /// `{path}/integrations` (per-thread projections below the base directory). A create for
    /// an existing sandbox with another path is 409.
    #[serde(default)]
    #[schema(max_length = 255, example = "/mnt/skills")]
    pub skills_container_path: Option<String>,
    /// Shell sessions the sandbox keeps (env MAX_SHELL_SESSIONS); the image's default when
    /// absent. A create for an existing sandbox with less capacity is 409.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_shell_sessions: Option<u32>,
    /// Answer only once the sandbox is ready (or cannot become ready), waiting at most this
    /// many seconds; then answer with its current status.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 300)]
    pub wait_ready_seconds: Option<u32>,
    /// Remove the sandbox this many seconds after creation (at most SANDBOX_MAX_LIFETIME when
    /// that is set); the configured lifetime when absent.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31536000)]
    pub ttl_seconds: Option<u32>,
    /// Remove the sandbox after this many seconds without activity (at most
    /// SANDBOX_IDLE_TIMEOUT when that is set); the configured timeout when absent.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 31536000)]
    pub idle_timeout_seconds: Option<u32>,
    /// A size the operator defined (see GET /api/capabilities); the default size when absent.
    #[serde(default)]
    pub size: Option<String>,
    /// Requests and limits laid over the size; each must stay within the operator's maxima.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// The cluster to create the sandbox in (see GET /api/capabilities); placement picks one
    /// when absent. An unknown name is 422.
    #[serde(default)]
    #[schema(example = "default")]
    pub cluster: Option<String>,
    /// Place the sandbox only in a cluster that has all these labels (e.g. `{"region": "eu"}`);
    /// no matching cluster is 422. Not together with `cluster`.
    #[serde(default)]
    pub cluster_labels: Option<std::collections::BTreeMap<String, String>>,
}

/// Answer of `GET /api/capabilities`: what this deployment lets callers choose.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Capabilities {
    #[serde(flatten)]
    pub sizes: Sizes,
    /// `NodePort` or `ClusterIP`.
    pub service_type: String,
    /// The port sandboxes serve on.
    pub container_port: u16,
    /// `none`, `isolated` or `template`.
    pub network_policy: String,
    /// Whether LARK_CLI_INIT_IMAGE is set (provision_lark_cli_runtime takes effect).
    pub lark_cli_init_image: bool,
    /// Whether LARK_CLI_BROKER_IMAGE is set (provision_lark_cli_broker takes effect).
    pub lark_cli_broker_image: bool,
    /// The clusters sandboxes are placed in, with their labels, weight and capacity use.
    #[serde(default)]
    pub clusters: Vec<ClusterInfo>,
}

/// Query of `GET /api/sandboxes/{sandbox_id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Answer only once the sandbox is ready (or cannot become ready), waiting at most this
    /// many seconds.
    #[param(minimum = 0, maximum = 300)]
    pub wait_ready: Option<u32>,
}

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

/// Answer of `GET /api/sandboxes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    // Shared with the views the service keeps: a LIST of thousands copies none of them.
    #[schema(value_type = Vec<Sandbox>)]
    pub sandboxes: Vec<std::sync::Arc<Sandbox>>,
    pub count: usize,
    /// How each cluster answered; a cluster that could not be read has `reachable: false`
    /// and its sandboxes are missing from `sandboxes`.
    #[serde(default)]
    pub clusters: Vec<ClusterListing>,
}

/// Answer of `DELETE /api/sandboxes/{sandbox_id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub ok: bool,
    pub sandbox_id: String,
}

/// Answer of `GET /api/sandboxes/{sandbox_id}/presence`: whether the sandbox's Pod exists.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Presence {
    pub sandbox_id: String,
    /// The Pod exists (also while it is being deleted). False only when every cluster that may
    /// hold it answered that it does not; a Service without a Pod is false.
    pub exists: bool,
    /// The Pod's UID, as `container_id` in the sandbox's answers; null when it does not exist.
    pub container_id: Option<String>,
}

/// Answer of `GET /health` and `GET /readyz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
    /// The sandbox namespace (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whether reads come from the watch cache (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSummary>,
    /// Permissions the apiserver refused that have not worked since, each with its fix
    /// (readiness only; absent when none is missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<MissingPermission>,
    /// Every cluster's state (readiness only). `namespace`, `cache` and
    /// `missing_permissions` above are the first cluster's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterHealth>,
}

/// One cluster in `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterHealth {
    #[serde(flatten)]
    pub info: ClusterInfo,
    /// Whether it takes new sandboxes now (reachable, namespace usable, not draining, not full).
    pub accepting: bool,
    pub cache: CacheSummary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_permissions: Vec<MissingPermission>,
    /// Why it is not usable, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Liveness: the process serves HTTP. Makes no Kubernetes call.
#[utoipa::path(get, path = "/health", tag = "probes",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        namespace: None,
        cache: None,
        missing_permissions: Vec::new(),
        clusters: Vec::new(),
    })
}

/// Readiness: at least one cluster takes new sandboxes (its apiserver answers, its namespace
/// is usable, it is neither draining nor full).
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready to serve sandbox requests", body = Health),
        (status = 503, description = "No cluster takes new sandboxes: Kubernetes unreachable, the namespace unusable, or every cluster draining or full", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Waits at most for a first probe round of a cluster that has just started.
    let limit = state.max_wait.min(std::time::Duration::from_secs(10));
    let checks = state.fleet.clusters().iter().map(|cluster| async move {
        let health = cluster.health(limit).await;
        let info = fleet::info(cluster);
        let full = matches!((info.sandboxes, info.max_sandboxes), (Some(n), Some(max)) if n >= max);
        ClusterHealth {
            accepting: health.error.is_none() && info.weight > 0 && !full,
            cache: health.cache,
            missing_permissions: health.missing_permissions,
            error: health.error,
            info,
        }
    });
    let clusters = futures::future::join_all(checks).await;
    if !clusters.iter().any(|c| c.accepting) {
        let why = clusters
            .iter()
            .map(|c| {
                let reason = c.error.clone().unwrap_or_else(|| {
                    if c.info.weight == 0 {
                        "draining (weight 0)".into()
                    } else {
                        "full (max_sandboxes reached)".into()
                    }
                });
                if state.fleet.clusters().len() == 1 {
                    reason
                } else {
                    format!("cluster {:?}: {reason}", c.info.name)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::NotReady(why));
    }
    let first = &clusters[0];
    Ok(Json(Health {
        status: "ready".into(),
        namespace: Some(first.info.namespace.clone()),
        cache: Some(first.cache),
        missing_permissions: first.missing_permissions.clone(),
        clusters,
    }))
}

/// Create a sandbox, or return the existing one of the same thread.
#[utoipa::path(post, path = "/api/sandboxes", tag = "sandboxes", request_body = CreateRequest,
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Created, or already there for the same thread", body = Sandbox),
        (status = 400, description = "An extra mount breaks a mount rule; nothing was created", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key, or no key configured", body = ErrorBody),
        (status = 403, description = "The admin key creates no sandboxes", body = ErrorBody),
        (status = 409, description = "The sandbox exists for another thread, user or tenant, with less shell capacity, in a cluster the request does not select, or is being deleted", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body is not JSON", body = ErrorBody),
        (status = 422, description = "Invalid body, sandbox_id, thread_id, user_id or max_shell_sessions, an unknown cluster or unmatched cluster_labels, or a size or cluster the tenant may not use", body = ErrorBody),
        (status = 429, description = "A quota of the tenant (or SANDBOX_MAX_TOTAL) is used up; nothing was created; Retry-After says when to retry", body = ErrorBody),
        (status = 502, description = "Kubernetes refused", body = ErrorBody),
        (status = 503, description = "Kubernetes unreachable or timed out, no cluster can take the sandbox (with Retry-After), or the provisioner overloaded", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let Caller::Tenant(tenant) = caller.clone() else {
        return Err(ApiError::Forbidden(
            "the admin key sees every tenant's sandboxes but creates none: create with a tenant's key".into(),
        ));
    };
    require_json(&headers)?;
    let body = body.map_err(|e| match e.status().as_u16() {
        413 => ApiError::PayloadTooLarge(state.max_body_bytes),
        _ => ApiError::InvalidRequest(format!("cannot read the request body: {e}")),
    })?;
    let invalid = |e: &dyn std::fmt::Display| {
        ApiError::InvalidRequest(format!(
            "the body must be a JSON object with a string field \"sandbox_id\" (see the CreateRequest schema in /openapi.json): {e}"
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
    let wanted = SandboxRequest {
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
    let size = request
        .size
        .unwrap_or_else(|| state.capabilities.sizes.default_size.clone());
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
    params(("sandbox_id" = String, Path, description = "The sandbox's id", pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 51), GetQuery),
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The sandbox", body = Sandbox),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox of the caller's tenant (every cluster answered)", body = ErrorBody),
        (status = 422, description = "Invalid sandbox_id", body = ErrorBody),
        (status = 502, description = "Kubernetes refused", body = ErrorBody),
        (status = 503, description = "Kubernetes unreachable or timed out (also while a cluster that may hold the sandbox is unreachable, never 404 then), or the provisioner overloaded", body = ErrorBody),
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
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "All sandboxes", body = SandboxList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "A tenant's key asked for another tenant's sandboxes", body = ErrorBody),
        (status = 422, description = "Invalid query", body = ErrorBody),
        (status = 502, description = "Kubernetes refused", body = ErrorBody),
        (status = 503, description = "Kubernetes unreachable or timed out, or the provisioner overloaded", body = ErrorBody),
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
    params(("sandbox_id" = String, Path, description = "The sandbox's id", pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 51)),
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Deleted (or already gone)", body = Deleted),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "The sandbox is another tenant's", body = ErrorBody),
        (status = 422, description = "Invalid sandbox_id", body = ErrorBody),
        (status = 502, description = "Kubernetes refused", body = ErrorBody),
        (status = 503, description = "Kubernetes unreachable or timed out, or the provisioner overloaded", body = ErrorBody),
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
    params(("sandbox_id" = String, Path, description = "The sandbox's id", pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 51)),
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "The sandbox, with its new expires_at", body = Sandbox),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox of the caller's tenant (every cluster answered)", body = ErrorBody),
        (status = 422, description = "Invalid sandbox_id", body = ErrorBody),
        (status = 502, description = "Kubernetes refused", body = ErrorBody),
        (status = 503, description = "Kubernetes unreachable or timed out (also while a cluster that may hold the sandbox is unreachable, never 404 then), or the provisioner overloaded", body = ErrorBody),
    ))]
pub async fn keepalive(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Sandbox>, ApiError> {
    let id = sandbox_id(path)?;
    Ok(Json(state.fleet.keepalive(&id, &scope(&caller)).await?))
}

/// Whether the sandbox's Pod exists, and its UID: the Pod only (not the Service), so that a
/// caller can prove a sandbox is gone. Only a confirmed absence is `exists: false`; not
/// activity.
#[utoipa::path(get, path = "/api/sandboxes/{sandbox_id}/presence", tag = "sandboxes",
    params(("sandbox_id" = String, Path, description = "The sandbox's id", pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 51)),
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Whether the Pod exists (another tenant's reads as absent)", body = Presence),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 422, description = "Invalid sandbox_id", body = ErrorBody),
        (status = 502, description = "Kubernetes refused (never reported as absent)", body = ErrorBody),
        (status = 503, description = "Kubernetes unreachable or timed out (also while a cluster that may hold the sandbox is unreachable, never absent then), or the provisioner overloaded", body = ErrorBody),
    ))]
pub async fn presence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Presence>, ApiError> {
    let id = sandbox_id(path)?;
    let found = state.fleet.presence(&id, &scope(&caller)).await?;
    Ok(Json(Presence {
        sandbox_id: id.to_string(),
        exists: found.is_some(),
        container_id: found.and_then(|pod| pod.uid),
    }))
}

/// Whose sandboxes the caller sees.
fn scope(caller: &Caller) -> Scope {
    match caller {
        Caller::Admin => Scope::All,
        Caller::Tenant(t) => Scope::Tenant(t.name.clone()),
    }
}

/// Query of `GET /api/sandboxes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's sandboxes (the admin key; a tenant may name only itself).
    pub tenant: Option<String>,
}

/// A tenant's limits (null: no limit).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LimitsView {
    pub max_sandboxes: Option<usize>,
    pub max_sandboxes_per_user: Option<usize>,
    /// As configured, e.g. `"8"` or `"7500m"`.
    pub max_cpu: Option<String>,
    /// As configured, e.g. `"16Gi"`.
    pub max_memory: Option<String>,
    pub max_creates_per_minute: Option<usize>,
    /// Sizes it may choose (null: all).
    pub sizes: Option<Vec<String>>,
    /// Clusters it may use (null: all).
    pub clusters: Option<Vec<String>>,
}

/// One tenant's limits and use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantQuota {
    pub tenant: String,
    pub limits: LimitsView,
    pub usage: Usage,
}

/// Answer of `GET /api/quota`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaAnswer {
    /// The caller's tenant (the admin key: every tenant).
    pub tenants: Vec<TenantQuota>,
    /// SANDBOX_MAX_TOTAL (null: no limit).
    pub max_total: Option<usize>,
    /// Sandboxes of every tenant together.
    pub total: usize,
}

/// The caller's limits and what it uses now; the admin key sees every tenant.
#[utoipa::path(get, path = "/api/quota", tag = "sandboxes",
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Limits and use", body = QuotaAnswer),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ))]
pub async fn quota(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<QuotaAnswer> {
    let admission = state.fleet.admission();
    let tenants = match &caller {
        Caller::Tenant(t) => vec![t.clone()],
        Caller::Admin => admission.tenants().tenants.clone(),
    };
    let fleet = &state.fleet;
    let total = fleet.snapshot("").total;
    Json(QuotaAnswer {
        tenants: tenants
            .iter()
            .map(|t| TenantQuota {
                tenant: t.name.clone(),
                limits: LimitsView {
                    max_sandboxes: t.limits.max_sandboxes,
                    max_sandboxes_per_user: t.limits.max_sandboxes_per_user,
                    max_cpu: t.limits.max_cpu.as_ref().map(|q| q.text.clone()),
                    max_memory: t.limits.max_memory.as_ref().map(|q| q.text.clone()),
                    max_creates_per_minute: t.limits.max_creates_per_minute,
                    sizes: t.sizes.clone(),
                    clusters: t.clusters.clone(),
                },
                usage: admission.usage(&t.name, fleet.snapshot(&t.name), |id| fleet.holds_id(id)),
            })
            .collect(),
        max_total: admission.max_total(),
        total,
    })
}

/// What this deployment lets callers choose: sizes, the default size, maxima, service mode.
#[utoipa::path(get, path = "/api/capabilities", tag = "sandboxes",
    security((), ("api_key" = []), ("bearer" = [])),
    responses(
        (status = 200, description = "Sizes and limits", body = Capabilities),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ))]
pub async fn capabilities(State(state): State<AppState>) -> Json<Capabilities> {
    Json(Capabilities {
        clusters: state.fleet.clusters().iter().map(fleet::info).collect(),
        ..(*state.capabilities).clone()
    })
}

pub async fn no_such_route() -> ApiError {
    ApiError::NoSuchRoute
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
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
