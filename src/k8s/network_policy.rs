//! Network isolation of sandboxes: one NetworkPolicy per sandbox, owned by its Pod.
//!
//! `isolated` lets traffic in only to the sandbox port (optionally only from configured peers)
//! and out only to DNS and the public internet, never to private, link-local (cloud metadata)
//! or configured cluster ranges. A template replaces that spec with the operator's own.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};
use serde_json::json;

/// The ranges isolated sandboxes may not reach by default.
pub const DEFAULT_EGRESS_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16";

/// What NetworkPolicy, if any, each sandbox gets.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkPolicyMode {
    /// No policy (the seed's behaviour).
    None,
    Isolated {
        ingress_from: Vec<NetworkPolicyPeer>,
        egress_deny: Vec<String>,
    },
    /// The operator's spec; its podSelector is replaced by the sandbox's.
    Template(NetworkPolicySpec),
}

/// A CIDR such as `10.0.0.0/8` or `fd00::/8`.
pub fn valid_cidr(text: &str) -> bool {
    let Some((ip, prefix)) = text.split_once('/') else {
        return false;
    };
    match (ip.parse::<IpAddr>(), prefix.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
        (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
        _ => false,
    }
}

/// The isolated spec for a sandbox serving on `port` (its podSelector is set by the caller).
pub fn isolated_spec(
    port: i32,
    ingress_from: &[NetworkPolicyPeer],
    egress_deny: &[String],
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
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}},
                {"ipBlock": {"cidr": "::/0", "except": v6}},
            ]},
        ],
    }))
    .expect("a valid NetworkPolicySpec")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        for ok in ["10.0.0.0/8", "169.254.0.0/16", "0.0.0.0/0", "fd00::/8"] {
            assert!(valid_cidr(ok), "{ok}");
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "ten/8", "", "::/129"] {
            assert!(!valid_cidr(bad), "{bad}");
        }
    }

    #[test]
    fn isolated_allows_the_port_dns_and_the_internet_only() {
        let deny: Vec<String> = DEFAULT_EGRESS_DENY
            .split(',')
            .map(String::from)
            .chain(["fd00::/8".to_string()])
            .collect();
        let spec = serde_json::to_value(isolated_spec(8080, &[], &deny)).unwrap();
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            spec["ingress"],
            json!([{"ports": [{"port": 8080, "protocol": "TCP"}]}])
        );
        assert_eq!(
            spec["egress"][0]["ports"][0],
            json!({"port": 53, "protocol": "UDP"})
        );
        assert_eq!(
            spec["egress"][1]["to"][0]["ipBlock"],
            json!({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]})
        );
        assert_eq!(
            spec["egress"][1]["to"][1]["ipBlock"],
            json!({"cidr": "::/0", "except": ["fd00::/8"]})
        );
        let peers: Vec<NetworkPolicyPeer> =
            serde_json::from_value(json!([{"podSelector": {"matchLabels": {"app": "gateway"}}}]))
                .unwrap();
        let spec = serde_json::to_value(isolated_spec(9090, &peers, &deny)).unwrap();
        assert_eq!(
            spec["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app"],
            "gateway"
        );
    }
}
