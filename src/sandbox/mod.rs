//! The sandbox domain: identifiers, status and the view callers get. Pure: no Kubernetes calls.

mod id;
mod lifetime;
mod resources;
mod status;

pub use id::{InvalidId, SandboxId, ThreadId, MAX_SANDBOX_ID_LEN, MAX_THREAD_ID_LEN};
pub use lifetime::{parse_duration, Expiry, Timers};
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the sandbox will be removed unless something changes (RFC 3339), or null when no
    /// lifetime or idle timer applies. Activity (GET, keepalive) moves an idle deadline.
    #[serde(default)]
    pub expires_at: Option<String>,
}
