//! The objects of a sandbox, built as pure functions, and read back into the API's view.
//!
//! Names, labels, mounts, resources and probes follow DeerFlow's provisioner so that existing
//! tooling (`kubectl get pod -l sandbox-id=...`) keeps working.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction,
        HostPathVolumeSource, Namespace, PersistentVolumeClaimVolumeSource, Pod,
        PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
        Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
    jiff::Timestamp,
};

use super::{
    network_policy::{isolated_spec, NetworkPolicyMode},
    placement::Placement,
};
use crate::{
    config::{Config, PodSecurity, Seccomp, ServiceType},
    sandbox::{Resources, Sandbox, SandboxId, SandboxStatus, ThreadId, Timers},
};
use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicySpec},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};

/// Port the seed's sandbox image serves its API on (the default of SANDBOX_CONTAINER_PORT).
pub const SANDBOX_PORT: i32 = 8080;
/// Label every sandbox object carries with its id (the seed's selector).
pub const SANDBOX_ID_LABEL: &str = "sandbox-id";
/// Marks objects this service manages; nothing without it is ever touched.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sandbox-provisioner";
/// The thread the sandbox was created for (annotation: thread ids need not be label-safe).
pub const THREAD_ANNOTATION: &str = "sandbox-provisioner.dev/thread-id";
/// When the provisioner created the sandbox (RFC 3339).
pub const CREATED_ANNOTATION: &str = "sandbox-provisioner.dev/created-at";
/// The sandbox's lifetime in seconds (absent: none).
pub const TTL_ANNOTATION: &str = "sandbox-provisioner.dev/ttl-seconds";
/// The sandbox's idle timeout in seconds (absent: none).
pub const IDLE_ANNOTATION: &str = "sandbox-provisioner.dev/idle-timeout-seconds";
/// The last activity a provisioner wrote down (RFC 3339), at a bounded rate.
pub const ACTIVITY_ANNOTATION: &str = "sandbox-provisioner.dev/last-activity";

/// What every sandbox shares, taken from the configuration once.
#[derive(Debug, Clone)]
pub struct SandboxTemplate {
    pub namespace: String,
    pub image: String,
    pub skills_host_path: Option<String>,
    pub threads_host_path: Option<String>,
    pub skills_pvc: Option<(String, Option<String>)>,
    pub userdata_pvc: Option<String>,
    pub placement: Placement,
    pub network_policy: NetworkPolicyMode,
    /// Resources of the default size (for the start-up dry run).
    pub default_resources: Resources,
    /// The configured timers (ceilings and defaults of the per-request ones).
    pub timers: Timers,
    /// How often, at most, activity is written to a pod.
    pub activity_persist_interval: std::time::Duration,
    /// Age after which the sweeper acts on an orphan.
    pub orphan_grace: std::time::Duration,
    /// How long past its idle deadline (as this replica knows it) a sandbox is kept: with
    /// several replicas, activity another replica saw may not be written to the pod yet, but
    /// is at most one persist interval newer than what is (zero for a single replica).
    pub idle_grace: std::time::Duration,
    pub security: PodSecurity,
    /// Container port, probe port and service port.
    pub port: i32,
    pub service_type: ServiceType,
    /// Host of NodePort URLs.
    pub node_host: String,
}

impl SandboxTemplate {
    pub fn from_config(config: &Config) -> Self {
        SandboxTemplate {
            namespace: config.namespace.clone(),
            image: config.sandbox_image.clone(),
            skills_host_path: config.skills_host_path.clone(),
            threads_host_path: config.threads_host_path.clone(),
            skills_pvc: config.skills_pvc.clone(),
            userdata_pvc: config.userdata_pvc.clone(),
            placement: config.placement.clone(),
            network_policy: config.network_policy.clone(),
            default_resources: config
                .sizes
                .choose(None, None)
                .unwrap_or_else(|_| crate::sandbox::Sizes::seed_default()),
            timers: config.timers,
            activity_persist_interval: config.activity_persist_interval,
            orphan_grace: config.orphan_grace,
            idle_grace: if config.leader_lease.is_zero() {
                std::time::Duration::ZERO
            } else {
                config.activity_persist_interval
            },
            security: config.pod_security.clone(),
            port: i32::from(config.container_port),
            service_type: config.service_type,
            node_host: config.node_host.clone(),
        }
    }
}

pub fn pod_name(id: &SandboxId) -> String {
    format!("sandbox-{id}")
}

pub fn service_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-svc")
}

/// Label selector matching every object this service manages.
pub fn managed_selector() -> String {
    format!("app=deer-flow-sandbox,{MANAGED_BY_LABEL}={MANAGED_BY}")
}

fn labels(id: &SandboxId) -> BTreeMap<String, String> {
    [
        ("app", "deer-flow-sandbox"),
        (SANDBOX_ID_LABEL, id.as_str()),
        ("app.kubernetes.io/name", "deer-flow"),
        ("app.kubernetes.io/component", "sandbox"),
        (MANAGED_BY_LABEL, MANAGED_BY),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn metadata(
    name: String,
    t: &SandboxTemplate,
    id: &SandboxId,
    thread: &ThreadId,
    created: Timestamp,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(t.namespace.clone()),
        labels: Some(labels(id)),
        annotations: Some(BTreeMap::from([
            (THREAD_ANNOTATION.to_string(), thread.to_string()),
            (CREATED_ANNOTATION.to_string(), created.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

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
    t: &SandboxTemplate,
    id: &SandboxId,
    thread: &ThreadId,
    created: Timestamp,
    resources: &Resources,
    timers: &Timers,
) -> Pod {
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
    if let Some((name, sub_path)) = &t.skills_pvc {
        volumes.push(Volume {
            name: "skills".into(),
            persistent_volume_claim: claim(name, true),
            ..Volume::default()
        });
        mount("skills", "/mnt/skills", true, sub_path.clone());
    } else if let Some(skills) = &t.skills_host_path {
        volumes.push(Volume {
            name: "skills".into(),
            host_path: host_path(skills.clone(), "Directory"),
            ..Volume::default()
        });
        mount("skills", "/mnt/skills", true, None);
    }
    let (user_data, sub_path) = match (&t.userdata_pvc, &t.threads_host_path) {
        (Some(name), _) => (
            Volume {
                name: "user-data".into(),
                persistent_volume_claim: claim(name, false),
                ..Volume::default()
            },
            Some(format!("threads/{thread}/user-data")),
        ),
        (None, Some(threads)) => (
            Volume {
                name: "user-data".into(),
                host_path: host_path(format!("{threads}/{thread}/user-data"), "DirectoryOrCreate"),
                ..Volume::default()
            },
            None,
        ),
        (None, None) => (
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
        metadata: metadata(pod_name(id), t, id, thread, created),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "sandbox".into(),
                image: Some(t.image.clone()),
                image_pull_policy: Some("IfNotPresent".into()),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: t.port,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                resources: Some(ResourceRequirements {
                    requests: quantities(&resources.requests),
                    limits: quantities(&resources.limits),
                    ..ResourceRequirements::default()
                }),
                readiness_probe: Some(probe(t.port, 5, 5)),
                liveness_probe: Some(probe(t.port, 10, 10)),
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

/// The timers a pod was created with (the ready timeout is the service's own).
pub fn timers_of(pod: &Pod, ready: std::time::Duration) -> Timers {
    let seconds = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_secs)
            .unwrap_or_default()
    };
    Timers {
        lifetime: seconds(TTL_ANNOTATION),
        idle: seconds(IDLE_ANNOTATION),
        ready,
    }
}

/// When the pod was created, by the provisioner's annotation or the apiserver's timestamp.
pub fn created_of(pod: &Pod) -> Option<Timestamp> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CREATED_ANNOTATION))
        .and_then(|t| t.parse().ok())
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The last activity written on the pod, if any.
pub fn activity_of(pod: &Pod) -> Option<Timestamp> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ACTIVITY_ANNOTATION))
        .and_then(|t| t.parse().ok())
}

/// What each sandbox's own policy allows, as configured (its pod selector still to be set).
fn sandbox_policy_spec(t: &SandboxTemplate) -> Option<NetworkPolicySpec> {
    match &t.network_policy {
        NetworkPolicyMode::None => None,
        NetworkPolicyMode::Isolated {
            ingress_from,
            egress_deny,
        } => Some(isolated_spec(t.port, ingress_from, egress_deny)),
        NetworkPolicyMode::Template(spec) => Some(spec.clone()),
    }
}

/// Name of the namespace-wide policy that denies sandboxes what their own policies do not allow.
pub const BASELINE_POLICY_NAME: &str = "sandbox-provisioner-baseline";

/// With network policies on: one policy selecting every managed sandbox pod and allowing
/// nothing in the directions the sandbox policies govern. Policies add up, so a sandbox gets
/// exactly what its own policy allows, and a sandbox whose own policy is missing (a crash
/// between two writes, or the moment between its pod and its policy) gets nothing rather than
/// everything.
pub fn baseline_network_policy(t: &SandboxTemplate) -> Option<NetworkPolicy> {
    let governed = sandbox_policy_spec(t)?;
    // Kubernetes' own default when a spec names no policyTypes.
    let policy_types = governed.policy_types.clone().unwrap_or_else(|| {
        let mut types = vec!["Ingress".to_string()];
        if governed.egress.is_some() {
            types.push("Egress".to_string());
        }
        types
    });
    let selector = BTreeMap::from([
        ("app".to_string(), "deer-flow-sandbox".to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(BASELINE_POLICY_NAME.into()),
            namespace: Some(t.namespace.clone()),
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            policy_types: Some(policy_types),
            ..Default::default()
        }),
    })
}

pub fn network_policy_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-netpol")
}

/// The sandbox's NetworkPolicy, when the configuration asks for one; owned by the Pod so that
/// the Pod's deletion removes it.
pub fn network_policy(
    t: &SandboxTemplate,
    id: &SandboxId,
    thread: &ThreadId,
    owner: &Pod,
) -> Option<NetworkPolicy> {
    let mut spec = sandbox_policy_spec(t)?;
    spec.pod_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([
            ("app".to_string(), "deer-flow-sandbox".to_string()),
            (SANDBOX_ID_LABEL.to_string(), id.to_string()),
        ])),
        ..LabelSelector::default()
    });
    let mut metadata = metadata(network_policy_name(id), t, id, thread, Timestamp::now());
    metadata.annotations = owner.metadata.annotations.clone();
    metadata.owner_references = Some(vec![owner_reference(owner)]);
    Some(NetworkPolicy {
        metadata,
        spec: Some(spec),
    })
}

fn owner_reference(owner: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: owner.metadata.name.clone().unwrap_or_default(),
        uid: owner.metadata.uid.clone().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

/// The NodePort Service of a sandbox, owned by its Pod so that the Pod's deletion removes it.
pub fn service(t: &SandboxTemplate, id: &SandboxId, thread: &ThreadId, owner: &Pod) -> Service {
    let mut metadata = metadata(service_name(id), t, id, thread, Timestamp::now());
    metadata.annotations = owner.metadata.annotations.clone();
    metadata.owner_references = Some(vec![owner_reference(owner)]);
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(
                match t.service_type {
                    ServiceType::NodePort => "NodePort",
                    ServiceType::ClusterIp => "ClusterIP",
                }
                .into(),
            ),
            selector: Some(BTreeMap::from([
                ("app".to_string(), "deer-flow-sandbox".to_string()),
                (SANDBOX_ID_LABEL.to_string(), id.to_string()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: t.port,
                target_port: Some(IntOrString::Int(t.port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The sandbox namespace, labelled as DeerFlow's.
pub fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "deer-flow".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "sandbox".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The sandbox a managed object belongs to (its `sandbox-id` label).
pub fn sandbox_id_of(meta: &ObjectMeta) -> Option<String> {
    meta.labels.as_ref()?.get(SANDBOX_ID_LABEL).cloned()
}

/// The thread a sandbox object was created for.
pub fn thread_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(THREAD_ANNOTATION)
        .map(String::as_str)
}

/// Whether a Service belongs to this incarnation of the Pod (not to one deleted earlier).
pub fn owned_by(service: &Service, pod: &Pod) -> bool {
    meta_owned_by(&service.metadata, pod)
}

/// Whether an object belongs to this incarnation of the Pod.
pub fn meta_owned_by(meta: &ObjectMeta, pod: &Pod) -> bool {
    let uid = pod.metadata.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Pod" && Some(r.uid.as_str()) == uid)
}

/// Where the backend reaches the sandbox through its Service: the node port on NODE_HOST, or
/// the Service's cluster DNS name.
fn sandbox_url(service: &Service, t: &SandboxTemplate) -> Option<String> {
    match t.service_type {
        ServiceType::NodePort => node_port(service).map(|p| format!("http://{}:{p}", t.node_host)),
        ServiceType::ClusterIp => {
            let name = service.metadata.name.as_deref()?;
            Some(format!(
                "http://{name}.{}.svc.cluster.local:{}",
                t.namespace, t.port
            ))
        }
    }
}

/// The node port the backend reaches the sandbox on.
pub fn node_port(service: &Service) -> Option<i32> {
    service
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))?
        .node_port
}

/// The API's view of a sandbox, from its Pod and (when present) its Service.
pub fn sandbox_view(
    id: &str,
    pod: &Pod,
    service: Option<&Service>,
    t: &SandboxTemplate,
) -> Sandbox {
    let mut status = SandboxStatus::of(pod);
    let url = service
        .filter(|s| owned_by(s, pod))
        .and_then(|s| sandbox_url(s, t));
    if url.is_none() && status.reason.is_none() {
        status.reason = Some("ServiceMissing".into());
        status.message =
            Some("the sandbox's Service is missing; POST /api/sandboxes again to repair it".into());
    }
    Sandbox {
        sandbox_id: id.to_string(),
        sandbox_url: url.unwrap_or_default(),
        status: status.phase,
        ready: status.ready,
        reason: status.reason,
        message: status.message,
        thread_id: thread_of(&pod.metadata).map(str::to_string),
        created_at: created_of(pod).map(|t| t.to_string()),
        expires_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strict() -> PodSecurity {
        PodSecurity {
            automount_service_account_token: false,
            enable_service_links: false,
            seccomp: Seccomp::RuntimeDefault,
            allow_privilege_escalation: false,
            capabilities_drop: vec!["ALL".into()],
            capabilities_add: vec!["CHOWN".into(), "SETUID".into()],
        }
    }

    #[test]
    fn the_baseline_policy_denies_what_the_sandbox_policies_govern() {
        let mut t = template(None, None);
        assert!(
            baseline_network_policy(&t).is_none(),
            "none without policies"
        );
        t.network_policy = NetworkPolicyMode::Isolated {
            ingress_from: vec![],
            egress_deny: vec!["10.0.0.0/8".into()],
        };
        let v = serde_json::to_value(baseline_network_policy(&t).unwrap()).unwrap();
        assert_eq!(v["metadata"]["name"], BASELINE_POLICY_NAME);
        assert_eq!(
            v["spec"]["podSelector"]["matchLabels"],
            json!({"app": "deer-flow-sandbox", MANAGED_BY_LABEL: MANAGED_BY})
        );
        assert_eq!(v["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert!(v["spec"].get("ingress").is_none() && v["spec"].get("egress").is_none());
        assert!(
            v["metadata"]["labels"].get(SANDBOX_ID_LABEL).is_none(),
            "not any one sandbox's"
        );
        // A template that governs ingress only leaves egress alone.
        t.network_policy =
            NetworkPolicyMode::Template(serde_json::from_value(json!({"ingress": [{}]})).unwrap());
        let v = serde_json::to_value(baseline_network_policy(&t).unwrap()).unwrap();
        assert_eq!(v["spec"]["policyTypes"], json!(["Ingress"]));
    }

    fn template(threads: Option<&str>, skills: Option<&str>) -> SandboxTemplate {
        SandboxTemplate {
            namespace: "deer-flow".into(),
            image: "img:1".into(),
            skills_host_path: skills.map(Into::into),
            threads_host_path: threads.map(Into::into),
            skills_pvc: None,
            userdata_pvc: None,
            placement: Placement::default(),
            network_policy: NetworkPolicyMode::None,
            default_resources: crate::sandbox::Sizes::seed_default(),
            timers: Timers::default(),
            activity_persist_interval: std::time::Duration::from_secs(30),
            orphan_grace: std::time::Duration::from_secs(60),
            idle_grace: std::time::Duration::ZERO,
            security: strict(),
            port: SANDBOX_PORT,
            service_type: ServiceType::NodePort,
            node_host: "host.docker.internal".into(),
        }
    }

    #[test]
    fn pod_is_locked_down_by_default() {
        let (id, thread) = ids();
        let p = serde_json::to_value(pod(
            &template(None, None),
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        ))
        .unwrap();
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
        let (id, thread) = ids();
        let mut t = template(None, None);
        t.security = PodSecurity {
            automount_service_account_token: true,
            enable_service_links: true,
            seccomp: Seccomp::Localhost("p.json".into()),
            allow_privilege_escalation: true,
            capabilities_drop: vec![],
            capabilities_add: vec![],
        };
        let p = serde_json::to_value(pod(
            &t,
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        ))
        .unwrap();
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

    fn ids() -> (SandboxId, ThreadId) {
        (
            SandboxId::parse("abc-123").unwrap(),
            ThreadId::parse("thread-456").unwrap(),
        )
    }

    #[test]
    fn pod_matches_the_seed() {
        let (id, thread) = ids();
        let t = template(Some("/srv/threads"), Some("/srv/skills"));
        let p = serde_json::to_value(pod(
            &t,
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        ))
        .unwrap();
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
        let (id, thread) = ids();
        let p = serde_json::to_value(pod(
            &template(None, None),
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        ))
        .unwrap();
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "user-data", "emptyDir": {}}])
        );
    }

    #[test]
    fn service_is_nodeport_owned_by_the_pod() {
        let (id, thread) = ids();
        let t = template(None, None);
        let mut owner = pod(
            &t,
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        );
        owner.metadata.uid = Some("uid-1".into());
        let s = service(&t, &id, &thread, &owner);
        assert!(owned_by(&s, &owner));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["metadata"]["name"], "sandbox-abc-123-svc");
        assert_eq!(v["spec"]["type"], "NodePort");
        assert_eq!(
            v["spec"]["selector"],
            json!({"app": "deer-flow-sandbox", "sandbox-id": "abc-123"})
        );
        assert_eq!(
            v["spec"]["ports"],
            json!([{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}])
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["metadata"]["labels"]["sandbox-id"], "abc-123");
        owner.metadata.uid = Some("uid-2".into());
        assert!(!owned_by(&s, &owner));
    }

    #[test]
    fn view_builds_the_url_from_the_node_port() {
        let (id, thread) = ids();
        let t = template(None, None);
        let mut p = pod(
            &t,
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        );
        p.metadata.uid = Some("u".into());
        let mut s = service(&t, &id, &thread, &p);
        s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(32123);
        let v = sandbox_view("abc-123", &p, Some(&s), &t);
        assert_eq!(v.sandbox_url, "http://host.docker.internal:32123");
        assert_eq!(v.thread_id.as_deref(), Some("thread-456"));
        assert_eq!(v.created_at.as_deref(), Some("1970-01-01T00:00:00Z"));
        let missing = sandbox_view("abc-123", &p, None, &t);
        assert_eq!(missing.sandbox_url, "");
        assert_eq!(missing.reason.as_deref(), Some("ServiceMissing"));
    }

    #[test]
    fn cluster_ip_mode_uses_the_dns_name_and_the_configured_port() {
        let (id, thread) = ids();
        let mut t = template(None, None);
        t.service_type = ServiceType::ClusterIp;
        t.port = 9090;
        let mut p = pod(
            &t,
            &id,
            &thread,
            Timestamp::UNIX_EPOCH,
            &crate::sandbox::Sizes::seed_default(),
            &Timers::default(),
        );
        p.metadata.uid = Some("u".into());
        let s = service(&t, &id, &thread, &p);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["spec"]["type"], "ClusterIP");
        assert_eq!(v["spec"]["ports"][0]["port"], 9090);
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 9090);
        let pv = serde_json::to_value(&p).unwrap();
        assert_eq!(
            pv["spec"]["containers"][0]["ports"][0]["containerPort"],
            9090
        );
        assert_eq!(
            pv["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
            9090
        );
        let view = sandbox_view("abc-123", &p, Some(&s), &t);
        assert_eq!(
            view.sandbox_url,
            "http://sandbox-abc-123-svc.deer-flow.svc.cluster.local:9090"
        );
    }
}
