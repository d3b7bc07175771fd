//! Checks of single settings: each returns the typed value or a [`ConfigError`] that names
//! the variable and says how to fix it.

use std::time::Duration;

use super::{
    args::{SecurityArgs, SizeArgs},
    ConfigError,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;

use crate::{
    sandbox::{parse_duration, InvalidSizes, Resources, Sizes},
    spec::{
        network_policy::{valid_cidr, NetworkPolicyMode, DEFAULT_DNS_TO},
        Placement, PodTemplate, Seccomp,
    },
};

/// DeerFlow's size as "default", the operator's sizes over it, and the ceiling, validated.
pub(super) fn sizes(args: &SizeArgs) -> Result<Sizes, ConfigError> {
    let mut named =
        std::collections::BTreeMap::from([("default".to_string(), Sizes::deerflow_default())]);
    if let Some(json) = args
        .sandbox_sizes
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        let given: std::collections::BTreeMap<String, Resources> = serde_json::from_str(json)
            .map_err(|e| {
                ConfigError::new(
                    "SANDBOX_SIZES",
                    json,
                    format!(
                        "must be JSON like \
                    {{\"small\": {{\"requests\": {{\"cpu\": \"100m\"}}, \"limits\": {{\"cpu\": \
                    \"500m\"}}}}}}: {e}"
                    ),
                )
            })?;
        named.extend(given);
    }
    let max_resources = serde_json::from_str(&args.sandbox_max_resources).map_err(|e| {
        ConfigError::new(
            "SANDBOX_MAX_RESOURCES",
            &args.sandbox_max_resources,
            format!("must be JSON like {{\"cpu\": \"4\", \"memory\": \"8Gi\"}}: {e}"),
        )
    })?;
    let sizes = Sizes {
        sizes: named,
        default_size: args.sandbox_default_size.trim().to_string(),
        max_resources,
    };
    sizes.validate().map_err(|problem| {
        let (variable, value) = match &problem {
            InvalidSizes::UnknownDefault { .. } => {
                ("SANDBOX_DEFAULT_SIZE", args.sandbox_default_size.clone())
            }
            InvalidSizes::Maximum(_) => {
                ("SANDBOX_MAX_RESOURCES", args.sandbox_max_resources.clone())
            }
            InvalidSizes::Size { .. } => (
                "SANDBOX_SIZES",
                args.sandbox_sizes.clone().unwrap_or_default(),
            ),
        };
        ConfigError::new(variable, value, problem.to_string())
    })?;
    Ok(sizes)
}

/// A duration setting such as 90s, 10m, 2h or 0.
pub(super) fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| {
        ConfigError::new(
            variable,
            value,
            "must be a duration such as 90s, 10m, 2h or 1h30m (0 turns it off)",
        )
    })
}

/// The network policy mode and its settings.
pub(super) fn network_policy(args: &SecurityArgs) -> Result<NetworkPolicyMode, ConfigError> {
    let mode = args.sandbox_network_policy.trim();
    match mode {
        "" | "none" => Ok(NetworkPolicyMode::None),
        "isolated" => {
            let peers = |variable: &'static str, value: Option<&str>, default: &str| {
                let json = value.map(str::trim).filter(|v| !v.is_empty());
                serde_json::from_str::<Vec<NetworkPolicyPeer>>(json.unwrap_or(default)).map_err(
                    |e| {
                        ConfigError::new(
                            variable,
                            json.unwrap_or_default(),
                            format!(
                                "must be a JSON list of NetworkPolicy peers, for example \
                                [{{\"podSelector\": {{\"matchLabels\": {{\"app\": \
                                \"deer-flow-gateway\"}}}}}}]: {e}"
                            ),
                        )
                    },
                )
            };
            let ingress_from = peers(
                "SANDBOX_NETWORK_POLICY_INGRESS_FROM",
                args.sandbox_network_policy_ingress_from.as_deref(),
                "[]",
            )?;
            let dns_to = peers(
                "SANDBOX_NETWORK_POLICY_DNS_TO",
                args.sandbox_network_policy_dns_to.as_deref(),
                DEFAULT_DNS_TO,
            )?;
            let egress_deny: Vec<String> = args
                .sandbox_egress_deny_cidrs
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            if let Some(bad) = egress_deny.iter().find(|c| !valid_cidr(c)) {
                return Err(ConfigError::new(
                    "SANDBOX_EGRESS_DENY_CIDRS",
                    &args.sandbox_egress_deny_cidrs,
                    format!("{bad:?} is not a CIDR such as 10.0.0.0/8"),
                ));
            }
            Ok(NetworkPolicyMode::Isolated {
                ingress_from,
                egress_deny,
                dns_to,
            })
        }
        path if path.starts_with('/') => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "SANDBOX_NETWORK_POLICY",
                    path,
                    format!("cannot read the template: {e}"),
                )
            })?;
            let spec = serde_json::from_str(&text).map_err(|e| {
                ConfigError::new(
                    "SANDBOX_NETWORK_POLICY",
                    path,
                    format!(
                        "the template must be a JSON NetworkPolicy spec (policyTypes, \
                        ingress, egress): {e}"
                    ),
                )
            })?;
            Ok(NetworkPolicyMode::Template(spec))
        }
        other => Err(ConfigError::new(
            "SANDBOX_NETWORK_POLICY",
            other,
            "must be none, isolated, or the absolute path of a JSON NetworkPolicy spec",
        )),
    }
}

/// The placement fragment, inline JSON or a file path.
pub(super) fn placement(value: Option<&str>) -> Result<Placement, ConfigError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Placement::default());
    };
    let json = if value.starts_with('/') {
        std::fs::read_to_string(value).map_err(|e| {
            ConfigError::new(
                "SANDBOX_PLACEMENT",
                value,
                format!("cannot read the file: {e}"),
            )
        })?
    } else {
        value.to_string()
    };
    Placement::parse(&json).map_err(|e| {
        ConfigError::new(
            "SANDBOX_PLACEMENT",
            value,
            format!(
                "must be a JSON object of nodeSelector, tolerations, affinity, \
                topologySpreadConstraints, priorityClassName, runtimeClassName: {e}"
            ),
        )
    })
}

/// The pod template file (`SANDBOX_POD_TEMPLATE`), read and checked; the empty template
/// when unset.
pub(super) fn pod_template(path: Option<&std::path::Path>) -> Result<PodTemplate, String> {
    let Some(path) = path.filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(PodTemplate::default());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the pod template: {e}"))?;
    PodTemplate::parse(&text)
}

/// A placement and a pod template that set no field twice.
pub(super) fn placement_and_template(
    placement: &Placement,
    template: &PodTemplate,
) -> Result<(), String> {
    match template.overlap(placement) {
        Some(field) => Err(format!(
            "the pod template sets spec.{field}, which the placement (SANDBOX_PLACEMENT) sets \
                too: keep it in one of them"
        )),
        None => Ok(()),
    }
}

/// A PersistentVolumeClaim name: a DNS-1123 subdomain.
pub(super) fn claim_name(
    variable: &'static str,
    value: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(name) = value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(None);
    };
    let ok = name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(Some(name))
    } else {
        Err(ConfigError::new(
            variable,
            name,
            "must be the name of a PersistentVolumeClaim in K8S_NAMESPACE (lowercase letters, \
                digits, '-' and '.')",
        ))
    }
}

/// A sub-path inside a volume: relative and free of `..`.
pub(super) fn sub_path(
    variable: &'static str,
    value: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(path) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if path.starts_with('/')
        || path.split('/').any(|p| p == ".." || p.is_empty())
        || path.contains('\0')
    {
        return Err(ConfigError::new(
            variable,
            path,
            "must be a relative path inside the volume, without '..' or empty parts, for example \
                skills/public",
        ));
    }
    Ok(Some(path))
}

pub(super) fn seconds(
    variable: &'static str,
    value: f64,
    max: f64,
) -> Result<Duration, ConfigError> {
    if value.is_finite() && value > 0.0 && value <= max {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(ConfigError::new(
            variable,
            value.to_string(),
            format!("must be a number of seconds above 0 and at most {max}"),
        ))
    }
}

pub(super) fn positive(variable: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ConfigError::new(
            variable,
            value.to_string(),
            "must be at least 1",
        ))
    }
}

pub(super) fn seccomp(value: &str) -> Result<Seccomp, ConfigError> {
    match value.trim() {
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Unconfined" => Ok(Seccomp::Unconfined),
        other => match other.strip_prefix("Localhost/") {
            Some(path)
                if !path.is_empty()
                    && !path.starts_with('/')
                    && !path.split('/').any(|p| p == "..") =>
            {
                Ok(Seccomp::Localhost(path.to_string()))
            }
            _ => Err(ConfigError::new(
                "SANDBOX_SECCOMP_PROFILE",
                value,
                "must be RuntimeDefault, Unconfined, or Localhost/<path relative to the kubelet's \
                    seccomp directory>",
            )),
        },
    }
}

/// A comma-separated list of capability names, upper-cased, with any `CAP_` prefix removed.
pub(super) fn capabilities(
    variable: &'static str,
    value: &str,
) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let name = c.to_ascii_uppercase();
            let name = name.strip_prefix("CAP_").unwrap_or(&name).to_string();
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit())
            {
                Ok(name)
            } else {
                Err(ConfigError::new(
                    variable,
                    value,
                    "must be a comma-separated list of capability names such as \
                        NET_ADMIN,SYS_PTRACE (or ALL)",
                ))
            }
        })
        .collect()
}

pub(super) fn validate_namespace(ns: &str) -> Result<(), ConfigError> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "K8S_NAMESPACE",
            ns,
            "must be a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending \
                with a letter or digit",
        ))
    }
}

/// Host paths become hostPath volumes: they must be absolute and must not climb with `..`.
pub(super) fn host_path(
    variable: &'static str,
    value: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !raw.starts_with('/') {
        return Err(ConfigError::new(
            variable,
            &raw,
            "must be an absolute path on the Kubernetes node's host, for example \
                /srv/deer-flow/skills",
        ));
    }
    if raw.split('/').any(|part| part == "..") {
        return Err(ConfigError::new(
            variable,
            &raw,
            "must not contain '..': give the resolved absolute path (for example from `realpath`)",
        ));
    }
    if raw.contains('\0') {
        return Err(ConfigError::new(
            variable,
            &raw,
            "must not contain NUL bytes",
        ));
    }
    let trimmed = raw.trim_end_matches('/');
    Ok(Some(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }))
}

pub(super) fn api_server_uri(s: &str) -> Result<http::Uri, ConfigError> {
    let problem = "must be an absolute URL such as https://host.docker.internal:6443";
    let uri: http::Uri = s
        .trim()
        .parse()
        .map_err(|_| ConfigError::new("K8S_API_SERVER", s, problem))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https" | "http"), Some(_)) => Ok(uri),
        _ => Err(ConfigError::new("K8S_API_SERVER", s, problem)),
    }
}
