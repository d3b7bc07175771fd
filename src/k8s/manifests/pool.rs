//! A warm pool's Pod, and the write that claims it for a sandbox.
//!
//! A pool Pod is the Pod a cold create of its size would make, with three differences: it
//! belongs to no sandbox or tenant yet (no `sandbox-id` or tenant label, none of the
//! provisioner's annotations), each late-bound path mounts the Pod's slot directory on the
//! node with `HostToContainer` propagation, and a readiness gate waits for the node agent.

use k8s_openapi::{
    api::core::v1::{HostPathVolumeSource, Pod, PodReadinessGate, Volume, VolumeMount},
    jiff::Timestamp,
};

use super::{
    labels::{ANNOTATION_PREFIX, SANDBOX_ID_LABEL, TENANT_LABEL},
    pod::pod,
};
use crate::{
    sandbox::{SandboxId, SandboxRequest, ThreadId},
    spec::{
        keys::{BINDS_ANNOTATION, DATA_BOUND_CONDITION, POOL_LABEL, POOL_POD_PREFIX},
        warm_pool::{slot_name, slot_paths, Bind, PoolClass},
        SandboxSpec,
    },
};

/// The name of a pool Pod: the pool and a random suffix (names are never reused, so a slot
/// directory always belongs to one Pod).
pub fn pool_pod_name(class: &str, suffix: &str) -> String {
    format!("{POOL_POD_PREFIX}{class}-{suffix}")
}

/// The slot directory of one late-bound path of a pool Pod on its node.
pub fn slot_dir(t: &SandboxSpec, pod: &str, container_path: &str) -> String {
    format!(
        "{}/{}/{pod}/{}",
        t.warm_pool.slot_root,
        t.namespace,
        slot_name(container_path)
    )
}

/// A started, unclaimed Pod of a pool.
pub fn pool_pod(t: &SandboxSpec, class: &PoolClass, name: &str, created: Timestamp) -> Pod {
    let placeholder = SandboxRequest {
        resources: class.resources.clone(),
        ..SandboxRequest::new(
            SandboxId::parse("pool").expect("a valid id"),
            ThreadId::parse("pool").expect("a valid id"),
        )
    };
    let mut pod = pod(t, &placeholder, created);
    pod.metadata.name = Some(name.to_string());
    if let Some(labels) = pod.metadata.labels.as_mut() {
        labels.remove(SANDBOX_ID_LABEL);
        labels.remove(TENANT_LABEL);
        labels.insert(POOL_LABEL.to_string(), class.name.clone());
    }
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|key, _| !key.starts_with(ANNOTATION_PREFIX));
    }
    let spec = pod.spec.as_mut().expect("the pod has a spec");
    let slots = slot_paths(t);
    let container = &mut spec.containers[0];
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    let replaced: Vec<String> = mounts
        .iter()
        .filter(|m| slots.contains(&m.mount_path.as_str()))
        .map(|m| m.name.clone())
        .collect();
    mounts.retain(|m| !replaced.contains(&m.name));
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.retain(|v| !replaced.contains(&v.name));
    for path in slots {
        let volume = slot_name(path);
        volumes.push(Volume {
            name: volume.clone(),
            host_path: Some(HostPathVolumeSource {
                path: slot_dir(t, name, path),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: path.to_string(),
            // What the agent binds here later appears inside; read-only is per bind.
            mount_propagation: Some("HostToContainer".into()),
            ..VolumeMount::default()
        });
    }
    spec.readiness_gates = Some(vec![PodReadinessGate {
        condition_type: DATA_BOUND_CONDITION.into(),
    }]);
    pod
}

/// The merge patch that claims a pool Pod for `request`: the labels and annotations a cold
/// create's Pod would carry, plus what the node agent binds, on the condition that the Pod is
/// still at `resource_version` (so that two claims of one Pod never both succeed).
pub fn claim_patch(
    t: &SandboxSpec,
    request: &SandboxRequest,
    binds: &[Bind],
    resource_version: &str,
    created: Timestamp,
) -> serde_json::Value {
    let cold = pod(t, request, created);
    let mut annotations = cold.metadata.annotations.unwrap_or_default();
    annotations.insert(
        BINDS_ANNOTATION.to_string(),
        serde_json::to_string(binds).expect("binds serialize"),
    );
    serde_json::json!({
        "metadata": {
            "resourceVersion": resource_version,
            "labels": cold.metadata.labels.unwrap_or_default(),
            "annotations": annotations,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{super::test_support::*, *};
    use crate::{
        k8s::{read as objects, record::PodRecord},
        sandbox::{mounts::USER_DATA_PATH, Sizes},
        spec::warm_pool::binds,
    };

    fn class() -> PoolClass {
        PoolClass {
            name: "default".into(),
            target: 2,
            resources: Sizes::deerflow_default(),
        }
    }

    #[test]
    fn a_pool_pod_belongs_to_no_one_and_mounts_slots_where_thread_data_goes() {
        let t = spec(Some("/data/threads"), Some("/skills"));
        let pod = pool_pod(
            &t,
            &class(),
            "sandbox-pool-default-abc",
            Timestamp::UNIX_EPOCH,
        );
        assert!(PodRecord::of(&pod).is_none(), "no sandbox id: never listed");
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[POOL_LABEL], "default");
        assert!(!labels.contains_key(TENANT_LABEL));
        assert!(pod.metadata.annotations.as_ref().unwrap().is_empty());
        let spec = pod.spec.as_ref().unwrap();
        let mounts = spec.containers[0].volume_mounts.as_ref().unwrap();
        let user_data = mounts
            .iter()
            .find(|m| m.mount_path == USER_DATA_PATH)
            .unwrap();
        assert_eq!(user_data.name, "slot-mnt-user-data");
        assert_eq!(
            user_data.mount_propagation.as_deref(),
            Some("HostToContainer")
        );
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "slot-mnt-user-data")
            .unwrap();
        assert_eq!(
            volume.host_path.as_ref().unwrap().path,
            "/var/lib/sandbox-provisioner/slots/deer-flow/sandbox-pool-default-abc/slot-mnt-user-data"
        );
        assert!(
            mounts.iter().any(|m| m.mount_path == "/mnt/skills"),
            "fixed skills stay as they are"
        );
        assert_eq!(
            spec.readiness_gates.as_ref().unwrap()[0].condition_type,
            DATA_BOUND_CONDITION
        );
        let mut paths: Vec<&str> = mounts.iter().map(|m| m.mount_path.as_str()).collect();
        let count = paths.len();
        paths.dedup();
        assert_eq!(paths.len(), count, "one mount per path");
    }

    #[test]
    fn a_claim_gives_the_pod_what_a_cold_create_would_and_is_conditional() {
        let t = spec(Some("/data/threads"), None);
        let request = a_request();
        let binds = binds(&t, &request).unwrap();
        let patch = claim_patch(&t, &request, &binds, "42", Timestamp::UNIX_EPOCH);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        let mut claimed = pool_pod(
            &t,
            &class(),
            "sandbox-pool-default-abc",
            Timestamp::UNIX_EPOCH,
        );
        claimed.metadata.uid = Some("uid-1".into());
        let meta = &mut claimed.metadata;
        for (key, value) in patch["metadata"]["labels"].as_object().unwrap() {
            meta.labels
                .get_or_insert_with(Default::default)
                .insert(key.clone(), value.as_str().unwrap().into());
        }
        for (key, value) in patch["metadata"]["annotations"].as_object().unwrap() {
            meta.annotations
                .get_or_insert_with(Default::default)
                .insert(key.clone(), value.as_str().unwrap().into());
        }
        let (id, record) = PodRecord::of(&claimed).expect("now a sandbox");
        assert_eq!(id, request.id.as_str());
        let cold = PodRecord::from_pod(&pod_of(&t, &request));
        assert_eq!(record.tenant, cold.tenant);
        assert_eq!(record.thread, cold.thread);
        assert_eq!(record.user, cold.user);
        assert_eq!(record.limits, cold.limits);
        assert_eq!(record.created, cold.created);
        assert_eq!(objects::tenant_of(&claimed.metadata), request.tenant);
        let bound: Vec<Bind> =
            serde_json::from_str(&claimed.metadata.annotations.as_ref().unwrap()[BINDS_ANNOTATION])
                .unwrap();
        assert_eq!(bound, binds);
    }
}

#[cfg(test)]
mod binds_tests {
    use crate::{
        k8s::manifests::test_support::{a_request, spec},
        sandbox::{
            mounts::{
                ACP_WORKSPACE_PATH, CUSTOM_SKILLS_PATH, INTEGRATION_SKILLS_PATH, USER_DATA_PATH,
            },
            ExtraMount, LarkRequest, Sizes,
        },
        spec::{warm_pool::*, LarkImages, SkillsMount},
    };

    fn pool() -> WarmPool {
        WarmPool {
            classes: vec![PoolClass {
                name: "default".into(),
                target: 3,
                resources: Sizes::deerflow_default(),
            }],
            ..WarmPool::default()
        }
    }

    fn acp(read_only: bool) -> ExtraMount {
        ExtraMount {
            host_path: "/base/users/u/threads/t/acp-workspace".into(),
            below_base: "users/u/threads/t/acp-workspace".into(),
            container_path: ACP_WORKSPACE_PATH.into(),
            read_only,
        }
    }

    #[test]
    fn a_plain_request_binds_the_same_directories_a_cold_create_mounts() {
        let mut t = spec(Some("/data/threads"), None);
        t.skills = SkillsMount::PerUser {
            base: "/base".into(),
        };
        let mut request = a_request();
        request.extra_mounts = vec![acp(true)];
        let pool = pool();
        let (class, binds) = pool.serving(&t, &request).unwrap();
        assert_eq!(class.name, "default");
        let user = request.user.as_str();
        assert_eq!(
            binds,
            [
                Bind {
                    path: USER_DATA_PATH.into(),
                    source: format!("/data/threads/{}/user-data", request.thread),
                    read_only: false
                },
                Bind {
                    path: CUSTOM_SKILLS_PATH.into(),
                    source: format!("/base/users/{user}/skills_view/custom"),
                    read_only: true
                },
                Bind {
                    path: LEGACY_SKILLS_PATH.into(),
                    source: format!("/base/users/{user}/skills_view/legacy"),
                    read_only: true
                },
                Bind {
                    path: ACP_WORKSPACE_PATH.into(),
                    source: "/base/users/u/threads/t/acp-workspace".into(),
                    read_only: true
                },
            ]
        );
        assert_eq!(
            slot_paths(&t),
            [
                USER_DATA_PATH,
                CUSTOM_SKILLS_PATH,
                LEGACY_SKILLS_PATH,
                ACP_WORKSPACE_PATH,
                INTEGRATION_SKILLS_PATH
            ]
        );
    }

    #[test]
    fn the_backends_custom_skills_replace_the_users_own() {
        let mut t = spec(None, None);
        t.skills = SkillsMount::PerUser {
            base: "/base".into(),
        };
        let mut request = a_request();
        let mut custom = acp(false);
        custom.container_path = CUSTOM_SKILLS_PATH.into();
        request.extra_mounts = vec![custom];
        let binds = binds(&t, &request).unwrap();
        let custom: Vec<_> = binds
            .iter()
            .filter(|b| b.path == CUSTOM_SKILLS_PATH)
            .collect();
        assert_eq!(custom.len(), 1);
        assert!(!custom[0].read_only, "the backend's own flag is kept");
        assert!(custom[0].source.ends_with("acp-workspace"));
    }

    #[test]
    fn whatever_is_fixed_at_pod_start_goes_cold_and_says_why() {
        let mut t = spec(Some("/data/threads"), None);
        t.lark = LarkImages {
            init_image: Some("init".into()),
            ..LarkImages::default()
        };
        let pool = pool();
        let mut bigger = a_request();
        bigger.resources.limits.insert("cpu".into(), "2".into());
        assert_eq!(pool.serving(&t, &bigger).unwrap_err(), ColdReason::Size);
        let mut shells = a_request();
        shells.max_shell_sessions = Some(8);
        assert_eq!(
            pool.serving(&t, &shells).unwrap_err(),
            ColdReason::ShellSessions
        );
        let mut lark = a_request();
        lark.lark = LarkRequest {
            runtime: true,
            broker: false,
        };
        assert_eq!(pool.serving(&t, &lark).unwrap_err(), ColdReason::Lark);
        let mut skills = a_request();
        skills.skills_path = Some("/mnt/thread-skills".into());
        assert_eq!(
            pool.serving(&t, &skills).unwrap_err(),
            ColdReason::SkillsPath
        );
        let mut lark_data = a_request();
        let mut data = acp(false);
        data.container_path = crate::sandbox::mounts::LARK_DATA_PATH.into();
        lark_data.extra_mounts = vec![data];
        assert_eq!(
            pool.serving(&t, &lark_data).unwrap_err(),
            ColdReason::Mount(crate::sandbox::mounts::LARK_DATA_PATH.into())
        );
        // The Lark request is fine where the images are not configured: it asks for nothing.
        assert!(pool.serving(&spec(None, None), &lark).is_ok());
    }

    #[test]
    fn nothing_is_mounted_below_a_single_skills_directory() {
        let t = spec(Some("/t"), Some("/skills"));
        assert_eq!(slot_paths(&t), [USER_DATA_PATH, ACP_WORKSPACE_PATH]);
        let mut request = a_request();
        request.extra_mounts = vec![ExtraMount {
            container_path: CUSTOM_SKILLS_PATH.into(),
            ..acp(true)
        }];
        assert_eq!(
            binds(&t, &request).unwrap_err(),
            ColdReason::Mount(CUSTOM_SKILLS_PATH.into())
        );
    }

    #[test]
    fn slot_names_are_volume_names() {
        for path in slot_paths(&spec(Some("/t"), None)) {
            let name = slot_name(path);
            assert!(crate::sandbox::is_dns_label(&name), "{name}");
        }
        assert_eq!(slot_name("/mnt/user-data"), "slot-mnt-user-data");
    }
}
