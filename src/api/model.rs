//! What the API reads and writes: request and answer bodies and queries, with their OpenAPI
//! schemas (the routes in `routes/` use them), and the responses several routes share.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use crate::{
    admission::Usage,
    fleet::{ClusterInfo, ClusterListing},
    k8s::{cache::CacheSummary, refusals::MissingPermission},
    sandbox::{mounts::ExtraMountRequest, Listed, Resources, Sandbox, Sizes},
};

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

/// Answer of `GET /api/sandboxes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxList {
    // Shared with the views the service keeps, each with its JSON: a LIST of thousands
    // serializes none of them again.
    #[schema(value_type = Vec<Sandbox>)]
    pub sandboxes: Vec<std::sync::Arc<Listed>>,
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
    /// The sandbox is suspended: no Pod exists (`exists` is false), but its record does, and
    /// its next use wakes it. Absent when false (the answer DeerFlow knows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
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

/// The `sandbox_id` in the path of every route about one sandbox.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SandboxPath {
    /// The sandbox's id
    #[param(pattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 51)]
    pub sandbox_id: String,
}

/// 401: the key is missing or wrong (every `/api/*` route).
#[derive(utoipa::IntoResponses)]
pub enum Unauthorized {
    #[response(status = 401, description = "Missing or wrong API key")]
    Key(ErrorBody),
}

/// 422: the sandbox id in the path is not a valid id.
#[derive(utoipa::IntoResponses)]
pub enum InvalidId {
    #[response(status = 422, description = "Invalid sandbox_id")]
    Invalid(ErrorBody),
}

/// 404: no sandbox of the caller's tenant has this id.
#[derive(utoipa::IntoResponses)]
pub enum NotFound {
    #[response(
        status = 404,
        description = "No such sandbox of the caller's tenant (every cluster answered)"
    )]
    Missing(ErrorBody),
}

/// 502 and 503: Kubernetes refused, or could not be asked.
#[derive(utoipa::IntoResponses)]
pub enum KubernetesFailed {
    #[response(status = 502, description = "Kubernetes refused")]
    Refused(ErrorBody),
    #[response(
        status = 503,
        description = "Kubernetes unreachable or timed out (also while a cluster that may hold \
            the sandbox is unreachable: never 404 or absent then), or the provisioner overloaded"
    )]
    Unavailable(ErrorBody),
}
