//! What a sandbox pod mounts: skills, user data, the backend's extra mounts and the Lark CLI
//! helpers, laid out as DeerFlow's provisioner lays them out (names, paths, order).
//!
//! Collisions are settled here, once: an extra mount at /mnt/skills/custom replaces the
//! service's own per-user custom skills (the backend knows its layout best), and a Lark helper
//! the service provisions replaces the extra mounts it supersedes (DeerFlow's rule: the runtime
//! directory for pattern A; runtime, config, locks and data for pattern B).

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    PersistentVolumeClaimVolumeSource, SecurityContext, Volume, VolumeMount,
};

use super::labels::LARK_BROKER_URL_ENV;
use crate::{
    sandbox::{
        mounts::{
            CUSTOM_SKILLS_PATH, LARK_CONFIG_PATH, LARK_DATA_PATH, LARK_LOCKS_PATH,
            LARK_RUNTIME_PATH,
        },
        ExtraMount, SandboxRequest,
    },
    spec::{SandboxSpec, SkillsMount, UserDataMount},
};

/// The emptyDir the Lark init container fills and the sandbox reads.
pub const LARK_RUNTIME_VOLUME: &str = "lark-cli-runtime";
/// The broker sidecar's container.
pub const LARK_BROKER_CONTAINER: &str = "lark-cli-broker";
/// Where the broker sidecar listens; the sandbox's shim finds it in DEERFLOW_LARK_BROKER_URL.
pub const LARK_BROKER_URL: &str = "http://127.0.0.1:8788";
/// The credential mounts that move from the sandbox to the broker: (extra mount path, volume,
/// path in the sidecar).
const BROKER_CREDENTIALS: [(&str, &str, &str); 3] = [
    (LARK_CONFIG_PATH, "lark-cli-config", "/var/lark/config"),
    (LARK_LOCKS_PATH, "lark-cli-locks", "/var/lark/config/locks"),
    (LARK_DATA_PATH, "lark-cli-data", "/var/lark/data"),
];

/// The volumes of a pod and what each of its containers mounts and adds.
#[derive(Debug, Default)]
pub(super) struct PodVolumes {
    pub volumes: Vec<Volume>,
    /// Mounts of the sandbox container.
    pub mounts: Vec<VolumeMount>,
    /// Environment the sandbox container gets from the helpers.
    pub env: Vec<EnvVar>,
    pub init_containers: Vec<Container>,
    pub sidecars: Vec<Container>,
}

fn host_path(name: &str, path: String, type_: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path,
            type_: Some(type_.to_string()),
        }),
        ..Volume::default()
    }
}

fn claim(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: Some(read_only),
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool, sub_path: Option<String>) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        sub_path,
        ..VolumeMount::default()
    }
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// An extra mount's volume: the user-data claim in claim mode, else the host directory
/// (which must exist when read-only, DeerFlow's rule).
fn extra_volume(t: &SandboxSpec, name: &str, extra: &ExtraMount) -> (Volume, Option<String>) {
    match &t.user_data {
        UserDataMount::Claim {
            name: claim_name, ..
        } => (
            claim(name, claim_name, false),
            Some(format!("deer-flow/{}", extra.below_base)),
        ),
        _ => {
            let type_ = if extra.read_only {
                "Directory"
            } else {
                "DirectoryOrCreate"
            };
            (host_path(name, extra.host_path.clone(), type_), None)
        }
    }
}

/// Every volume of the sandbox pod. `helper_security` is the security context of the Lark
/// helper containers.
pub(super) fn pod_volumes(
    t: &SandboxSpec,
    request: &SandboxRequest,
    helper_security: SecurityContext,
) -> PodVolumes {
    let mut out = PodVolumes::default();
    let lark = t.lark.effective(request.lark);
    let superseded: &[&str] = if lark.broker {
        &[
            LARK_RUNTIME_PATH,
            LARK_CONFIG_PATH,
            LARK_LOCKS_PATH,
            LARK_DATA_PATH,
        ]
    } else if lark.runtime {
        &[LARK_RUNTIME_PATH]
    } else {
        &[]
    };
    let extras: Vec<&ExtraMount> = request
        .extra_mounts
        .iter()
        .filter(|m| !superseded.contains(&m.container_path.as_str()))
        .collect();

    // A request with a skills path of its own brings its skills as extra mounts.
    let own_skills = if request.skills_path.is_some() {
        &SkillsMount::None
    } else {
        &t.skills
    };
    match own_skills {
        SkillsMount::None => {}
        SkillsMount::Claim { name, sub_path } => {
            out.volumes.push(claim("skills", name, true));
            let sub_path = sub_path
                .as_ref()
                .map(|s| s.render(&request.user, &request.thread));
            out.mounts
                .push(mount("skills", "/mnt/skills", true, sub_path));
        }
        SkillsMount::HostPath(skills) => {
            out.volumes
                .push(host_path("skills", skills.clone(), "Directory"));
            out.mounts.push(mount("skills", "/mnt/skills", true, None));
        }
        SkillsMount::PerUser { base } => {
            let user_view = format!("{base}/users/{}/skills_view", request.user);
            let custom_from_backend = extras
                .iter()
                .any(|m| m.container_path == CUSTOM_SKILLS_PATH);
            for (name, path, source) in [
                (
                    "skills-public",
                    "/mnt/skills/public",
                    format!("{base}/skills_view/public"),
                ),
                (
                    "skills-custom",
                    CUSTOM_SKILLS_PATH,
                    format!("{user_view}/custom"),
                ),
                (
                    "skills-legacy",
                    "/mnt/skills/legacy",
                    format!("{user_view}/legacy"),
                ),
            ] {
                if path == CUSTOM_SKILLS_PATH && custom_from_backend {
                    continue;
                }
                out.volumes.push(host_path(name, source, "Directory"));
                out.mounts.push(mount(name, path, true, None));
            }
        }
    }

    let (user_data, sub_path) = match &t.user_data {
        UserDataMount::Claim { name, sub_path } => (
            claim("user-data", name, false),
            Some(sub_path.render(&request.user, &request.thread)),
        ),
        UserDataMount::HostPath(threads) => (
            host_path(
                "user-data",
                format!("{threads}/{}/user-data", request.thread),
                "DirectoryOrCreate",
            ),
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
    out.volumes.push(user_data);
    out.mounts
        .push(mount("user-data", "/mnt/user-data", false, sub_path));

    for (index, extra) in extras.iter().enumerate() {
        let name = format!("extra-{index}");
        let (volume, sub_path) = extra_volume(t, &name, extra);
        out.volumes.push(volume);
        out.mounts.push(mount(
            &name,
            &extra.container_path,
            extra.read_only,
            sub_path,
        ));
    }

    if lark.runtime || lark.broker {
        out.volumes.push(Volume {
            name: LARK_RUNTIME_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        out.mounts
            .push(mount(LARK_RUNTIME_VOLUME, LARK_RUNTIME_PATH, true, None));
        let (name, image, args) = if lark.broker {
            (
                "lark-cli-shim-init",
                t.lark.broker_image.clone(),
                Some(vec![
                    "install-shim".to_string(),
                    LARK_RUNTIME_PATH.to_string(),
                ]),
            )
        } else {
            ("lark-cli-init", t.lark.init_image.clone(), None)
        };
        out.init_containers.push(Container {
            name: name.into(),
            image,
            image_pull_policy: Some("IfNotPresent".into()),
            args,
            env: Some(vec![env("LARK_CLI_RUNTIME_DEST", LARK_RUNTIME_PATH)]),
            volume_mounts: Some(vec![mount(
                LARK_RUNTIME_VOLUME,
                LARK_RUNTIME_PATH,
                false,
                None,
            )]),
            security_context: Some(helper_security.clone()),
            ..Container::default()
        });
    }

    if lark.broker {
        let mut sidecar_mounts = Vec::new();
        for (path, volume_name, sidecar_path) in BROKER_CREDENTIALS {
            let Some(extra) = request
                .extra_mounts
                .iter()
                .find(|m| m.container_path == path)
            else {
                continue;
            };
            let (volume, sub_path) = extra_volume(t, volume_name, extra);
            out.volumes.push(volume);
            sidecar_mounts.push(mount(volume_name, sidecar_path, extra.read_only, sub_path));
        }
        let mut broker_env = vec![
            env("LARKSUITE_CLI_CONFIG_DIR", "/var/lark/config"),
            env("LARKSUITE_CLI_DATA_DIR", "/var/lark/data"),
        ];
        if let Some(deny) = &t.lark.broker_deny_subcommands {
            broker_env.push(env("DEERFLOW_LARK_BROKER_DENY_SUBCOMMANDS", deny));
        }
        out.sidecars.push(Container {
            name: LARK_BROKER_CONTAINER.into(),
            image: t.lark.broker_image.clone(),
            image_pull_policy: Some("IfNotPresent".into()),
            args: Some(vec!["serve".into()]),
            env: Some(broker_env),
            volume_mounts: Some(sidecar_mounts),
            security_context: Some(helper_security),
            ..Container::default()
        });
        out.env.push(env(LARK_BROKER_URL_ENV, LARK_BROKER_URL));
    }
    out
}
