//! What a caller needs to know about a sandbox: phase, readiness, and why it is not running.
//! (`k8s::status` reads it from a pod.)

use serde::{Deserialize, Serialize};

/// DeerFlow's status values: the pod phase, plus NotFound, plus Suspended (no Pod; the
/// sandbox's identity and files are kept, and its next use wakes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
    NotFound,
    Suspended,
}

/// Status of one sandbox as reported to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    pub phase: Phase,
    /// The pod's Ready condition: the sandbox answers requests.
    pub ready: bool,
    /// The most useful machine-readable cause when not ready (ImagePullBackOff, ...).
    pub reason: Option<String>,
    /// Human-readable detail for `reason`.
    pub message: Option<String>,
}
