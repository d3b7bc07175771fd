//! Warm pools: started, unclaimed sandbox Pods kept per size, so that a create takes one
//! that has already booted instead of waiting for a new one.
//!
//! Everything fixed at Pod start (image, size, pod template, shell capacity, Lark helpers) is
//! the pool's; what belongs to the thread (its user data, the user's skills, the backend's
//! extra mounts) is bound in late: a pool Pod mounts an empty *slot* directory of the node for
//! each such path, with `HostToContainer` propagation, and on claim the node agent bind-mounts
//! the thread's directories onto the slots. A request that needs anything else at Pod start
//! goes cold, and says why ([`ColdReason`]).
//!
//! Pure: which requests a pool serves and what gets bound where.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{SandboxSpec, SkillsMount, UserDataMount};
use crate::sandbox::{
    mounts::{ACP_WORKSPACE_PATH, CUSTOM_SKILLS_PATH, INTEGRATION_SKILLS_PATH, USER_DATA_PATH},
    Resources, SandboxRequest,
};

/// Where the per-user legacy skills are mounted (DeerFlow's layout).
pub const LEGACY_SKILLS_PATH: &str = "/mnt/skills/legacy";

/// The default root of the slot directories on each node (SANDBOX_WARM_POOL_SLOT_ROOT).
pub const DEFAULT_SLOT_ROOT: &str = "/var/lib/sandbox-provisioner/slots";

/// The warm pools of one cluster (SANDBOX_WARM_POOL and its companions).
#[derive(Debug, Clone, PartialEq)]
pub struct WarmPool {
    /// One per size that keeps Pods ready; empty: no pools.
    pub classes: Vec<PoolClass>,
    /// An unclaimed Pod older than this is replaced (its image or node may have changed).
    pub max_age: Duration,
    /// How long a claim waits for the node agent to bind the thread's data.
    pub bind_timeout: Duration,
    /// The directory on each node that holds the slots: `{root}/{namespace}/{pod}/{slot}`.
    pub slot_root: String,
}

impl Default for WarmPool {
    fn default() -> Self {
        WarmPool {
            classes: Vec::new(),
            max_age: Duration::from_secs(3600),
            bind_timeout: Duration::from_secs(10),
            slot_root: DEFAULT_SLOT_ROOT.into(),
        }
    }
}

/// One pool: a size, and how many started Pods of it to keep ready.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolClass {
    /// The size's name (a DNS label; it names the Pods).
    pub name: String,
    pub target: u32,
    pub resources: Resources,
}

/// One directory the node agent binds onto a claimed Pod's slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// The container path (which names the slot).
    pub path: String,
    /// The node's directory that appears there.
    pub source: String,
    pub read_only: bool,
}

/// Why a create does not take a warm Pod (the label of the cold-claims metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdReason {
    /// No pool keeps Pods of the requested size.
    Size,
    /// A shell capacity of its own is set at Pod start.
    ShellSessions,
    /// The Lark helpers are containers of the Pod.
    Lark,
    /// A skills path of its own moves the skills mounts.
    SkillsPath,
    /// An extra mount at a path that has no slot.
    Mount(String),
    /// The pool of its size has no ready Pod right now.
    Empty,
}

impl ColdReason {
    pub fn label(&self) -> &'static str {
        match self {
            ColdReason::Size => "size",
            ColdReason::ShellSessions => "shell_sessions",
            ColdReason::Lark => "lark",
            ColdReason::SkillsPath => "skills_path",
            ColdReason::Mount(_) => "mount",
            ColdReason::Empty => "empty",
        }
    }
}

impl WarmPool {
    pub fn on(&self) -> bool {
        self.classes.iter().any(|c| c.target > 0)
    }

    pub fn class(&self, name: &str) -> Option<&PoolClass> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The pool that can serve this request, and what its claim binds; or why it goes cold.
    pub fn serving(
        &self,
        spec: &SandboxSpec,
        request: &SandboxRequest,
    ) -> Result<(&PoolClass, Vec<Bind>), ColdReason> {
        let class = self
            .classes
            .iter()
            .find(|c| c.target > 0 && c.resources == request.resources)
            .ok_or(ColdReason::Size)?;
        Ok((class, binds(spec, request)?))
    }
}

/// The container paths a pool Pod holds a slot for, in mount order: the user data (from the
/// threads directory), the per-user skills, and the extra mounts that are plain directories
/// (the skills ones only where /mnt/skills is not itself one read-only mount). The Lark paths
/// have none: their helpers are part of the Pod, so Lark requests go cold.
pub fn slot_paths(spec: &SandboxSpec) -> Vec<&'static str> {
    let mut paths = Vec::new();
    if matches!(spec.user_data, UserDataMount::HostPath(_)) {
        paths.push(USER_DATA_PATH);
    }
    if matches!(spec.skills, SkillsMount::PerUser { .. }) {
        paths.extend([CUSTOM_SKILLS_PATH, LEGACY_SKILLS_PATH]);
    }
    paths.push(ACP_WORKSPACE_PATH);
    // Below a read-only /mnt/skills (one skills directory) no mount point can be made.
    if !matches!(
        spec.skills,
        SkillsMount::HostPath(_) | SkillsMount::Claim { .. }
    ) {
        for path in [CUSTOM_SKILLS_PATH, INTEGRATION_SKILLS_PATH] {
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

/// The name of a slot (its volume and its directory) for a container path:
/// `/mnt/user-data` → `slot-mnt-user-data`.
pub fn slot_name(container_path: &str) -> String {
    format!("slot{}", container_path.replace('/', "-"))
}

/// What a claim binds for this request, exactly the host directories a cold create would mount
/// there; or why the request cannot be served warm.
pub fn binds(spec: &SandboxSpec, request: &SandboxRequest) -> Result<Vec<Bind>, ColdReason> {
    if request.max_shell_sessions.is_some() {
        return Err(ColdReason::ShellSessions);
    }
    let lark = spec.lark.effective(request.lark);
    if lark.runtime || lark.broker {
        return Err(ColdReason::Lark);
    }
    if request.skills_path.is_some() {
        return Err(ColdReason::SkillsPath);
    }
    let slots = slot_paths(spec);
    let mut binds = Vec::new();
    if let UserDataMount::HostPath(threads) = &spec.user_data {
        binds.push(Bind {
            path: USER_DATA_PATH.into(),
            source: format!("{threads}/{}/user-data", request.thread),
            read_only: false,
        });
    }
    if let SkillsMount::PerUser { base } = &spec.skills {
        let user_view = format!("{base}/users/{}/skills_view", request.user);
        let custom_from_backend = request
            .extra_mounts
            .iter()
            .any(|m| m.container_path == CUSTOM_SKILLS_PATH);
        if !custom_from_backend {
            binds.push(Bind {
                path: CUSTOM_SKILLS_PATH.into(),
                source: format!("{user_view}/custom"),
                read_only: true,
            });
        }
        binds.push(Bind {
            path: LEGACY_SKILLS_PATH.into(),
            source: format!("{user_view}/legacy"),
            read_only: true,
        });
    }
    for extra in &request.extra_mounts {
        if !slots.contains(&extra.container_path.as_str()) {
            return Err(ColdReason::Mount(extra.container_path.clone()));
        }
        binds.push(Bind {
            path: extra.container_path.clone(),
            source: extra.host_path.clone(),
            read_only: extra.read_only,
        });
    }
    Ok(binds)
}

// Tested with the pool Pod in `k8s::manifests::pool` (it needs a spec to build requests on).
