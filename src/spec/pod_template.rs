//! `SANDBOX_POD_TEMPLATE`: a partial Pod holding what the provisioner does not own (a runtime
//! class, tolerations, DNS settings, extra volumes, and for the container named `sandbox`
//! extra environment, mounts and resource defaults), merged into every sandbox pod.
//!
//! What the provisioner owns (names, its labels and annotations, image, ports, probes, its
//! mounts and volumes, the security settings it is configured with) is refused when the
//! template is read, naming the field, so the merge never has to choose: maps merge (where
//! both have a key, the provisioner's value stays, e.g. the limits of the chosen size), lists
//! append.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Map, Value};

use super::{
    keys::{is_owned_key, is_owned_volume, OWNED_ENV, SANDBOX_CONTAINER},
    Placement,
};
use crate::sandbox::mounts::{ACP_WORKSPACE_PATH, DEFAULT_SKILLS_PATH, USER_DATA_PATH};

/// The fields of the sandbox container a template may set.
const CONTAINER_FIELDS: [&str; 5] = ["env", "envFrom", "volumeMounts", "resources", "workingDir"];

/// What the provisioner sets on the sandbox container, and why a template may not.
const OWNED_CONTAINER_FIELDS: [(&str, &str); 9] = [
    ("image", "SANDBOX_IMAGE sets it"),
    ("imagePullPolicy", "the provisioner sets IfNotPresent"),
    ("ports", "SANDBOX_CONTAINER_PORT sets it"),
    (
        "startupProbe",
        "the SANDBOX_PROBE_STARTUP_* settings set it",
    ),
    (
        "readinessProbe",
        "the SANDBOX_PROBE_READINESS_* settings set it",
    ),
    (
        "livenessProbe",
        "the SANDBOX_PROBE_LIVENESS_* settings set it",
    ),
    (
        "securityContext",
        "SANDBOX_ALLOW_PRIVILEGE_ESCALATION and SANDBOX_CAPABILITIES_DROP/_ADD set it",
    ),
    ("command", "the sandbox runs its image's own entrypoint"),
    ("args", "the sandbox runs its image's own entrypoint"),
];

/// The pod spec fields the provisioner sets or keeps off, and why a template may not set them.
const OWNED_SPEC_FIELDS: [(&str, &str); 8] = [
    (
        "initContainers",
        "the provisioner's Lark CLI helpers run there (LARK_CLI_INIT_IMAGE, LARK_CLI_BROKER_IMAGE)",
    ),
    (
        "ephemeralContainers",
        "they are added to running pods, not at creation",
    ),
    ("restartPolicy", "the provisioner sets Always"),
    (
        "automountServiceAccountToken",
        "SANDBOX_AUTOMOUNT_SERVICE_ACCOUNT_TOKEN sets it",
    ),
    ("enableServiceLinks", "SANDBOX_ENABLE_SERVICE_LINKS sets it"),
    (
        "hostNetwork",
        "it would give the sandbox the node's network",
    ),
    ("hostPID", "it would show the sandbox the node's processes"),
    (
        "hostIPC",
        "it would give the sandbox the node's IPC namespace",
    ),
];

/// The container paths the provisioner mounts, which template mounts may neither be nor lie in.
const OWNED_MOUNT_ROOTS: [&str; 4] = [
    USER_DATA_PATH,
    DEFAULT_SKILLS_PATH,
    ACP_WORKSPACE_PATH,
    "/mnt/integrations",
];

/// The placement fields, which SANDBOX_PLACEMENT may set instead.
const PLACEMENT_FIELDS: [&str; 6] = [
    "nodeSelector",
    "tolerations",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "runtimeClassName",
];

/// A checked pod template. The empty template changes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodTemplate {
    /// `{"metadata": {...}, "spec": {...}}` as written, without nulls; empty when unset.
    fragment: Map<String, Value>,
}

impl PodTemplate {
    /// Reads a template from YAML (or JSON) text; the error names the field and the fix.
    pub fn parse(text: &str) -> Result<PodTemplate, String> {
        let mut value: Value = serde_saphyr::from_str(text)
            .map_err(|e| format!("is not a valid YAML pod template: {e}"))?;
        strip_nulls(&mut value);
        let Value::Object(mut top) = value else {
            return Err("must be a YAML mapping with metadata and/or spec, like a Pod".into());
        };
        expect_literal(&mut top, "apiVersion", "v1")?;
        expect_literal(&mut top, "kind", "Pod")?;
        if let Some(key) = top.keys().find(|k| *k != "metadata" && *k != "spec") {
            return Err(format!(
                "has {key:?} at the top; a pod template holds only metadata (labels, annotations) \
                    and spec"
            ));
        }
        if let Some(metadata) = top.get("metadata") {
            check_metadata(metadata)?;
        }
        if let Some(spec) = top.get("spec") {
            check_spec(spec)?;
        }
        let template = PodTemplate { fragment: top };
        let typed = template.typed()?;
        check_typed(&typed)?;
        Ok(template)
    }

    /// Whether the template adds nothing.
    pub fn is_empty(&self) -> bool {
        self.fragment.is_empty()
    }

    /// The template as a Pod (the sandbox container named, as a merge target), checked for
    /// field types, and for fields a Pod does not have (a typo would otherwise be dropped).
    fn typed(&self) -> Result<Pod, String> {
        let mut whole = Value::Object(self.fragment.clone());
        let spec = whole
            .as_object_mut()
            .expect("an object")
            .entry("spec")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(spec) = spec.as_object_mut() {
            spec.entry("containers")
                .or_insert_with(|| serde_json::json!([{ "name": SANDBOX_CONTAINER }]));
        }
        let pod: Pod = serde_path_to_error::deserialize(&whole)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
        let back = serde_json::to_value(&pod).map_err(|e| e.to_string())?;
        if let Some(path) = first_unknown(&whole, &back, String::new()) {
            return Err(format!(
                "{path} is not a field of a Pod (check its spelling against the Pod API)"
            ));
        }
        Ok(pod)
    }

    /// The container paths the template mounts into the sandbox container.
    pub fn mount_paths(&self) -> Vec<String> {
        self.sandbox_container()
            .and_then(|c| c.get("volumeMounts"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("mountPath")?.as_str().map(str::to_string))
            .collect()
    }

    fn sandbox_container(&self) -> Option<&Value> {
        self.fragment
            .get("spec")?
            .get("containers")?
            .as_array()?
            .first()
    }

    /// The placement field both this template and `placement` set, if any.
    pub fn overlap(&self, placement: &Placement) -> Option<&'static str> {
        let set = serde_json::to_value(placement).ok()?;
        let spec = self.fragment.get("spec")?;
        PLACEMENT_FIELDS
            .into_iter()
            .find(|f| spec.get(f).is_some() && set.get(f).is_some_and(|v| !v.is_null()))
    }

    /// Merges the template into a sandbox pod: maps merge with the pod's own values winning
    /// where both have a key, lists append, and the template's sandbox container merges into
    /// the pod's.
    pub fn apply(&self, pod: &mut Pod) {
        if self.is_empty() {
            return;
        }
        let mut ours = serde_json::to_value(&*pod).expect("a pod serializes");
        merge(&mut ours, &Value::Object(self.fragment.clone()));
        *pod = serde_json::from_value(ours).expect("a checked template merges into a valid pod");
    }
}

/// Removes a top-level key that may only have one value (`apiVersion: v1`, `kind: Pod`).
fn expect_literal(top: &mut Map<String, Value>, key: &str, wanted: &str) -> Result<(), String> {
    match top.remove(key) {
        None => Ok(()),
        Some(Value::String(s)) if s == wanted => Ok(()),
        Some(other) => Err(format!(
            "has {key}: {other}; a pod template is {key} {wanted} (or leaves {key} out)"
        )),
    }
}

fn check_metadata(metadata: &Value) -> Result<(), String> {
    let Value::Object(metadata) = metadata else {
        return Err("metadata must be a mapping of labels and annotations".into());
    };
    for (key, value) in metadata {
        if key != "labels" && key != "annotations" {
            return Err(format!(
                "metadata.{key} is the provisioner's: a template may only add labels and \
                    annotations"
            ));
        }
        let owned = value
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .find(|k| is_owned_key(k));
        if let Some(owned) = owned {
            return Err(format!(
                "metadata.{key}.{owned} is the provisioner's own key; choose another key"
            ));
        }
    }
    Ok(())
}

fn check_spec(spec: &Value) -> Result<(), String> {
    let Value::Object(spec) = spec else {
        return Err("spec must be a mapping of Pod spec fields".into());
    };
    for (field, why) in OWNED_SPEC_FIELDS {
        if spec.contains_key(field) {
            return Err(format!("spec.{field} is the provisioner's: {why}"));
        }
    }
    if spec
        .get("securityContext")
        .and_then(|s| s.get("seccompProfile"))
        .is_some()
    {
        return Err(
            "spec.securityContext.seccompProfile is the provisioner's: SANDBOX_SECCOMP_PROFILE \
                sets it"
                .into(),
        );
    }
    let Some(containers) = spec.get("containers") else {
        return Ok(());
    };
    let containers = containers
        .as_array()
        .ok_or("spec.containers must be a list")?;
    for (i, container) in containers.iter().enumerate() {
        let name = container.get("name").and_then(Value::as_str);
        if name != Some(SANDBOX_CONTAINER) || i > 0 {
            return Err(format!(
                "spec.containers[{i}] ({name:?}): a template may only add to the one container \
                    named {SANDBOX_CONTAINER:?} (other containers would run without the sandbox's \
                    security settings)"
            ));
        }
        for key in container.as_object().into_iter().flat_map(|c| c.keys()) {
            if key == "name" || CONTAINER_FIELDS.contains(&key.as_str()) {
                continue;
            }
            let at = format!("spec.containers[{i}].{key}");
            return Err(
                match OWNED_CONTAINER_FIELDS.iter().find(|(f, _)| f == key) {
                    Some((_, why)) => format!("{at} is the provisioner's: {why}"),
                    None => format!(
                    "{at} cannot be set by a template: the sandbox container takes only {} from it",
                    CONTAINER_FIELDS.join(", ")
                ),
                },
            );
        }
    }
    Ok(())
}

/// The checks that need the typed template: environment, volumes and mounts of the
/// provisioner's own.
fn check_typed(pod: &Pod) -> Result<(), String> {
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    for (i, volume) in spec.volumes.iter().flatten().enumerate() {
        if is_owned_volume(&volume.name) {
            return Err(format!(
                "spec.volumes[{i}] is named {:?}, a name the provisioner gives its own volumes; \
                    choose another name",
                volume.name
            ));
        }
    }
    let Some(container) = spec.containers.first() else {
        return Ok(());
    };
    for (i, env) in container.env.iter().flatten().enumerate() {
        if OWNED_ENV.contains(&env.name.as_str()) {
            return Err(format!(
                "spec.containers[0].env[{i}] sets {}, which the provisioner sets",
                env.name
            ));
        }
    }
    for (i, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let at = format!("spec.containers[0].volumeMounts[{i}]");
        if is_owned_volume(&mount.name) {
            return Err(format!(
                "{at} mounts {:?}, one of the provisioner's own volumes",
                mount.name
            ));
        }
        let path = mount.mount_path.trim_end_matches('/');
        let owned = OWNED_MOUNT_ROOTS
            .into_iter()
            .find(|root| path == *root || path.starts_with(&format!("{root}/")));
        if path.is_empty() || owned.is_some() {
            return Err(format!(
                "{at} mounts at {:?}, where the provisioner mounts {}; choose another path",
                mount.mount_path,
                owned.unwrap_or("its volumes")
            ));
        }
    }
    Ok(())
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The first key of `written` (as a path) that did not survive the trip through the Pod type.
fn first_unknown(written: &Value, typed: &Value, at: String) -> Option<String> {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => w.iter().find_map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match t.get(key) {
                None => Some(path),
                Some(kept) => first_unknown(value, kept, path),
            }
        }),
        (Value::Array(w), Value::Array(t)) => w
            .iter()
            .zip(t)
            .enumerate()
            .find_map(|(i, (value, kept))| first_unknown(value, kept, format!("{at}[{i}]"))),
        _ => None,
    }
}

/// Deep merge of `add` into `target`: the target's scalars stay, maps merge, lists append, and
/// `containers` merge by name.
fn merge(target: &mut Value, add: &Value) {
    match (target, add) {
        (Value::Object(target), Value::Object(add)) => {
            for (key, value) in add {
                match target.get_mut(key) {
                    Some(existing) if key == "containers" => merge_by_name(existing, value),
                    Some(existing) => merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(add)) => target.extend(add.iter().cloned()),
        _ => {}
    }
}

fn merge_by_name(target: &mut Value, add: &Value) {
    let (Value::Array(target), Value::Array(add)) = (target, add) else {
        return;
    };
    for item in add {
        let name = item.get("name");
        match target.iter_mut().find(|t| t.get("name") == name) {
            Some(existing) => merge(existing, item),
            None => target.push(item.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(yaml: &str) -> String {
        PodTemplate::parse(yaml).expect_err(yaml)
    }

    #[test]
    fn every_owned_field_is_refused_by_name() {
        let cases = [
            ("metadata: {name: x}", "metadata.name is the provisioner's"),
            (
                "metadata: {namespace: x}",
                "metadata.namespace is the provisioner's",
            ),
            (
                "metadata: {labels: {app: x}}",
                "metadata.labels.app is the provisioner's own key",
            ),
            (
                "metadata: {labels: {sandbox-id: x}}",
                "metadata.labels.sandbox-id",
            ),
            (
                "metadata: {labels: {app.kubernetes.io/managed-by: x}}",
                "managed-by",
            ),
            (
                "metadata: {labels: {sandbox-provisioner.dev/tenant: x}}",
                "tenant",
            ),
            (
                "metadata: {annotations: {sandbox-provisioner.dev/ttl-seconds: '1'}}",
                "metadata.annotations.sandbox-provisioner.dev/ttl-seconds",
            ),
            (
                "spec: {initContainers: []}",
                "spec.initContainers is the provisioner's: the \
                provisioner's Lark CLI helpers",
            ),
            (
                "spec: {restartPolicy: Never}",
                "spec.restartPolicy is the provisioner's",
            ),
            (
                "spec: {automountServiceAccountToken: true}",
                "SANDBOX_AUTOMOUNT_SERVICE_ACCOUNT_TOKEN",
            ),
            (
                "spec: {enableServiceLinks: true}",
                "SANDBOX_ENABLE_SERVICE_LINKS",
            ),
            (
                "spec: {hostNetwork: true}",
                "spec.hostNetwork is the provisioner's: it would give \
                the sandbox the node's network",
            ),
            ("spec: {hostPID: true}", "spec.hostPID"),
            ("spec: {hostIPC: true}", "spec.hostIPC"),
            (
                "spec: {ephemeralContainers: []}",
                "spec.ephemeralContainers",
            ),
            (
                "spec: {securityContext: {seccompProfile: {type: Unconfined}}}",
                "SANDBOX_SECCOMP_PROFILE",
            ),
            (
                "spec: {containers: [{name: sandbox, image: x}]}",
                "spec.containers[0].image is the \
                provisioner's: SANDBOX_IMAGE sets it",
            ),
            (
                "spec: {containers: [{name: sandbox, imagePullPolicy: Always}]}",
                "imagePullPolicy",
            ),
            (
                "spec: {containers: [{name: sandbox, ports: []}]}",
                "SANDBOX_CONTAINER_PORT",
            ),
            (
                "spec: {containers: [{name: sandbox, startupProbe: {}}]}",
                "SANDBOX_PROBE_STARTUP_",
            ),
            (
                "spec: {containers: [{name: sandbox, readinessProbe: {}}]}",
                "SANDBOX_PROBE_READINESS_",
            ),
            (
                "spec: {containers: [{name: sandbox, livenessProbe: {}}]}",
                "SANDBOX_PROBE_LIVENESS_",
            ),
            (
                "spec: {containers: [{name: sandbox, securityContext: {privileged: true}}]}",
                "SANDBOX_CAPABILITIES_DROP",
            ),
            (
                "spec: {containers: [{name: sandbox, command: [sh]}]}",
                "its image's own entrypoint",
            ),
            (
                "spec: {containers: [{name: sandbox, args: [x]}]}",
                "spec.containers[0].args",
            ),
            (
                "spec: {containers: [{name: sandbox, stdin: true}]}",
                "spec.containers[0].stdin \
                cannot be set by a template",
            ),
            (
                "spec: {containers: [{name: sidecar, image: x}]}",
                "spec.containers[0] \
                (Some(\"sidecar\")): a template may only add to the one container named \
                \"sandbox\"",
            ),
            (
                "spec: {containers: [{name: sandbox}, {name: sandbox}]}",
                "spec.containers[1]",
            ),
            (
                "spec: {containers: [{name: sandbox, env: \
                    [{name: MAX_SHELL_SESSIONS, value: '3'}]}]}",
                "spec.containers[0].env[0] sets MAX_SHELL_SESSIONS",
            ),
            (
                "spec: {containers: [{name: sandbox, env: \
                    [{name: DEERFLOW_LARK_BROKER_URL, value: x}]}]}",
                "DEERFLOW_LARK_BROKER_URL",
            ),
            (
                "spec: {volumes: [{name: user-data, emptyDir: {}}]}",
                "spec.volumes[0] is named \
                \"user-data\"",
            ),
            (
                "spec: {volumes: [{name: extra-0, emptyDir: {}}]}",
                "\"extra-0\"",
            ),
            (
                "spec: {volumes: [{name: lark-cli-runtime, emptyDir: {}}]}",
                "\"lark-cli-runtime\"",
            ),
            (
                "spec: {containers: [{name: sandbox, volumeMounts: \
                    [{name: skills, mountPath: /x}]}]}",
                "mounts \"skills\", one of the provisioner's own volumes",
            ),
            (
                "spec: {containers: [{name: sandbox, volumeMounts: \
                    [{name: v, mountPath: /mnt/user-data}]}]}",
                "where the provisioner mounts /mnt/user-data",
            ),
            (
                "spec: {containers: [{name: sandbox, volumeMounts: \
                    [{name: v, mountPath: /mnt/skills/custom/}]}]}",
                "where the provisioner mounts /mnt/skills",
            ),
            (
                "spec: {containers: [{name: sandbox, volumeMounts: \
                    [{name: v, mountPath: /mnt/integrations/lark-cli}]}]}",
                "/mnt/integrations",
            ),
            (
                "spec: {containers: [{name: sandbox, volumeMounts: [{name: v, mountPath: /}]}]}",
                "choose another path",
            ),
        ];
        for (yaml, expected) in cases {
            let e = refused(yaml);
            assert!(
                e.contains(expected),
                "{yaml}\n  gave: {e}\n  should contain: {expected}"
            );
        }
    }

    #[test]
    fn the_shape_is_checked_with_the_field_named() {
        for (yaml, expected) in [
            ("[1, 2]", "must be a YAML mapping"),
            (
                "spec: {tolerationz: []}",
                "spec.tolerationz is not a field of a Pod",
            ),
            (
                "spec: {containers: [{name: sandbox, resources: {limitz: {}}}]}",
                "spec.containers[0].resources.limitz is not a field",
            ),
            (
                "spec: {tolerations: [{key: k, operatr: Exists}]}",
                "spec.tolerations[0].operatr is not a field",
            ),
            (
                "spec: {priorityClassName: [x]}",
                "spec.priorityClassName: invalid type",
            ),
            (
                "kind: Deployment",
                "has kind: \"Deployment\"; a pod template is kind Pod",
            ),
            ("apiVersion: apps/v1", "apiVersion"),
            ("status: {}", "has \"status\" at the top"),
            (
                "spec: {containers: {name: sandbox}}",
                "spec.containers must be a list",
            ),
            ("spec: [1]", "spec must be a mapping"),
            ("spec: {a: [", "is not a valid YAML pod template"),
        ] {
            let e = refused(yaml);
            assert!(
                e.contains(expected),
                "{yaml}\n  gave: {e}\n  should contain: {expected}"
            );
        }
        let t = PodTemplate::parse(
            "apiVersion: v1\nkind: Pod\nspec:\n  runtimeClassName: gvisor\n  dnsConfig: null\n",
        )
        .unwrap();
        assert!(!t.is_empty());
        assert!(PodTemplate::default().is_empty());
    }

    fn a_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "sandbox-a", "labels": {"app": "deer-flow-sandbox"}},
            "spec": {
                "containers": [{
                    "name": "sandbox", "image": "img:1",
                    "env": [{"name": "MAX_SHELL_SESSIONS", "value": "12"}],
                    "volumeMounts": [{"name": "user-data", "mountPath": "/mnt/user-data"}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                }],
                "volumes": [{"name": "user-data", "emptyDir": {}}],
                "tolerations": [{"key": "ours", "operator": "Exists"}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn lists_append_maps_merge_and_the_pods_own_values_stay() {
        let t = PodTemplate::parse(
            r#"
metadata:
  labels: {team: data}
  annotations: {example.com/owner: data-team}
spec:
  runtimeClassName: gvisor
  dnsConfig: {options: [{name: ndots, value: "2"}]}
  tolerations: [{key: sandboxes, operator: Exists, effect: NoSchedule}]
  volumes: [{name: dshm, emptyDir: {medium: Memory, sizeLimit: 1Gi}}]
  containers:
    - name: sandbox
      env: [{name: BROWSER_NO_SANDBOX, value: "--no-sandbox"}]
      volumeMounts: [{name: dshm, mountPath: /dev/shm}]
      resources:
        limits: {cpu: "4", nvidia.com/gpu: "1"}
        requests: {cpu: 500m}
"#,
        )
        .unwrap();
        assert_eq!(t.mount_paths(), ["/dev/shm"]);
        let mut pod = a_pod();
        t.apply(&mut pod);
        let p = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            p["metadata"]["labels"],
            json!({"app": "deer-flow-sandbox", "team": "data"})
        );
        assert_eq!(
            p["metadata"]["annotations"]["example.com/owner"],
            "data-team"
        );
        assert_eq!(p["spec"]["runtimeClassName"], "gvisor");
        assert_eq!(p["spec"]["dnsConfig"]["options"][0]["value"], "2");
        assert_eq!(
            p["spec"]["tolerations"],
            json!([{"key": "ours", "operator": "Exists"}, {"key": "sandboxes",
                "operator": "Exists", "effect": "NoSchedule"}])
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "user-data", "emptyDir": {}}, {"name": "dshm",
                "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}])
        );
        let c = &p["spec"]["containers"];
        assert_eq!(
            c.as_array().unwrap().len(),
            1,
            "merged into the sandbox container"
        );
        assert_eq!(c[0]["image"], "img:1");
        assert_eq!(
            c[0]["env"],
            json!([{"name": "MAX_SHELL_SESSIONS", "value": "12"}, {"name": "BROWSER_NO_SANDBOX",
                "value": "--no-sandbox"}])
        );
        assert_eq!(
            c[0]["volumeMounts"][1],
            json!({"name": "dshm", "mountPath": "/dev/shm"})
        );
        // The chosen size's limits stay; the template fills in what the size does not set.
        assert_eq!(
            c[0]["resources"],
            json!({"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1"},
                "requests": {"cpu": "500m"}})
        );
    }

    #[test]
    fn a_placement_field_may_be_set_in_only_one_place() {
        let t = PodTemplate::parse("spec: {runtimeClassName: gvisor, dnsPolicy: None}").unwrap();
        assert_eq!(t.overlap(&Placement::default()), None);
        let p = Placement::parse(r#"{"runtimeClassName": "kata"}"#).unwrap();
        assert_eq!(t.overlap(&p), Some("runtimeClassName"));
        let p = Placement::parse(r#"{"tolerations": []}"#).unwrap();
        assert_eq!(t.overlap(&p), None);
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        let browser = PodTemplate::parse(include_str!("../../deploy/examples/aio-browser.yaml"))
            .expect("aio-browser.yaml");
        assert_eq!(browser.mount_paths(), ["/dev/shm"]);
        let mut pod = a_pod();
        browser.apply(&mut pod);
        let p = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            p["spec"]["volumes"][1]["emptyDir"],
            json!({"medium": "Memory", "sizeLimit": "1Gi"})
        );
        assert_eq!(
            p["spec"]["containers"][0]["env"][1]["name"],
            "BROWSER_NO_SANDBOX"
        );
        let gvisor = PodTemplate::parse(include_str!("../../deploy/examples/gvisor.yaml"))
            .expect("gvisor.yaml");
        let mut pod = a_pod();
        gvisor.apply(&mut pod);
        assert_eq!(
            pod.spec.unwrap().runtime_class_name.as_deref(),
            Some("gvisor")
        );
        let real_node =
            PodTemplate::parse(include_str!("../../deploy/examples/local-real-node.yaml"))
                .expect("local-real-node.yaml");
        let mut pod = a_pod();
        real_node.apply(&mut pod);
        let p = serde_json::to_value(&pod).unwrap();
        assert_eq!(p["spec"]["schedulerName"], "sandbox-real-node");
        assert_eq!(
            p["spec"]["nodeSelector"]["sandbox-provisioner.dev/node"],
            "real"
        );
        let tolerated: Vec<_> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["key"])
            .collect();
        assert!(
            tolerated.contains(&&json!("sandbox-provisioner.dev/real-node")),
            "{tolerated:?}"
        );
    }

    #[test]
    fn the_empty_template_changes_nothing() {
        let mut pod = a_pod();
        PodTemplate::default().apply(&mut pod);
        assert_eq!(pod, a_pod());
    }
}
