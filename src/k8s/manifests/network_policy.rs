//! NetworkPolicies: each sandbox's own (isolated or the operator's template), owned by its
//! Pod, and the namespace-wide baseline that shuts off any sandbox lacking its own.
//!
//! `isolated` lets traffic in only to the sandbox port (optionally only from configured peers;
//! in gateway mode, only from the provisioner's Pods) and out only to the cluster's DNS Pods
//! and the public internet, never to private, shared, link-local or cloud metadata ranges
//! (IPv4 and IPv6) or configured cluster ranges.

use k8s_openapi::{
    api::{
        core::v1::Pod,
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
        },
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};
use serde_json::json;

use super::labels::{managed_labels, network_policy_name, owned_metadata, sandbox_selector};
use crate::{
    sandbox::{SandboxId, ThreadId},
    spec::{NetworkPolicyMode, SandboxSpec, SandboxUrls},
};

/// The isolated spec for a sandbox serving on `port` (its podSelector is set by the caller).
pub fn isolated_spec(
    port: i32,
    ingress_from: &[NetworkPolicyPeer],
    egress_deny: &[String],
    dns_to: &[NetworkPolicyPeer],
) -> NetworkPolicySpec {
    let (v4, v6): (Vec<&String>, Vec<&String>) = egress_deny.iter().partition(|c| !c.contains(':'));
    let mut ingress = json!({"ports": [{"port": port, "protocol": "TCP"}]});
    if !ingress_from.is_empty() {
        ingress["from"] = serde_json::to_value(ingress_from).expect("peers serialize");
    }
    serde_json::from_value(json!({
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [ingress],
        "egress": [
            {
                "to": serde_json::to_value(dns_to).expect("peers serialize"),
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            },
            {"to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
                {"ipBlock": {"cidr": "::/0", "except": v6}},
            ]},
        ],
    }))
    .expect("a valid NetworkPolicySpec")
}

/// What each sandbox's own policy allows, as configured (its pod selector still to be set).
fn sandbox_policy_spec(t: &SandboxSpec) -> Option<NetworkPolicySpec> {
    match &t.network_policy {
        NetworkPolicyMode::None => None,
        NetworkPolicyMode::Isolated {
            ingress_from,
            egress_deny,
            dns_to,
        } => Some(isolated_spec(
            i32::from(t.port),
            ingress_from,
            egress_deny,
            dns_to,
        )),
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
pub fn baseline_network_policy(t: &SandboxSpec) -> Option<NetworkPolicy> {
    let governed = sandbox_policy_spec(t)?;
    // Kubernetes' own default when a spec names no policyTypes.
    let policy_types = governed.policy_types.clone().unwrap_or_else(|| {
        let mut types = vec!["Ingress".to_string()];
        if governed.egress.is_some() {
            types.push("Egress".to_string());
        }
        types
    });
    let selector = managed_labels();
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
            ingress: gateway_ingress(t),
            ..Default::default()
        }),
    })
}

/// In gateway mode with `isolated`, the baseline still admits the gateway (the provisioner's
/// Pods, or the configured peers) to the sandbox port: a sandbox whose own policy is missing
/// stays reachable through its URL and by nothing else.
fn gateway_ingress(t: &SandboxSpec) -> Option<Vec<NetworkPolicyIngressRule>> {
    let (SandboxUrls::Gateway(_), NetworkPolicyMode::Isolated { ingress_from, .. }) =
        (&t.urls, &t.network_policy)
    else {
        return None;
    };
    let rule = json!({
        "from": ingress_from,
        "ports": [{"port": i32::from(t.port), "protocol": "TCP"}],
    });
    Some(vec![
        serde_json::from_value(rule).expect("a valid ingress rule")
    ])
}

/// The sandbox's NetworkPolicy, when the configuration asks for one; owned by the Pod so that
/// the Pod's deletion removes it.
pub fn network_policy(
    t: &SandboxSpec,
    id: &SandboxId,
    thread: &ThreadId,
    owner: &Pod,
) -> Option<NetworkPolicy> {
    let mut spec = sandbox_policy_spec(t)?;
    spec.pod_selector = Some(LabelSelector {
        match_labels: Some(sandbox_selector(id)),
        ..LabelSelector::default()
    });
    Some(NetworkPolicy {
        metadata: owned_metadata(network_policy_name(id), &t.namespace, id, thread, owner),
        spec: Some(spec),
    })
}

#[cfg(test)]
mod tests {
    use super::{super::test_support::*, *};
    use crate::{
        k8s::manifests::{MANAGED_BY, MANAGED_BY_LABEL, SANDBOX_ID_LABEL},
        spec::network_policy::DEFAULT_EGRESS_DENY,
    };

    #[test]
    fn the_baseline_policy_denies_what_the_sandbox_policies_govern() {
        let mut t = spec(None, None);
        assert!(
            baseline_network_policy(&t).is_none(),
            "none without policies"
        );
        t.network_policy = NetworkPolicyMode::Isolated {
            ingress_from: vec![],
            egress_deny: vec!["10.0.0.0/8".into()],
            dns_to: vec![],
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

    fn dns_pods() -> Vec<NetworkPolicyPeer> {
        serde_json::from_str(crate::spec::network_policy::DEFAULT_DNS_TO).unwrap()
    }

    #[test]
    fn isolated_allows_the_port_the_clusters_dns_and_the_internet_only() {
        let deny: Vec<String> = DEFAULT_EGRESS_DENY.split(',').map(String::from).collect();
        let spec = serde_json::to_value(isolated_spec(8080, &[], &deny, &dns_pods())).unwrap();
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            spec["ingress"],
            json!([{"ports": [{"port": 8080, "protocol": "TCP"}]}])
        );
        // DNS only to the cluster's DNS Pods, never to any resolver on port 53.
        assert_eq!(
            spec["egress"][0],
            json!({
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                }],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            })
        );
        assert_eq!(
            spec["egress"][1]["to"][0]["ipBlock"],
            json!({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12",
                "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "168.63.129.16/32",
                "100.100.100.200/32"]})
        );
        // IPv6 is no longer wide open: private, link-local and the metadata address are closed.
        assert_eq!(
            spec["egress"][1]["to"][1]["ipBlock"],
            json!({"cidr": "::/0", "except": ["fc00::/7", "fe80::/10", "fd00:ec2::254/128"]})
        );
        assert_eq!(
            spec["egress"].as_array().unwrap().len(),
            2,
            "nothing else goes out"
        );
        let peers: Vec<NetworkPolicyPeer> =
            serde_json::from_value(json!([{"podSelector": {"matchLabels": {"app": "gateway"}}}]))
                .unwrap();
        let spec = serde_json::to_value(isolated_spec(9090, &peers, &deny, &dns_pods())).unwrap();
        assert_eq!(
            spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"],
            "gateway"
        );
    }

    #[test]
    fn in_gateway_mode_only_the_provisioners_pods_get_in() {
        // As the configuration makes it in gateway mode (config's tests check that part).
        let provisioner = json!([{"podSelector": {"matchLabels":
            {"app.kubernetes.io/name": "sandbox-provisioner"}}}]);
        let mut t = spec(None, None);
        t.network_policy = NetworkPolicyMode::Isolated {
            ingress_from: serde_json::from_value(provisioner.clone()).unwrap(),
            egress_deny: vec!["10.0.0.0/8".into()],
            dns_to: dns_pods(),
        };
        let direct = t.clone();
        t.urls = crate::spec::SandboxUrls::Gateway(std::sync::Arc::new(crate::spec::GatewayUrls {
            public_url: "http://provisioner:8002".into(),
            keys: crate::spec::GatewayKeys::new(b"0123456789abcdef0123456789abcdef", None),
        }));
        let t = &t;
        let (id, thread) = ids();
        let own = network_policy(t, &id, &thread, &a_pod(t)).unwrap();
        let own = serde_json::to_value(own).unwrap();
        assert_eq!(own["spec"]["ingress"][0]["from"], provisioner);
        // The baseline admits the gateway too (and nothing else), egress stays shut.
        let baseline = serde_json::to_value(baseline_network_policy(t).unwrap()).unwrap();
        assert_eq!(
            baseline["spec"]["ingress"],
            json!([{"from": provisioner, "ports": [{"port": 8080, "protocol": "TCP"}]}])
        );
        assert!(baseline["spec"].get("egress").is_none());
        assert_eq!(
            baseline["spec"]["policyTypes"],
            json!(["Ingress", "Egress"])
        );
        // Direct mode keeps today's baseline: nothing in.
        let baseline = baseline_network_policy(&direct).unwrap();
        assert!(serde_json::to_value(baseline).unwrap()["spec"]
            .get("ingress")
            .is_none());
    }
}
