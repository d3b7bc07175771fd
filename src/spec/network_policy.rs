//! Which NetworkPolicy each sandbox gets (`SANDBOX_NETWORK_POLICY`): none, `isolated`, or the
//! operator's own spec. The policies themselves are built in `k8s::manifests`.

use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};

/// The ranges isolated sandboxes may not reach by default.
pub const DEFAULT_EGRESS_DENY: &str = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16";

/// What NetworkPolicy, if any, each sandbox gets.
#[derive(Debug, Clone, PartialEq)]
pub enum NetworkPolicyMode {
    /// No policy (as DeerFlow's provisioner).
    None,
    Isolated {
        ingress_from: Vec<NetworkPolicyPeer>,
        egress_deny: Vec<String>,
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
