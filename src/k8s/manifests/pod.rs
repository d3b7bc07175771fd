//! The sandbox Pod.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
        HostPathVolumeSource, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
        Probe, ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
    jiff::Timestamp,
};

use super::labels::{metadata, pod_name, IDLE_ANNOTATION, TTL_ANNOTATION};
use crate::{
    sandbox::{Resources, SandboxId, ThreadId, Timers},
    spec::{PodSecurity, SandboxSpec, Seccomp, SkillsMount, UserDataMount},
};

fn quantities(values: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!values.is_empty()).then(|| {
        values
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn probe(port: i32, initial_delay: i32, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/v1/sandbox".into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn host_path(path: String, type_: &str) -> Option<HostPathVolumeSource> {
    Some(HostPathVolumeSource {
        path,
        type_: Some(type_.to_string()),
    })
}

fn pod_security_context(security: &PodSecurity) -> PodSecurityContext {
    let (type_, localhost_profile) = match &security.seccomp {
        Seccomp::RuntimeDefault => ("RuntimeDefault", None),
        Seccomp::Unconfined => ("Unconfined", None),
        Seccomp::Localhost(path) => ("Localhost", Some(path.clone())),
    };
    PodSecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: type_.to_string(),
            localhost_profile,
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context(security: &PodSecurity) -> SecurityContext {
    let list = |names: &[String]| (!names.is_empty()).then(|| names.to_vec());
    SecurityContext {
        allow_privilege_escalation: Some(security.allow_privilege_escalation),
        capabilities: Some(Capabilities {
            drop: list(&security.capabilities_drop),
            add: list(&security.capabilities_add),
        }),
        ..SecurityContext::default()
    }
}

/// The sandbox Pod. Host paths are joined only from validated parts: the configured (absolute,
/// `..`-free) directory and a thread id that cannot contain `/` or `.`.
pub fn pod(
    t: &SandboxSpec,
    id: &SandboxId,
    thread: &ThreadId,
    created: Timestamp,
    resources: &Resources,
    timers: &Timers,
) -> Pod {
    let port = i32::from(t.port);
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let claim = |name: &str, read_only: bool| {
        Some(PersistentVolumeClaimVolumeSource {
            claim_name: name.to_string(),
            read_only: Some(read_only),
        })
    };
    let mut mount = |name: &str, path: &str, read_only: bool, sub_path: Option<String>| {
        mounts.push(VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: Some(read_only),
            sub_path,
            ..VolumeMount::default()
        })
    };
    match &t.skills {
        SkillsMount::None => {}
        SkillsMount::Claim { name, sub_path } => {
            volumes.push(Volume {
                name: "skills".into(),
                persistent_volume_claim: claim(name, true),
                ..Volume::default()
            });
            mount("skills", "/mnt/skills", true, sub_path.clone());
        }
        SkillsMount::HostPath(skills) => {
            volumes.push(Volume {
                name: "skills".into(),
                host_path: host_path(skills.clone(), "Directory"),
                ..Volume::default()
            });
            mount("skills", "/mnt/skills", true, None);
        }
    }
    let (user_data, sub_path) = match &t.user_data {
        UserDataMount::Claim(name) => (
            Volume {
                name: "user-data".into(),
                persistent_volume_claim: claim(name, false),
                ..Volume::default()
            },
            Some(format!("threads/{thread}/user-data")),
        ),
        UserDataMount::HostPath(threads) => (
            Volume {
                name: "user-data".into(),
                host_path: host_path(format!("{threads}/{thread}/user-data"), "DirectoryOrCreate"),
                ..Volume::default()
            },
            None,
        ),
        UserDataMount::EmptyDir => (
            Volume {
                name: "user-data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            None,
        ),
    };
    volumes.push(user_data);
    mount("user-data", "/mnt/user-data", false, sub_path);
    let mut pod = Pod {
        metadata: metadata(pod_name(id), &t.namespace, id, thread, created),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "sandbox".into(),
                image: Some(t.image.clone()),
                image_pull_policy: Some("IfNotPresent".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: port,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                resources: Some(ResourceRequirements {
                    requests: quantities(&resources.requests),
                    limits: quantities(&resources.limits),
                    ..ResourceRequirements::default()
                }),
                readiness_probe: Some(probe(port, 5, 5)),
                liveness_probe: Some(probe(port, 10, 10)),
                volume_mounts: Some(mounts),
                security_context: Some(container_security_context(&t.security)),
                ..Container::default()
            }],
            volumes: Some(volumes),
            restart_policy: Some("Always".into()),
            automount_service_account_token: Some(t.security.automount_service_account_token),
            enable_service_links: Some(t.security.enable_service_links),
            security_context: Some(pod_security_context(&t.security)),
            ..PodSpec::default()
        }),
        status: None,
    };
    if let Some(spec) = pod.spec.as_mut() {
        t.placement.apply(spec);
    }
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (key, value) in [
        (TTL_ANNOTATION, timers.lifetime),
        (IDLE_ANNOTATION, timers.idle),
    ] {
        if !value.is_zero() {
            annotations.insert(key.to_string(), value.as_secs().to_string());
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{super::test_support::*, *};
    use crate::k8s::manifests::{
        CREATED_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, THREAD_ANNOTATION,
    };

    fn pod_json(t: &SandboxSpec) -> serde_json::Value {
        serde_json::to_value(a_pod(t)).unwrap()
    }

    #[test]
    fn pod_is_locked_down_by_default() {
        let p = pod_json(&spec(None, None));
        assert_eq!(p["spec"]["automountServiceAccountToken"], false);
        assert_eq!(p["spec"]["enableServiceLinks"], false);
        assert_eq!(
            p["spec"]["securityContext"],
            json!({"seccompProfile": {"type": "RuntimeDefault"}})
        );
        assert_eq!(
            p["spec"]["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "SETUID"]}})
        );
    }

    #[test]
    fn security_can_be_relaxed() {
        let mut t = spec(None, None);
        t.security = PodSecurity {
            automount_service_account_token: true,
            enable_service_links: true,
            seccomp: Seccomp::Localhost("p.json".into()),
            allow_privilege_escalation: true,
            capabilities_drop: vec![],
            capabilities_add: vec![],
        };
        let p = pod_json(&t);
        assert_eq!(p["spec"]["automountServiceAccountToken"], true);
        assert_eq!(
            p["spec"]["securityContext"],
            json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}})
        );
        assert_eq!(
            p["spec"]["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": true, "capabilities": {}})
        );
    }

    #[test]
    fn pod_matches_deerflows() {
        let t = spec(Some("/srv/threads"), Some("/srv/skills"));
        let p = pod_json(&t);
        assert_eq!(p["metadata"]["name"], "sandbox-abc-123");
        assert_eq!(p["metadata"]["namespace"], "deer-flow");
        assert_eq!(p["metadata"]["labels"]["app"], "deer-flow-sandbox");
        assert_eq!(p["metadata"]["labels"]["sandbox-id"], "abc-123");
        assert_eq!(
            p["metadata"]["labels"]["app.kubernetes.io/name"],
            "deer-flow"
        );
        assert_eq!(
            p["metadata"]["labels"]["app.kubernetes.io/component"],
            "sandbox"
        );
        assert_eq!(p["metadata"]["labels"][MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(
            p["metadata"]["annotations"][THREAD_ANNOTATION],
            "thread-456"
        );
        assert_eq!(
            p["metadata"]["annotations"][CREATED_ANNOTATION],
            "1970-01-01T00:00:00Z"
        );
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["name"], "sandbox");
        assert_eq!(c["image"], "img:1");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            c["ports"][0],
            json!({"name": "http", "containerPort": 8080, "protocol": "TCP"})
        );
        assert_eq!(
            c["resources"],
            json!({
                "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "500Mi"},
                "limits": {"cpu": "1000m", "memory": "1Gi", "ephemeral-storage": "500Mi"},
            })
        );
        let probe = |d: i64, p: i64| {
            json!({"httpGet": {"path": "/v1/sandbox", "port": 8080}, "initialDelaySeconds": d,
                   "periodSeconds": p, "timeoutSeconds": 3, "failureThreshold": 3})
        };
        assert_eq!(c["readinessProbe"], probe(5, 5));
        assert_eq!(c["livenessProbe"], probe(10, 10));
        assert_eq!(
            c["volumeMounts"],
            json!([
                {"name": "skills", "mountPath": "/mnt/skills", "readOnly": true},
                {"name": "user-data", "mountPath": "/mnt/user-data", "readOnly": false},
            ])
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([
                {"name": "skills", "hostPath": {"path": "/srv/skills", "type": "Directory"}},
                {"name": "user-data", "hostPath": {"path": "/srv/threads/thread-456/user-data", "type": "DirectoryOrCreate"}},
            ])
        );
    }

    #[test]
    fn without_host_paths_user_data_is_an_empty_dir() {
        let p = pod_json(&spec(None, None));
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "user-data", "emptyDir": {}}])
        );
    }
}
