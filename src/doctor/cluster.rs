//! Checks that ask the cluster: the namespace, one SelfSubjectAccessReview per permission of
//! the table, and node port allocation.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::{
    authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec},
    core::v1::{Namespace, Node, Pod, PodSpec, Service, Taint, Toleration},
};
use kube::{
    api::{Api, ListParams, PostParams},
    Client,
};

use super::{Check, Verdict};
use crate::{
    config::Connection,
    k8s::manifests,
    permissions::{self, Features, Permission},
    spec::{image, SandboxSpec},
};

/// Returns whether the namespace exists (None when it could not be read).
pub(super) async fn namespace_check(
    client: &Client,
    cluster: &Connection,
    checks: &mut Vec<Check>,
) -> Option<bool> {
    let api: Api<Namespace> = Api::all(client.clone());
    let name = &cluster.namespace;
    match tokio::time::timeout(cluster.api_timeout, api.get_opt(name)).await {
        Ok(Ok(Some(ns)))
            if ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating") =>
        {
            checks.push(Check::fail(
                "namespace",
                format!("{name} is being deleted"),
                "wait until it is gone; the provisioner then creates it again",
            ));
            Some(true)
        }
        Ok(Ok(Some(_))) => {
            checks.push(Check::ok("namespace", format!("{name} exists")));
            Some(true)
        }
        Ok(Ok(None)) => Some(false),
        Ok(Err(e)) => {
            checks.push(Check::fail(
                "namespace",
                format!("cannot read namespace {name}: {e}"),
                permissions::find("get", "namespaces")
                    .expect("in the table")
                    .fix(name),
            ));
            None
        }
        Err(_) => {
            checks.push(Check::fail(
                "namespace",
                format!("reading namespace {name} timed out"),
                "check the API server",
            ));
            None
        }
    }
}

/// Asks the apiserver whether this credential may use `permission`, with the attributes the
/// real call has: in the sandbox namespace, and for the namespace itself by its name.
async fn can(client: &Client, namespace: &str, permission: &Permission) -> Result<bool, String> {
    let (scope, name) = match (permission.resource, permission.verb) {
        ("namespaces", "create") => (None, None),
        ("namespaces", _) => (Some(namespace), Some(namespace)),
        _ => (Some(namespace), None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: scope.map(str::to_string),
                name: name.map(str::to_string),
                group: Some(permission.group.to_string()),
                verb: Some(permission.verb.into()),
                resource: Some(permission.resource.into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    match tokio::time::timeout(
        Duration::from_secs(10),
        api.create(&PostParams::default(), &review),
    )
    .await
    {
        Ok(Ok(answer)) => Ok(answer.status.is_some_and(|s| s.allowed)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// One check per permission this configuration needs (from the permissions table).
pub(super) async fn rbac_checks(
    client: &Client,
    namespace: &str,
    features: Features,
    checks: &mut Vec<Check>,
) {
    let reviews =
        permissions::needed(features).map(|p| async move { (p, can(client, namespace, p).await) });
    for (permission, answer) in futures::future::join_all(reviews).await {
        let name = format!("rbac {}", permission.label());
        checks.push(match answer {
            Ok(true) => Check::ok(&name, "allowed"),
            Ok(false) => Check::fail(
                &name,
                format!(
                    "not allowed to {} in namespace {namespace} (needed to {})",
                    permission.label(),
                    permission.why
                ),
                permission.fix(namespace),
            ),
            Err(e) => Check::fail(
                &name,
                format!("cannot ask the API server: {e}"),
                "check the API server and that SelfSubjectAccessReview is allowed",
            ),
        });
    }
    if features.namespace_missing {
        let creatable = checks
            .iter()
            .any(|c| c.name == "rbac create namespaces" && c.verdict == Verdict::Ok);
        checks.push(if creatable {
            Check::ok(
                "namespace",
                format!(
                    "{namespace} does not exist yet; the provisioner will \
                create it"
                ),
            )
        } else {
            Check::fail(
                "namespace",
                format!(
                    "{namespace} does not exist and the provisioner may \
                not create \
                it"
                ),
                format!(
                    "create it (`kubectl create namespace {namespace}`) or grant create \
                on namespaces"
                ),
            )
        });
    }
}

/// Node ports are allocated: a dry-run NodePort Service gets one from the apiserver.
pub(super) async fn node_port_check(client: &Client, namespace: &str, port: u16) -> Check {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    let mut probe: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sandbox-provisioner-doctor-probe"},
        "spec": {"type": "NodePort", "selector": {manifests::SANDBOX_ID_LABEL: "doctor-probe"},
                 "ports": [{"port": port}]},
    }))
    .expect("a valid Service");
    probe.metadata.namespace = Some(namespace.into());
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match tokio::time::timeout(Duration::from_secs(10), api.create(&params, &probe)).await {
        Ok(Ok(svc)) => {
            let port = svc
                .spec
                .and_then(|s| s.ports)
                .and_then(|p| p.first()?.node_port);
            match port {
                Some(p) => Check::ok(
                    "node ports",
                    format!("NodePort Services get ports (dry run allocated {p})"),
                ),
                None => Check::warn(
                    "node ports",
                    "a dry-run NodePort Service got no port",
                    "check the cluster's --service-node-port-range",
                ),
            }
        }
        Ok(Err(e)) => Check::fail(
            "node ports",
            format!("a dry-run NodePort Service was refused: {e}"),
            "check the Role (create services) and the cluster's node port range and quota",
        ),
        Err(_) => Check::fail(
            "node ports",
            "a dry-run NodePort Service timed out",
            "check the API server",
        ),
    }
}

/// The nodeSelector and tolerations a sandbox pod gets from the placement and the pod template.
fn sandbox_placement(sandbox: &SandboxSpec) -> (BTreeMap<String, String>, Vec<Toleration>) {
    let mut pod = Pod {
        spec: Some(PodSpec {
            node_selector: sandbox.placement.node_selector.clone(),
            tolerations: sandbox.placement.tolerations.clone(),
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    sandbox.pod_template.apply(&mut pod);
    let spec = pod.spec.unwrap_or_default();
    (
        spec.node_selector.unwrap_or_default(),
        spec.tolerations.unwrap_or_default(),
    )
}

/// Whether the scheduler may put a pod with this nodeSelector and these tolerations on the node.
fn may_run_sandboxes(
    node: &Node,
    selector: &BTreeMap<String, String>,
    tolerations: &[Toleration],
) -> bool {
    let labels = node.metadata.labels.as_ref();
    let spec = node.spec.as_ref();
    let selected = selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let schedulable = !spec.and_then(|s| s.unschedulable).unwrap_or(false);
    let taints = spec.and_then(|s| s.taints.as_deref()).unwrap_or_default();
    let tolerated = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)));
    selected && schedulable && tolerated
}

/// Kubernetes' rule: an empty key with Exists tolerates everything; otherwise the keys match,
/// and the values do unless the operator is Exists; an empty effect matches every effect.
fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let exists = toleration.operator.as_deref() == Some("Exists");
    let key = toleration.key.as_deref().unwrap_or_default();
    let effect = toleration.effect.as_deref().unwrap_or_default();
    (effect.is_empty() || effect == taint.effect)
        && ((key.is_empty() && exists)
            || (key == taint.key
                && (exists
                    || toleration.value.as_deref().unwrap_or_default()
                        == taint.value.as_deref().unwrap_or_default())))
}

/// Nodes that may run sandboxes (schedulable, their labels match the sandbox pod's nodeSelector
/// and their NoSchedule/NoExecute taints are tolerated, from SANDBOX_PLACEMENT and the pod
/// template) and lack one of the images sandboxes need: there the first sandbox waits for the
/// pull.
pub(super) async fn image_check(
    client: &Client,
    timeout: Duration,
    sandbox: &SandboxSpec,
) -> Check {
    let mut images = vec![sandbox.image.clone()];
    images.extend(sandbox.lark.init_image.clone());
    images.extend(sandbox.lark.broker_image.clone());
    let api: Api<Node> = Api::all(client.clone());
    let nodes =
        match tokio::time::timeout(timeout, api.list(&ListParams::default())).await {
            Ok(Ok(list)) => list.items,
            Ok(Err(kube::Error::Api(e))) if e.code == 403 => return Check::warn(
                "images on nodes",
                "may not list nodes, so cannot see which nodes have the sandbox image",
                "optional: grant list on nodes (deploy/kubernetes/prepull includes a ClusterRole \
                    for it)",
            ),
            Ok(Err(e)) => {
                return Check::warn(
                    "images on \
                nodes",
                    format!("cannot list nodes: {e}"),
                    "check the API server",
                )
            }
            Err(_) => {
                return Check::warn(
                    "images on \
            nodes",
                    "listing nodes timed out",
                    "check the API server",
                )
            }
        };
    let (selector, tolerations) = sandbox_placement(sandbox);
    let eligible: Vec<&Node> = nodes
        .iter()
        .filter(|n| may_run_sandboxes(n, &selector, &tolerations))
        .collect();
    let lacking: Vec<String> = eligible
        .iter()
        .filter_map(|n| {
            let reported: Vec<&str> = n
                .status
                .as_ref()
                .and_then(|s| s.images.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|i| i.names.iter().flatten().map(String::as_str))
                .collect();
            let missing: Vec<&str> = images
                .iter()
                .filter(|want| !reported.iter().any(|r| image::is_reported_as(want, r)))
                .map(String::as_str)
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "{} (lacks {})",
                    n.metadata.name.as_deref().unwrap_or("?"),
                    missing.join(", ")
                )
            })
        })
        .collect();
    if eligible.is_empty() {
        return Check::warn(
            "images on nodes",
            "no schedulable node matches SANDBOX_PLACEMENT's nodeSelector",
            "check the nodeSelector and the node labels",
        );
    }
    if lacking.is_empty() {
        return Check::ok(
            "images on nodes",
            format!(
                "all {} nodes that may run sandboxes have {}",
                eligible.len(),
                images.join(", ")
            ),
        );
    }
    let shown: Vec<&str> = lacking.iter().take(10).map(String::as_str).collect();
    let more = lacking.len().saturating_sub(shown.len());
    Check::warn(
        "images on nodes",
        format!(
            "{} of {} nodes that may run sandboxes lack an image, so their first sandbox waits \
                for the pull: {}{}",
            lacking.len(),
            eligible.len(),
            shown.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ),
        "pre-pull it: add the component deploy/kubernetes/prepull to the deployment (see \
            docs/operations.md)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "labels": labels},
                                      "spec": {"taints": taints}}))
        .unwrap()
    }

    fn tolerations(v: serde_json::Value) -> Vec<Toleration> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_node_may_run_sandboxes_when_selected_and_its_taints_are_tolerated() {
        let real = node(
            json!({"sandbox-provisioner.dev/node": "real"}),
            json!([{"key": "sandbox-provisioner.dev/real-node", "value": "true", "effect": "NoSchedule"}]),
        );
        let none = BTreeMap::new();
        assert!(!may_run_sandboxes(&real, &none, &[]));
        let exists = tolerations(json!([{"key": "sandbox-provisioner.dev/real-node",
                                          "operator": "Exists", "effect": "NoSchedule"}]));
        assert!(may_run_sandboxes(&real, &none, &exists));
        let other_value = tolerations(json!([{"key": "sandbox-provisioner.dev/real-node",
                                               "operator": "Equal", "value": "false"}]));
        assert!(!may_run_sandboxes(&real, &none, &other_value));
        let everything = tolerations(json!([{"operator": "Exists"}]));
        assert!(may_run_sandboxes(&real, &none, &everything));
        let other_effect = tolerations(json!([{"key": "sandbox-provisioner.dev/real-node",
                                                "operator": "Exists", "effect": "NoExecute"}]));
        assert!(!may_run_sandboxes(&real, &none, &other_effect));
        // PreferNoSchedule does not keep a pod away.
        let soft = node(
            json!({}),
            json!([{"key": "k", "effect": "PreferNoSchedule"}]),
        );
        assert!(may_run_sandboxes(&soft, &none, &[]));
        let selector: BTreeMap<String, String> = [(
            "sandbox-provisioner.dev/node".to_string(),
            "real".to_string(),
        )]
        .into();
        assert!(!may_run_sandboxes(&soft, &selector, &[]));
        assert!(may_run_sandboxes(&real, &selector, &exists));
    }
}
