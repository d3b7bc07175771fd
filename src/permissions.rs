//! Every Kubernetes permission the service uses, in one table: `doctor` asks the apiserver
//! about exactly these, the shipped Role (`deploy/kubernetes/role.yaml`) is checked against
//! them in both directions, and a refusal at run time is explained from them
//! (`k8s::refusals`).
//!
//! All of them are namespaced rules in the sandbox namespace. Reading the namespace itself
//! works through a Role too: the apiserver authorizes `GET /api/v1/namespaces/{ns}` as a
//! request inside `{ns}`, so no cluster-scoped object is needed and an overlay that changes
//! the namespace carries the permission along.

/// Under which settings a permission is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeededWhen {
    Always,
    /// `SANDBOX_LEADER_LEASE` is not 0, or a quota is set (its lock is a Lease).
    LeaderElection,
    /// `SANDBOX_NETWORK_POLICY` is not `none`.
    NetworkPolicies,
    /// `SKILLS_PVC_NAME` or `USERDATA_PVC_NAME` is set.
    Claims,
    /// A cluster's gateway reach is `apiserver` (its service proxy).
    ApiServerReach,
    /// The namespace does not exist and the service must create it. The shipped manifests
    /// create the namespace themselves, so their Role does not grant this.
    NamespaceMissing,
}

/// One (API group, resource, verb) the service uses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// API group; "" is the core group.
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub when: NeededWhen,
    pub why: &'static str,
}

impl Permission {
    /// "watch pods", as logs, `/readyz` and `doctor` name it.
    pub fn label(&self) -> String {
        format!("{} {}", self.verb, self.resource)
    }

    /// What to do when the apiserver refuses it.
    pub fn fix(&self, namespace: &str) -> String {
        match self.when {
            NeededWhen::NamespaceMissing => format!(
                "create namespace {namespace} beforehand, or grant create on namespaces \
                 (a ClusterRole)"
            ),
            NeededWhen::ApiServerReach => format!(
                "add verb {} on {} to the Role of the credential used for this cluster in \
                 namespace {namespace} (see deploy/kubernetes/apiserver-reach)",
                self.verb, self.resource
            ),
            _ => format!(
                "add verb {} on {} (apiGroup \"{}\") to the provisioner's Role in namespace \
                 {namespace} (see deploy/kubernetes/role.yaml)",
                self.verb, self.resource, self.group
            ),
        }
    }
}

const fn permission(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    when: NeededWhen,
    why: &'static str,
) -> Permission {
    Permission {
        group,
        resource,
        verb,
        when,
        why,
    }
}

use NeededWhen::*;

const LEASES: &str = "coordination.k8s.io";
const POLICIES: &str = "networking.k8s.io";

/// The table. Keep it in step with what the code calls: a call whose (verb, resource) is
/// missing here is refused in the shipped deployment.
#[rustfmt::skip]
pub const PERMISSIONS: &[Permission] = &[
    permission("", "pods", "create", Always, "create sandboxes (and dry-run one at start)"),
    permission("", "pods", "get", Always, "read a sandbox the cache does not have"),
    permission("", "pods", "list", Always, "fill the watch cache; reads while it is not synced"),
    permission("", "pods", "watch", Always, "keep the cache current; wait for readiness"),
    permission("", "pods", "delete", Always, "delete sandboxes (API, reaper, sweep)"),
    permission("", "pods", "patch", Always, "record the last activity on the pod"),
    permission("", "services", "create", Always, "expose sandboxes"),
    permission("", "services", "get", Always, "read a Service the cache does not have"),
    permission("", "services", "list", Always, "fill the watch cache"),
    permission("", "services", "watch", Always, "keep the cache current"),
    permission("", "services", "delete", Always, "delete sandboxes and orphaned Services"),
    permission("", "configmaps", "create", Always, "suspend: keep a suspended sandbox's record"),
    permission("", "configmaps", "get", Always, "read a record the cache does not have"),
    permission("", "configmaps", "list", Always, "fill the watch cache of suspended sandboxes"),
    permission("", "configmaps", "watch", Always, "keep the suspended sandboxes current"),
    permission("", "configmaps", "delete", Always, "resume or delete a suspended sandbox"),
    permission("", "configmaps", "patch", Always, "take a suspended sandbox's resume (one replica)"),
    permission("", "namespaces", "get", Always, "readiness: the namespace is usable"),
    permission("", "namespaces", "create", NamespaceMissing, "create a missing namespace"),
    permission(LEASES, "leases", "get", LeaderElection, "read the leader Lease and quota locks"),
    permission(LEASES, "leases", "create", LeaderElection, "take a Lease the first time"),
    permission(LEASES, "leases", "update", LeaderElection, "renew a Lease or hand it over"),
    permission(POLICIES, "networkpolicies", "create", NetworkPolicies, "isolate sandboxes"),
    permission(POLICIES, "networkpolicies", "get", NetworkPolicies, "read one back on a repeat"),
    permission(POLICIES, "networkpolicies", "list", NetworkPolicies, "fill the watch cache"),
    permission(POLICIES, "networkpolicies", "watch", NetworkPolicies, "the sweep's copy"),
    permission(POLICIES, "networkpolicies", "delete", NetworkPolicies, "remove with the sandbox"),
    permission("", "persistentvolumeclaims", "get", Claims, "check the claims exist at start"),
    permission("", "services/proxy", "get", ApiServerReach, "gateway: GET/HEAD through the apiserver"),
    permission("", "services/proxy", "create", ApiServerReach, "gateway: POST through the apiserver"),
    permission("", "services/proxy", "update", ApiServerReach, "gateway: PUT through the apiserver"),
    permission("", "services/proxy", "patch", ApiServerReach, "gateway: PATCH through the apiserver"),
    permission("", "services/proxy", "delete", ApiServerReach, "gateway: DELETE through the apiserver"),
];

/// The node agent's permissions (`sandbox-provisioner node-agent`,
/// `deploy/kubernetes/node-agent`), in the sandbox namespace.
#[rustfmt::skip]
pub const NODE_AGENT_PERMISSIONS: &[Permission] = &[
    permission("", "pods", "list", Always, "list its node's pool Pods"),
    permission("", "pods", "watch", Always, "learn of claims as they happen"),
    permission("", "pods/status", "patch", Always, "set the data-bound condition"),
];

/// Which optional features a configuration uses, to pick the permissions it needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// The leader election, or quota locks (both are Leases).
    pub leader_election: bool,
    pub network_policies: bool,
    pub claims: bool,
    /// A cluster reached by the gateway through its apiserver.
    pub apiserver_reach: bool,
    pub namespace_missing: bool,
}

impl Features {
    /// Everything the shipped manifests support: all but creating the namespace.
    pub const SHIPPED: Features = Features {
        leader_election: true,
        network_policies: true,
        claims: true,
        // The shipped provisioner runs in its sandboxes' cluster and reaches their Pods; a
        // cluster reached through its apiserver gets the apiserver-reach component's Role.
        apiserver_reach: false,
        namespace_missing: false,
    };

    fn uses(&self, when: NeededWhen) -> bool {
        match when {
            Always => true,
            LeaderElection => self.leader_election,
            NetworkPolicies => self.network_policies,
            Claims => self.claims,
            ApiServerReach => self.apiserver_reach,
            NamespaceMissing => self.namespace_missing,
        }
    }
}

/// The permissions a configuration needs, in table order.
pub fn needed(features: Features) -> impl Iterator<Item = &'static Permission> {
    PERMISSIONS.iter().filter(move |p| features.uses(p.when))
}

/// The table's entry for a call, if it has one.
pub fn find(verb: &str, resource: &str) -> Option<&'static Permission> {
    PERMISSIONS
        .iter()
        .find(|p| p.verb == verb && p.resource == resource)
}

/// Role rules (as Kubernetes JSON) granting exactly what `features` needs: one rule per
/// group and resource.
pub fn role_rules(features: Features) -> serde_json::Value {
    let mut rules: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for p in needed(features) {
        match rules
            .iter_mut()
            .find(|(g, r, _)| *g == p.group && *r == p.resource)
        {
            Some((_, _, verbs)) => verbs.push(p.verb),
            None => rules.push((p.group, p.resource, vec![p.verb])),
        }
    }
    serde_json::Value::Array(
        rules
            .into_iter()
            .map(|(group, resource, verbs)| {
                serde_json::json!({"apiGroups": [group], "resources": [resource], "verbs": verbs})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::api::rbac::v1::Role;

    use super::*;

    /// (group, resource, verb) triples a Role grants.
    fn granted(role: &Role) -> BTreeSet<(String, String, String)> {
        let mut granted = BTreeSet::new();
        for rule in role.rules.iter().flatten() {
            assert!(
                rule.resource_names.is_none(),
                "the shipped Role should not need resourceNames: {rule:?}"
            );
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        granted
    }

    fn table(features: Features) -> BTreeSet<(String, String, String)> {
        needed(features)
            .map(|p| (p.group.into(), p.resource.into(), p.verb.into()))
            .collect()
    }

    #[test]
    fn the_shipped_role_grants_exactly_the_table() {
        let yaml = include_str!("../deploy/kubernetes/role.yaml");
        let role: Role = serde_saphyr::from_str(yaml).expect("role.yaml is a Role");
        let (granted, wanted) = (granted(&role), table(Features::SHIPPED));
        let missing: Vec<_> = wanted.difference(&granted).collect();
        let surplus: Vec<_> = granted.difference(&wanted).collect();
        assert!(
            missing.is_empty() && surplus.is_empty(),
            "deploy/kubernetes/role.yaml and src/permissions.rs disagree:\n\
             missing from the Role: {missing:?}\nin the Role but not used: {surplus:?}"
        );
    }

    #[test]
    fn the_apiserver_reach_component_grants_exactly_its_rows() {
        let yaml = include_str!("../deploy/kubernetes/apiserver-reach/role.yaml");
        let role: Role = serde_saphyr::from_str(yaml).expect("a Role");
        let with = table(Features {
            apiserver_reach: true,
            ..Features::default()
        });
        let wanted: BTreeSet<_> = with
            .difference(&table(Features::default()))
            .cloned()
            .collect();
        assert!(!wanted.is_empty());
        assert_eq!(granted(&role), wanted);
    }

    #[test]
    fn the_node_agent_component_grants_exactly_its_rows() {
        let yaml = include_str!("../deploy/kubernetes/node-agent/role.yaml");
        let role: Role = serde_saphyr::from_str(yaml).expect("a Role");
        let wanted: BTreeSet<_> = NODE_AGENT_PERMISSIONS
            .iter()
            .map(|p| {
                (
                    p.group.to_string(),
                    p.resource.to_string(),
                    p.verb.to_string(),
                )
            })
            .collect();
        assert_eq!(granted(&role), wanted);
    }

    #[test]
    fn role_rules_round_trip_through_a_role() {
        let rules = role_rules(Features::SHIPPED);
        let role: Role = serde_json::from_value(serde_json::json!({"rules": rules})).unwrap();
        assert_eq!(granted(&role), table(Features::SHIPPED));
    }

    #[test]
    fn features_pick_their_permissions() {
        let base = table(Features::default());
        assert!(base.iter().all(|(_, r, _)| r != "leases"
            && r != "networkpolicies"
            && r != "persistentvolumeclaims"));
        assert!(base.contains(&("".into(), "pods".into(), "watch".into())));
        assert!(base.contains(&("".into(), "pods".into(), "patch".into())));
        let with_leases = table(Features {
            leader_election: true,
            ..Features::default()
        });
        assert_eq!(with_leases.len(), base.len() + 3);
        let missing_namespace = table(Features {
            namespace_missing: true,
            ..Features::default()
        });
        assert!(missing_namespace.contains(&("".into(), "namespaces".into(), "create".into())));
    }

    #[test]
    fn every_entry_is_unique_and_findable() {
        let mut seen = BTreeSet::new();
        for p in PERMISSIONS {
            assert!(seen.insert((p.resource, p.verb)), "duplicate {p:?}");
            assert_eq!(find(p.verb, p.resource), Some(p));
        }
        assert_eq!(find("escalate", "pods"), None);
    }
}
