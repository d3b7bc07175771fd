//! The objects of a sandbox, built as pure functions from the [`SandboxSpec`]: one file per
//! object, and the names, labels and annotations they share.
//!
//! Names, labels, mounts, resources and probes follow DeerFlow's provisioner so that existing
//! tooling (`kubectl get pod -l sandbox-id=...`) keeps working.
//!
//! [`SandboxSpec`]: crate::spec::SandboxSpec

mod labels;
mod namespace;
mod network_policy;
mod pod;
mod pool;
mod service;
mod suspended;
mod volumes;

pub use labels::*;
pub use namespace::namespace;
pub use network_policy::{
    baseline_network_policy, isolated_spec, network_policy, BASELINE_POLICY_NAME,
};
pub use pod::pod;
pub use pool::{claim_patch, pool_pod, pool_pod_name, slot_dir};
pub use service::service;
pub(crate) use suspended::stored_part;
pub use suspended::{suspended_record, suspended_record_name, suspended_selector, SuspendTrigger};
pub use volumes::{LARK_BROKER_CONTAINER, LARK_BROKER_URL, LARK_RUNTIME_VOLUME};

#[cfg(test)]
pub(crate) mod test_support {
    use crate::{
        sandbox::{HostBase, SandboxId, SandboxRequest, ThreadId},
        spec::{
            Exposure, LarkImages, NetworkPolicyMode, Placement, PodSecurity, SandboxSpec, Seccomp,
            SkillsMount, UserDataMount, DEFAULT_PORT,
        },
    };

    pub fn strict() -> PodSecurity {
        PodSecurity {
            automount_service_account_token: false,
            enable_service_links: false,
            seccomp: Seccomp::RuntimeDefault,
            allow_privilege_escalation: false,
            capabilities_drop: vec!["ALL".into()],
            capabilities_add: vec!["CHOWN".into(), "SETUID".into()],
        }
    }

    /// A spec as the defaults make it, with these host paths.
    pub fn spec(threads: Option<&str>, skills: Option<&str>) -> SandboxSpec {
        SandboxSpec {
            namespace: "deer-flow".into(),
            image: "img:1".into(),
            port: DEFAULT_PORT,
            probes: crate::spec::ProbeTimings::DEFAULT,
            skills: skills.map_or(SkillsMount::None, |s| SkillsMount::HostPath(s.into())),
            user_data: threads.map_or(UserDataMount::EmptyDir, |t| {
                UserDataMount::HostPath(t.into())
            }),
            exposure: Exposure::NodePort {
                node_host: "host.docker.internal".into(),
            },
            urls: Default::default(),
            reach: Default::default(),
            upstream_key: false,
            security: strict(),
            placement: Placement::default(),
            pod_template: Default::default(),
            network_policy: NetworkPolicyMode::None,
            default_resources: crate::sandbox::Sizes::deerflow_default(),
            warm_pool: Default::default(),
            host_base: HostBase {
                dir: "/.deer-flow".into(),
                origin: "DeerFlow's default",
            },
            lark: LarkImages::default(),
        }
    }

    pub fn ids() -> (SandboxId, ThreadId) {
        (
            SandboxId::parse("abc-123").unwrap(),
            ThreadId::parse("thread-456").unwrap(),
        )
    }

    /// A request for [`ids`] with the defaults.
    pub fn a_request() -> SandboxRequest {
        let (id, thread) = ids();
        SandboxRequest::new(id, thread)
    }

    /// The pod of `request`, created at the epoch, with a uid.
    pub fn pod_of(spec: &SandboxSpec, request: &SandboxRequest) -> k8s_openapi::api::core::v1::Pod {
        let mut pod = super::pod(spec, request, k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        pod.metadata.uid = Some("uid-1".into());
        pod
    }

    /// The pod of `spec` for [`ids`], created at the epoch, with a uid.
    pub fn a_pod(spec: &SandboxSpec) -> k8s_openapi::api::core::v1::Pod {
        pod_of(spec, &a_request())
    }
}
