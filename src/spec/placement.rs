//! Where sandboxes may run: a fragment of PodSpec fields that operators set once
//! (`SANDBOX_PLACEMENT`), applied to every sandbox pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, PodSpec, Toleration, TopologySpreadConstraint};
use serde::{Deserialize, Serialize};

/// The PodSpec fields that place a sandbox. Unknown fields are refused, so a typo stops the
/// service at start instead of being silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Placement {
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    pub affinity: Option<Affinity>,
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    pub priority_class_name: Option<String>,
    pub runtime_class_name: Option<String>,
}

impl Placement {
    /// Parses the JSON fragment; the error names the offending field.
    pub fn parse(json: &str) -> Result<Placement, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// Sets the configured fields on a pod spec (unset fields leave it alone).
    pub fn apply(&self, spec: &mut PodSpec) {
        let p = self.clone();
        spec.node_selector = p.node_selector.or(spec.node_selector.take());
        spec.tolerations = p.tolerations.or(spec.tolerations.take());
        spec.affinity = p.affinity.or(spec.affinity.take());
        spec.topology_spread_constraints = p
            .topology_spread_constraints
            .or(spec.topology_spread_constraints.take());
        spec.priority_class_name = p.priority_class_name.or(spec.priority_class_name.take());
        spec.runtime_class_name = p.runtime_class_name.or(spec.runtime_class_name.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_applies_every_field() {
        let p = Placement::parse(
            r#"{
                "nodeSelector": {"pool": "sandboxes"},
                "tolerations": [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                    ]}]
                }}},
                "topologySpreadConstraints": [{
                    "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app": "deer-flow-sandbox"}}
                }],
                "priorityClassName": "sandbox-low",
                "runtimeClassName": "gvisor"
            }"#,
        )
        .unwrap();
        let mut spec = PodSpec::default();
        p.apply(&mut spec);
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["nodeSelector"]["pool"], "sandboxes");
        assert_eq!(v["tolerations"][0]["key"], "sandbox");
        assert_eq!(v["topologySpreadConstraints"][0]["maxSkew"], 1);
        assert_eq!(v["priorityClassName"], "sandbox-low");
        assert_eq!(v["runtimeClassName"], "gvisor");
        assert!(v["affinity"]["nodeAffinity"].is_object());
    }

    #[test]
    fn errors_name_the_field() {
        let e = Placement::parse(r#"{"nodeSelecter": {}}"#).unwrap_err();
        assert!(e.contains("nodeSelecter"), "{e}");
        let e =
            Placement::parse(r#"{"topologySpreadConstraints": [{"maxSkew": "one"}]}"#).unwrap_err();
        assert!(e.contains("invalid type"), "{e}");
        assert_eq!(Placement::parse("{}").unwrap(), Placement::default());
    }
}
