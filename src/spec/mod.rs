//! What operators configure about the sandbox objects: image, port, mounts, exposure,
//! security, placement and network policy. Built once from the configuration; the manifests
//! are made from it. Placement and policy templates are fragments of Kubernetes objects by
//! definition, so they keep Kubernetes types; everything else is plain data.

pub mod gateway;
pub mod image;
pub mod keys;
pub mod network_policy;
pub mod placement;
pub mod pod_template;
pub mod sub_path;
pub mod warm_pool;

pub use gateway::{GatewayKeys, GatewayUrls, Reach, SandboxUrls};
pub use network_policy::NetworkPolicyMode;
pub use placement::Placement;
pub use pod_template::PodTemplate;
pub use sub_path::SubPathTemplate;

use crate::sandbox::{HostBase, LarkRequest, Resources};

/// Port DeerFlow's sandbox image serves its API on (the default of SANDBOX_CONTAINER_PORT).
pub const DEFAULT_PORT: u16 = 8080;

/// Where `/mnt/skills` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkillsMount {
    /// No skills mount.
    None,
    /// A host directory (SKILLS_HOST_PATH), read-only at /mnt/skills.
    HostPath(String),
    /// DeerFlow's three-way layout below the base directory, read-only:
    /// `{base}/skills_view/public` at /mnt/skills/public, and
    /// `{base}/users/{user_id}/skills_view/{custom,legacy}` at /mnt/skills/{custom,legacy}.
    PerUser { base: String },
    /// A PersistentVolumeClaim (SKILLS_PVC_NAME), optionally a directory inside it.
    Claim {
        name: String,
        sub_path: Option<SubPathTemplate>,
    },
}

/// Where `/mnt/user-data` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserDataMount {
    /// An emptyDir that dies with the sandbox.
    EmptyDir,
    /// `{dir}/{thread_id}/user-data` on the host (THREADS_HOST_PATH).
    HostPath(String),
    /// A sub-path of a claim (USERDATA_PVC_NAME); extra mounts are sub-paths of it too.
    Claim {
        name: String,
        sub_path: SubPathTemplate,
    },
}

/// The Lark CLI helper images (each unset: that pattern is off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LarkImages {
    /// LARK_CLI_INIT_IMAGE: pattern A, the runtime staged by an init container.
    pub init_image: Option<String>,
    /// LARK_CLI_BROKER_IMAGE: pattern B, a shim and a broker sidecar holding the credentials.
    pub broker_image: Option<String>,
    /// DEERFLOW_LARK_BROKER_DENY_SUBCOMMANDS, passed to the broker.
    pub broker_deny_subcommands: Option<String>,
}

impl LarkImages {
    /// What of a request takes effect: the broker supersedes the runtime.
    pub fn effective(&self, requested: LarkRequest) -> LarkRequest {
        let broker = requested.broker && self.broker_image.is_some();
        LarkRequest {
            runtime: requested.runtime && self.init_image.is_some() && !broker,
            broker,
        }
    }
}

/// How sandbox Services expose the sandbox to the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exposure {
    /// URL `http://{node_host}:{nodePort}`.
    NodePort { node_host: String },
    /// URL `http://sandbox-{id}-svc.{namespace}.svc.cluster.local:{port}`.
    ClusterIp,
    /// No Service (SANDBOX_SERVICE_TYPE=None): only in gateway mode with Pod-IP reach, where
    /// nothing uses one.
    None,
}

impl Exposure {
    /// The Service type, as Kubernetes and `/api/capabilities` name it.
    pub fn service_type(&self) -> &'static str {
        match self {
            Exposure::NodePort { .. } => "NodePort",
            Exposure::ClusterIp => "ClusterIP",
            Exposure::None => "None",
        }
    }

    /// Whether sandboxes get a Service.
    pub fn has_service(&self) -> bool {
        !matches!(self, Exposure::None)
    }
}

/// Security settings of every sandbox pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSecurity {
    pub automount_service_account_token: bool,
    pub enable_service_links: bool,
    pub seccomp: Seccomp,
    pub allow_privilege_escalation: bool,
    pub capabilities_drop: Vec<String>,
    pub capabilities_add: Vec<String>,
}

/// The pod's seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

/// When the kubelet probes a sandbox (`GET /v1/sandbox` on its port). Timeouts (3 s) and
/// failure thresholds (3) of readiness and liveness are DeerFlow's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTimings {
    /// Period and failure threshold of the startup probe; None: no startup probe.
    pub startup: Option<(u32, u32)>,
    /// Initial delay and period of the readiness probe.
    pub readiness: (u32, u32),
    /// Initial delay and period of the liveness probe.
    pub liveness: (u32, u32),
}

impl ProbeTimings {
    /// DeerFlow's probes: readiness after 5 s every 5 s, liveness after 10 s every 10 s.
    pub const DEERFLOW: ProbeTimings = ProbeTimings {
        startup: None,
        readiness: (5, 5),
        liveness: (10, 10),
    };
    /// The defaults: a startup probe every second for up to 120 s, then readiness and liveness.
    pub const DEFAULT: ProbeTimings = ProbeTimings {
        startup: Some((1, 120)),
        readiness: (0, 5),
        liveness: (0, 10),
    };
}

/// Everything the manifests need to make a sandbox's objects.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub namespace: String,
    pub image: String,
    /// Container port, probe port and service port.
    pub port: u16,
    pub probes: ProbeTimings,
    pub skills: SkillsMount,
    pub user_data: UserDataMount,
    /// The directory extra mounts must lie in.
    pub host_base: HostBase,
    pub lark: LarkImages,
    pub exposure: Exposure,
    /// The URLs handed out: the Service's, or the gateway's.
    pub urls: SandboxUrls,
    /// How the gateway reaches this cluster's sandboxes.
    pub reach: Reach,
    /// Each sandbox demands its own key, derived from the gateway secret
    /// (SANDBOX_UPSTREAM_KEY=per-sandbox).
    pub upstream_key: bool,
    pub security: PodSecurity,
    pub placement: Placement,
    /// SANDBOX_POD_TEMPLATE: merged into every pod (its placement fields and `placement`'s
    /// never overlap).
    pub pod_template: PodTemplate,
    pub network_policy: NetworkPolicyMode,
    /// Resources of the default size (for the start-up dry run).
    pub default_resources: Resources,
    /// Started Pods kept ready per size (SANDBOX_WARM_POOL).
    pub warm_pool: warm_pool::WarmPool,
}

impl SandboxSpec {
    /// Whether sandboxes get NetworkPolicies.
    pub fn policies_on(&self) -> bool {
        !matches!(self.network_policy, NetworkPolicyMode::None)
    }

    /// The claims sandboxes mount, with the variable that names each.
    pub fn claims(&self) -> Vec<(&'static str, &str)> {
        let mut claims = Vec::new();
        if let SkillsMount::Claim { name, .. } = &self.skills {
            claims.push(("SKILLS_PVC_NAME", name.as_str()));
        }
        if let UserDataMount::Claim { name, .. } = &self.user_data {
            claims.push(("USERDATA_PVC_NAME", name.as_str()));
        }
        claims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_supersedes_the_runtime_and_needs_its_image() {
        let both = LarkRequest {
            runtime: true,
            broker: true,
        };
        let none = LarkImages::default();
        assert_eq!(none.effective(both), LarkRequest::default());
        let init_only = LarkImages {
            init_image: Some("init".into()),
            ..LarkImages::default()
        };
        assert_eq!(
            init_only.effective(both),
            LarkRequest {
                runtime: true,
                broker: false
            }
        );
        let all = LarkImages {
            init_image: Some("init".into()),
            broker_image: Some("broker".into()),
            broker_deny_subcommands: None,
        };
        assert_eq!(
            all.effective(both),
            LarkRequest {
                runtime: false,
                broker: true
            }
        );
        assert_eq!(
            all.effective(LarkRequest {
                runtime: true,
                broker: false
            }),
            LarkRequest {
                runtime: true,
                broker: false
            }
        );
    }
}
