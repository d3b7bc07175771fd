//! The sandbox domain: identifiers, status and the view callers get. Pure: no Kubernetes calls.

mod id;
mod lifetime;
pub mod mounts;
mod resources;
mod status;

pub use id::{
    is_dns_label, InvalidId, SandboxId, ThreadId, UserId, DEFAULT_USER_ID, MAX_SANDBOX_ID_LEN,
    MAX_THREAD_ID_LEN, MAX_USER_ID_LEN, NOT_A_DNS_LABEL,
};
pub use lifetime::{parse_duration, Expiry, Timers};
pub use mounts::{ExtraMount, HostBase, InvalidMount, InvalidSkillsPath};
pub use resources::{
    parse_quantity, InvalidResources, InvalidSizes, Resources, Sizes, RESOURCE_NAMES,
};
pub use status::{Phase, SandboxStatus};

use serde::{Deserialize, Serialize};

/// One sandbox as the API reports it. The first three fields are DeerFlow's contract; the rest
/// help callers see why a sandbox is not (yet) usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sandbox {
    pub sandbox_id: String,
    /// Where the backend reaches the sandbox; empty while its Service is missing.
    pub sandbox_url: String,
    pub status: Phase,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The user the sandbox was created for (`default` when the request named none).
    #[serde(default = "default_user")]
    pub user_id: String,
    /// The shell-session capacity set on the sandbox (env MAX_SHELL_SESSIONS), or null when
    /// the image's default applies.
    #[serde(default)]
    pub max_shell_sessions: Option<u32>,
    /// The UID of the sandbox's Pod: a new value for every Pod the sandbox gets (a re-create
    /// after a DELETE, a repaired Pod), null while it has none.
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the sandbox will be removed unless something changes (RFC 3339), or null when no
    /// lifetime or idle timer applies. Activity (GET, keepalive) moves an idle deadline.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The cluster that holds the sandbox (`default` with a single cluster).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The tenant it belongs to (`default` without PROVISIONER_TENANTS).
    #[serde(default = "default_tenant")]
    pub tenant: String,
}

/// The name of the one cluster of a configuration without a cluster list.
pub const DEFAULT_CLUSTER: &str = "default";

fn default_cluster() -> String {
    DEFAULT_CLUSTER.to_string()
}

fn default_tenant() -> String {
    "default".to_string()
}

fn default_user() -> String {
    DEFAULT_USER_ID.to_string()
}

/// A sandbox as a listing holds it: the view and its JSON, serialized once when the view was
/// built, so that a LIST of thousands copies bytes instead of serializing every field again.
#[derive(Debug)]
pub struct Listed {
    sandbox: Sandbox,
    json: Box<serde_json::value::RawValue>,
}

impl Listed {
    pub fn new(sandbox: Sandbox) -> Listed {
        let json = serde_json::value::to_raw_value(&sandbox).expect("a sandbox serializes");
        Listed { sandbox, json }
    }
}

impl std::ops::Deref for Listed {
    type Target = Sandbox;

    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

/// Shell sessions DeerFlow's sandbox images keep when MAX_SHELL_SESSIONS is not set (what
/// DeerFlow's gateway assumes of a sandbox that reports none).
pub const IMAGE_DEFAULT_SHELL_SESSIONS: u32 = 10;

/// The steps of a sandbox's start, as its pod status records them (whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartSteps {
    /// Creation until the pod was scheduled to a node.
    pub scheduled: std::time::Duration,
    /// Scheduled until the sandbox container started: image pulls and init containers.
    pub started: std::time::Duration,
    /// Started until Ready: the sandbox's boot and the kubelet's probes noticing it.
    pub ready: std::time::Duration,
}

/// The Lark CLI helpers a request asks for (each takes effect only when its image is set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LarkRequest {
    /// Pattern A: an init container stages the Lark CLI runtime into a shared emptyDir.
    pub runtime: bool,
    /// Pattern B: a shim plus a broker sidecar that alone holds the credential mounts.
    pub broker: bool,
}

/// Everything one create asks for, checked.
#[derive(Debug, Clone)]
pub struct SandboxRequest {
    pub id: SandboxId,
    /// The size the request was admitted under (None: not recorded).
    pub size: Option<String>,
    /// The tenant whose key asks (`default` without PROVISIONER_TENANTS).
    pub tenant: String,
    pub thread: ThreadId,
    pub user: UserId,
    pub resources: Resources,
    pub timers: Timers,
    pub extra_mounts: Vec<ExtraMount>,
    pub lark: LarkRequest,
    /// Sets MAX_SHELL_SESSIONS on the sandbox container.
    pub max_shell_sessions: Option<u32>,
    /// The request's own skills path (checked); None: /mnt/skills, where the provisioner
    /// mounts skills itself.
    pub skills_path: Option<String>,
}

impl SandboxRequest {
    /// A request with DeerFlow's defaults for everything but the ids.
    pub fn new(id: SandboxId, thread: ThreadId) -> Self {
        SandboxRequest {
            id,
            size: None,
            tenant: "default".into(),
            thread,
            user: UserId::default(),
            resources: Sizes::deerflow_default(),
            timers: Timers::default(),
            extra_mounts: Vec::new(),
            lark: LarkRequest::default(),
            max_shell_sessions: None,
            skills_path: None,
        }
    }
}
