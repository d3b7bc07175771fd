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
mod service;

pub use labels::*;
pub use namespace::namespace;
pub use network_policy::{
    baseline_network_policy, isolated_spec, network_policy, BASELINE_POLICY_NAME,
};
pub use pod::pod;
pub use service::service;

#[cfg(test)]
pub(crate) mod test_support {
    use crate::{
        sandbox::{SandboxId, Sizes, ThreadId},
        spec::{
            Exposure, NetworkPolicyMode, Placement, PodSecurity, SandboxSpec, Seccomp, SkillsMount,
            UserDataMount, DEFAULT_PORT,
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
            skills: skills.map_or(SkillsMount::None, |s| SkillsMount::HostPath(s.into())),
            user_data: threads.map_or(UserDataMount::EmptyDir, |t| {
                UserDataMount::HostPath(t.into())
            }),
            exposure: Exposure::NodePort {
                node_host: "host.docker.internal".into(),
            },
            security: strict(),
            placement: Placement::default(),
            network_policy: NetworkPolicyMode::None,
            default_resources: Sizes::deerflow_default(),
        }
    }

    pub fn ids() -> (SandboxId, ThreadId) {
        (
            SandboxId::parse("abc-123").unwrap(),
            ThreadId::parse("thread-456").unwrap(),
        )
    }

    /// The pod of `spec` for [`ids`], created at the epoch, with a uid.
    pub fn a_pod(spec: &SandboxSpec) -> k8s_openapi::api::core::v1::Pod {
        let (id, thread) = ids();
        let mut pod = super::pod(
            spec,
            &id,
            &thread,
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            &Sizes::deerflow_default(),
            &crate::sandbox::Timers::default(),
        );
        pod.metadata.uid = Some("uid-1".into());
        pod
    }
}
