//! The sandbox Pod.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, Pod, PodSecurityContext,
        PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
    jiff::Timestamp,
};

use super::{
    labels::{
        metadata, pod_name, IDLE_ANNOTATION, LIMITS_ANNOTATION, REQUEST_ANNOTATION,
        SANDBOX_CONTAINER, SHELL_SESSIONS_ANNOTATION, SHELL_SESSIONS_ENV, SKILLS_PATH_ANNOTATION,
        TENANT_LABEL, TTL_ANNOTATION, USER_ANNOTATION,
    },
    volumes::pod_volumes,
};
use crate::{
    sandbox::SandboxRequest,
    spec::{PodSecurity, SandboxSpec, SandboxUrls, Seccomp},
};

fn quantities(values: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!values.is_empty()).then(|| {
        values
            .iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

/// The path the kubelet probes: `/v1/sandbox`, or `/v1/ping` (which the image leaves open)
/// when the sandbox demands a key the kubelet does not have.
fn probe_path(t: &SandboxSpec) -> &'static str {
    match upstream_key_on(t) {
        true => "/v1/ping",
        false => "/v1/sandbox",
    }
}

fn upstream_key_on(t: &SandboxSpec) -> bool {
    t.upstream_key && matches!(t.urls, SandboxUrls::Gateway(_))
}

/// The environment variable the sandbox image reads its API key from.
pub const SANDBOX_API_KEY_ENV: &str = "SANDBOX_API_KEY";

fn probe(path: &str, port: i32, initial_delay: u32, period: u32, failure_threshold: u32) -> Probe {
    let seconds = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(seconds(initial_delay)),
        period_seconds: Some(seconds(period)),
        timeout_seconds: Some(3),
        failure_threshold: Some(seconds(failure_threshold)),
        ..Probe::default()
    }
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
/// `..`-free) directories, checked extra mounts, and user and thread ids that cannot contain
/// `/` or `.`.
pub fn pod(t: &SandboxSpec, request: &SandboxRequest, created: Timestamp) -> Pod {
    let port = i32::from(t.port);
    // The Lark helpers get the sandbox's capabilities (they read credential files the backend
    // wrote) but never a way to gain more, as in DeerFlow's provisioner.
    let helper_security = SecurityContext {
        allow_privilege_escalation: Some(false),
        ..container_security_context(&t.security)
    };
    let volumes = pod_volumes(t, request, helper_security);
    let mut env: Vec<EnvVar> = request
        .max_shell_sessions
        .map(|n| EnvVar {
            name: SHELL_SESSIONS_ENV.into(),
            value: Some(n.to_string()),
            ..EnvVar::default()
        })
        .into_iter()
        .collect();
    env.extend(volumes.env);
    if let (true, SandboxUrls::Gateway(gateway)) = (upstream_key_on(t), &t.urls) {
        // Bound to this creation, as the URL is; readable by whoever may read the Pod.
        let key = gateway.keys.upstream_key(
            &request.tenant,
            request.id.as_str(),
            &created.as_nanosecond().to_string(),
        );
        env.push(EnvVar {
            name: SANDBOX_API_KEY_ENV.into(),
            value: Some(key),
            ..EnvVar::default()
        });
    }
    let probe_path = probe_path(t);
    let mut containers = vec![Container {
        name: SANDBOX_CONTAINER.into(),
        image: Some(t.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: quantities(&request.resources.requests),
            limits: quantities(&request.resources.limits),
            ..ResourceRequirements::default()
        }),
        startup_probe: t
            .probes
            .startup
            .map(|(period, failures)| probe(probe_path, port, 0, period, failures)),
        readiness_probe: Some(probe(
            probe_path,
            port,
            t.probes.readiness.0,
            t.probes.readiness.1,
            3,
        )),
        liveness_probe: Some(probe(
            probe_path,
            port,
            t.probes.liveness.0,
            t.probes.liveness.1,
            3,
        )),
        volume_mounts: Some(volumes.mounts),
        security_context: Some(container_security_context(&t.security)),
        ..Container::default()
    }];
    containers.extend(volumes.sidecars);
    let mut pod = Pod {
        metadata: metadata(
            pod_name(&request.id),
            &t.namespace,
            &request.id,
            &request.thread,
            created,
        ),
        spec: Some(PodSpec {
            containers,
            init_containers: (!volumes.init_containers.is_empty())
                .then_some(volumes.init_containers),
            volumes: Some(volumes.volumes),
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
    t.pod_template.apply(&mut pod);
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TENANT_LABEL.to_string(), request.tenant.clone());
    let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(USER_ANNOTATION.to_string(), request.user.to_string());
    // Quotas sum the limits; the watch cache keeps no pod specs.
    annotations.insert(
        LIMITS_ANNOTATION.to_string(),
        serde_json::to_string(&request.resources.limits).expect("a map of strings serializes"),
    );
    annotations.insert(
        REQUEST_ANNOTATION.to_string(),
        super::suspended::stored_request(request),
    );
    if let Some(n) = request.max_shell_sessions {
        annotations.insert(SHELL_SESSIONS_ANNOTATION.to_string(), n.to_string());
    }
    if let Some(path) = &request.skills_path {
        annotations.insert(SKILLS_PATH_ANNOTATION.to_string(), path.clone());
    }
    for (key, value) in [
        (TTL_ANNOTATION, request.timers.lifetime),
        (IDLE_ANNOTATION, request.timers.idle),
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
    use crate::{
        k8s::manifests::{CREATED_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, THREAD_ANNOTATION},
        sandbox::{mounts::*, ExtraMount, LarkRequest, UserId},
        spec::{LarkImages, SkillsMount, SubPathTemplate, UserDataMount},
    };

    /// The JSON of a pod, or of the default pod of a spec.
    trait AsJson {
        fn json(&self) -> serde_json::Value;
    }
    impl AsJson for SandboxSpec {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(a_pod(self)).unwrap()
        }
    }
    impl AsJson for Pod {
        fn json(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap()
        }
    }
    fn pod_json(of: &impl AsJson) -> serde_json::Value {
        of.json()
    }
    fn volume_names(pod: &serde_json::Value) -> Vec<&str> {
        let volumes = pod["spec"]["volumes"]
            .as_array()
            .expect("the pod has volumes");
        volumes
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect()
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
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"],
                "add": ["CHOWN", "SETUID"]}})
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
        let probe = |d: i64, p: i64, f: i64| {
            json!({"httpGet": {"path": "/v1/sandbox", "port": 8080}, "initialDelaySeconds": d,
                   "periodSeconds": p, "timeoutSeconds": 3, "failureThreshold": f})
        };
        // A startup probe finds a booted sandbox within a second; readiness and liveness
        // follow it without delays of their own.
        assert_eq!(c["startupProbe"], probe(0, 1, 120));
        assert_eq!(c["readinessProbe"], probe(0, 5, 3));
        assert_eq!(c["livenessProbe"], probe(0, 10, 3));
        // DeerFlow's own timings stay reachable.
        let mut old = t.clone();
        old.probes = crate::spec::ProbeTimings::DEERFLOW;
        let o = pod_json(&old);
        let c = &o["spec"]["containers"][0];
        assert!(c["startupProbe"].is_null());
        assert_eq!(c["readinessProbe"], probe(5, 5, 3));
        assert_eq!(c["livenessProbe"], probe(10, 10, 3));
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
                {"name": "user-data", "hostPath": {"path": "/srv/threads/thread-456/user-data",
                    "type": "DirectoryOrCreate"}},
            ])
        );
    }

    fn extra(host: &str, container: &'static str, read_only: bool) -> ExtraMount {
        ExtraMount {
            host_path: format!("/.deer-flow/{host}"),
            below_base: host.into(),
            container_path: container.into(),
            read_only,
        }
    }

    fn per_user_spec() -> SandboxSpec {
        let mut t = spec(Some("/.deer-flow/threads"), None);
        t.skills = SkillsMount::PerUser {
            base: "/.deer-flow".into(),
        };
        t
    }

    fn alice() -> SandboxRequest {
        let mut request = a_request();
        request.user = UserId::parse("alice").unwrap();
        request
    }

    #[test]
    fn per_user_skills_take_deerflows_three_way_layout() {
        let p = pod_json(&pod_of(&per_user_spec(), &alice()));
        assert_eq!(
            p["spec"]["volumes"],
            json!([
                {"name": "skills-public", "hostPath": {"path": "/.deer-flow/skills_view/public",
                    "type": "Directory"}},
                {"name": "skills-custom",
                    "hostPath": {"path": "/.deer-flow/users/alice/skills_view/custom",
                        "type": "Directory"}},
                {"name": "skills-legacy",
                    "hostPath": {"path": "/.deer-flow/users/alice/skills_view/legacy",
                        "type": "Directory"}},
                {"name": "user-data",
                    "hostPath": {"path": "/.deer-flow/threads/thread-456/user-data",
                        "type": "DirectoryOrCreate"}},
            ])
        );
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"],
            json!([
                {"name": "skills-public", "mountPath": "/mnt/skills/public", "readOnly": true},
                {"name": "skills-custom", "mountPath": "/mnt/skills/custom", "readOnly": true},
                {"name": "skills-legacy", "mountPath": "/mnt/skills/legacy", "readOnly": true},
                {"name": "user-data", "mountPath": "/mnt/user-data", "readOnly": false},
            ])
        );
        assert_eq!(p["metadata"]["annotations"][USER_ANNOTATION], "alice");
    }

    #[test]
    fn extra_mounts_are_host_paths_and_the_backends_custom_skills_win() {
        let mut request = alice();
        request.extra_mounts = vec![
            extra(
                "users/alice/threads/t/acp-workspace",
                ACP_WORKSPACE_PATH,
                true,
            ),
            extra("users/alice/custom", CUSTOM_SKILLS_PATH, true),
            extra("users/alice/lark/locks", LARK_LOCKS_PATH, false),
        ];
        let p = pod_json(&pod_of(&per_user_spec(), &request));
        let volumes = &p["spec"]["volumes"];
        let names = volume_names(&p);
        assert_eq!(
            names,
            [
                "skills-public",
                "skills-legacy",
                "user-data",
                "extra-0",
                "extra-1",
                "extra-2"
            ]
        );
        assert_eq!(
            volumes[3],
            json!({"name": "extra-0",
                "hostPath": {"path": "/.deer-flow/users/alice/threads/t/acp-workspace",
                    "type": "Directory"}})
        );
        assert_eq!(
            volumes[5],
            json!({"name": "extra-2", "hostPath": {"path": "/.deer-flow/users/alice/lark/locks",
                "type": "DirectoryOrCreate"}})
        );
        let mounts = &p["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(
            mounts[3],
            json!({"name": "extra-0", "mountPath": "/mnt/acp-workspace", "readOnly": true})
        );
        assert_eq!(
            mounts[4],
            json!({"name": "extra-1", "mountPath": "/mnt/skills/custom", "readOnly": true})
        );
        assert_eq!(
            mounts[5],
            json!({"name": "extra-2", "mountPath": LARK_LOCKS_PATH, "readOnly": false})
        );
    }

    #[test]
    fn in_claim_mode_user_data_and_extra_mounts_are_sub_paths_of_the_claim() {
        let mut t = spec(None, None);
        t.user_data = UserDataMount::Claim {
            name: "home".into(),
            sub_path: SubPathTemplate::parse(crate::spec::sub_path::DEFAULT_USER_DATA_TEMPLATE)
                .unwrap(),
        };
        t.skills = SkillsMount::Claim {
            name: "skills".into(),
            sub_path: Some(SubPathTemplate::parse("views/{user_id}").unwrap()),
        };
        let mut request = alice();
        request.extra_mounts = vec![extra("users/alice/acp", ACP_WORKSPACE_PATH, true)];
        let p = pod_json(&pod_of(&t, &request));
        assert_eq!(
            p["spec"]["volumes"],
            json!([
                {"name": "skills", "persistentVolumeClaim": {"claimName": "skills",
                    "readOnly": true}},
                {"name": "user-data", "persistentVolumeClaim": {"claimName": "home",
                    "readOnly": false}},
                {"name": "extra-0", "persistentVolumeClaim": {"claimName": "home",
                    "readOnly": false}},
            ])
        );
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"],
            json!([
                {"name": "skills", "mountPath": "/mnt/skills", "readOnly": true,
                    "subPath": "views/alice"},
                {"name": "user-data", "mountPath": "/mnt/user-data", "readOnly": false,
                    "subPath": "deer-flow/users/alice/threads/thread-456/user-data"},
                {"name": "extra-0", "mountPath": "/mnt/acp-workspace", "readOnly": true,
                    "subPath": "deer-flow/users/alice/acp"},
            ])
        );
    }

    fn lark_request() -> SandboxRequest {
        let mut request = alice();
        request.extra_mounts = vec![
            extra("lark/runtime", LARK_RUNTIME_PATH, true),
            extra("lark/config", LARK_CONFIG_PATH, true),
            extra("lark/config/locks", LARK_LOCKS_PATH, false),
            extra("lark/data", LARK_DATA_PATH, false),
        ];
        request.lark = LarkRequest {
            runtime: true,
            broker: false,
        };
        request
    }

    fn lark_spec() -> SandboxSpec {
        let mut t = spec(Some("/.deer-flow/threads"), None);
        t.lark = LarkImages {
            init_image: Some("lark-init:1".into()),
            broker_image: Some("lark-broker:1".into()),
            broker_deny_subcommands: Some("config,auth".into()),
        };
        t
    }

    #[test]
    fn lark_runtime_is_staged_by_an_init_container_and_replaces_its_extra_mount() {
        let p = pod_json(&pod_of(&lark_spec(), &lark_request()));
        let helper = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"],
            "add": ["CHOWN", "SETUID"]}});
        assert_eq!(
            p["spec"]["initContainers"],
            json!([{
                "name": "lark-cli-init", "image": "lark-init:1", "imagePullPolicy": "IfNotPresent",
                "env": [{"name": "LARK_CLI_RUNTIME_DEST", "value": LARK_RUNTIME_PATH}],
                "volumeMounts": [{"name": "lark-cli-runtime", "mountPath": LARK_RUNTIME_PATH,
                    "readOnly": false}],
                "securityContext": helper,
            }])
        );
        let mounts = p["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .clone();
        let paths: Vec<&str> = mounts
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "/mnt/user-data",
                LARK_CONFIG_PATH,
                LARK_LOCKS_PATH,
                LARK_DATA_PATH,
                LARK_RUNTIME_PATH
            ]
        );
        assert_eq!(
            mounts[4],
            json!({"name": "lark-cli-runtime", "mountPath": LARK_RUNTIME_PATH, "readOnly": true})
        );
        assert!(p["spec"]["volumes"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "lark-cli-runtime", "emptyDir": {}})));
        assert_eq!(p["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn lark_broker_holds_the_credentials_and_the_sandbox_gets_only_the_shim() {
        let mut request = lark_request();
        request.lark.broker = true;
        let p = pod_json(&pod_of(&lark_spec(), &request));
        let helper = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"],
            "add": ["CHOWN", "SETUID"]}});
        assert_eq!(
            p["spec"]["initContainers"],
            json!([{
                "name": "lark-cli-shim-init", "image": "lark-broker:1",
                    "imagePullPolicy": "IfNotPresent",
                "args": ["install-shim", LARK_RUNTIME_PATH],
                "env": [{"name": "LARK_CLI_RUNTIME_DEST", "value": LARK_RUNTIME_PATH}],
                "volumeMounts": [{"name": "lark-cli-runtime", "mountPath": LARK_RUNTIME_PATH,
                    "readOnly": false}],
                "securityContext": helper,
            }])
        );
        let sandbox = &p["spec"]["containers"][0];
        assert_eq!(
            sandbox["volumeMounts"],
            json!([
                {"name": "user-data", "mountPath": "/mnt/user-data", "readOnly": false},
                {"name": "lark-cli-runtime", "mountPath": LARK_RUNTIME_PATH, "readOnly": true},
            ])
        );
        assert_eq!(
            sandbox["env"],
            json!([{"name": "DEERFLOW_LARK_BROKER_URL", "value": "http://127.0.0.1:8788"}])
        );
        assert_eq!(
            p["spec"]["containers"][1],
            json!({
                "name": "lark-cli-broker", "image": "lark-broker:1",
                    "imagePullPolicy": "IfNotPresent",
                "args": ["serve"],
                "env": [
                    {"name": "LARKSUITE_CLI_CONFIG_DIR", "value": "/var/lark/config"},
                    {"name": "LARKSUITE_CLI_DATA_DIR", "value": "/var/lark/data"},
                    {"name": "DEERFLOW_LARK_BROKER_DENY_SUBCOMMANDS", "value": "config,auth"},
                ],
                "volumeMounts": [
                    {"name": "lark-cli-config", "mountPath": "/var/lark/config", "readOnly": true},
                    {"name": "lark-cli-locks", "mountPath": "/var/lark/config/locks",
                        "readOnly": false},
                    {"name": "lark-cli-data", "mountPath": "/var/lark/data", "readOnly": false},
                ],
                "securityContext": helper,
            })
        );
        let names = volume_names(&p);
        assert_eq!(
            names,
            [
                "user-data",
                "lark-cli-runtime",
                "lark-cli-config",
                "lark-cli-locks",
                "lark-cli-data"
            ]
        );
        assert_eq!(
            p["spec"]["volumes"][2],
            json!({"name": "lark-cli-config", "hostPath": {"path": "/.deer-flow/lark/config",
                "type": "Directory"}})
        );
    }

    #[test]
    fn lark_requests_without_images_change_nothing() {
        let mut request = lark_request();
        request.lark.broker = true;
        let p = pod_json(&pod_of(&spec(Some("/.deer-flow/threads"), None), &request));
        assert!(p["spec"]["initContainers"].is_null());
        assert_eq!(p["spec"]["containers"].as_array().unwrap().len(), 1);
        let mounts = p["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(mounts, 5, "user data and the four extra mounts");
    }

    #[test]
    fn shell_capacity_is_the_containers_environment() {
        let mut request = a_request();
        request.max_shell_sessions = Some(32);
        let p = pod_json(&pod_of(&spec(None, None), &request));
        assert_eq!(
            p["spec"]["containers"][0]["env"],
            json!([{"name": "MAX_SHELL_SESSIONS", "value": "32"}])
        );
        assert!(pod_json(&spec(None, None))["spec"]["containers"][0]["env"].is_null());
    }

    #[test]
    fn without_host_paths_user_data_is_an_empty_dir() {
        let p = pod_json(&spec(None, None));
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "user-data", "emptyDir": {}}])
        );
    }

    #[test]
    fn a_per_sandbox_key_goes_into_the_env_and_the_probes_move_to_ping() {
        let mut t = spec(None, None);
        let urls = std::sync::Arc::new(crate::spec::GatewayUrls {
            public_url: "http://p:8002".into(),
            keys: crate::spec::GatewayKeys::new(b"0123456789abcdef0123456789abcdef", None),
        });
        t.urls = SandboxUrls::Gateway(urls.clone());
        let without = pod_json(&t);
        let c = &without["spec"]["containers"][0];
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/v1/sandbox");
        assert!(c["env"].is_null(), "no key unless asked for");
        t.upstream_key = true;
        let request = a_request();
        let created = Timestamp::from_second(1_800_000_000).unwrap();
        let p = serde_json::to_value(pod(&t, &request, created)).unwrap();
        let c = &p["spec"]["containers"][0];
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["httpGet"]["path"], "/v1/ping", "{probe}");
        }
        let key = urls.keys.upstream_key(
            &request.tenant,
            request.id.as_str(),
            &created.as_nanosecond().to_string(),
        );
        assert_eq!(
            c["env"],
            json!([{"name": SANDBOX_API_KEY_ENV, "value": key}])
        );
        // Bound to the creation, as the URL is.
        let later = serde_json::to_value(pod(
            &t,
            &request,
            created + jiff::SignedDuration::from_secs(1),
        ))
        .unwrap();
        assert_ne!(later["spec"]["containers"][0]["env"], c["env"]);
    }
}
