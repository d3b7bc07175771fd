//! Which NetworkPolicy each sandbox gets (`SANDBOX_NETWORK_POLICY`): none, `isolated`, or the
//! operator's own spec. The policies themselves are built in `k8s::manifests`.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};

/// The ranges isolated sandboxes may not reach by default: private (IPv4 and IPv6), shared
/// carrier-grade NAT, link-local, and the cloud metadata addresses outside those.
pub const DEFAULT_EGRESS_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,\
169.254.0.0/16,100.64.0.0/10,168.63.129.16/32,100.100.100.200/32,fc00::/7,fe80::/10,\
fd00:ec2::254/128";

/// Where isolated sandboxes may send DNS queries by default: the cluster's DNS Pods.
pub const DEFAULT_DNS_TO: &str = r#"[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]"#;

/// The label of the provisioner's own Pods (as `deploy/kubernetes` labels them): in gateway
/// mode, the only peers isolated sandboxes admit unless SANDBOX_NETWORK_POLICY_INGRESS_FROM
/// says otherwise.
pub const PROVISIONER_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "sandbox-provisioner");

/// What NetworkPolicy, if any, each sandbox gets.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkPolicyMode {
    /// No policy (as DeerFlow's provisioner).
    None,
    Isolated {
        /// Who may connect (anyone when empty).
        ingress_from: Vec<NetworkPolicyPeer>,
        egress_deny: Vec<String>,
        /// Where DNS queries (port 53) may go.
        dns_to: Vec<NetworkPolicyPeer>,
    },
    /// The operator's spec; its podSelector is replaced by the sandbox's.
    Template(NetworkPolicySpec),
}

impl NetworkPolicyMode {
    /// The mode as `GET /api/capabilities` names it.
    pub fn name(&self) -> &'static str {
        match self {
            NetworkPolicyMode::None => "none",
            NetworkPolicyMode::Isolated { .. } => "isolated",
            NetworkPolicyMode::Template(_) => "template",
        }
    }
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
}
