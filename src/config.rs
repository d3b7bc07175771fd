//! Configuration: every flag and environment variable, parsed once and validated at start.
//!
//! The environment variable names and defaults are those of DeerFlow's provisioner, so an
//! existing deployment keeps working unchanged.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    k8s::{
        network_policy::{valid_cidr, NetworkPolicyMode, DEFAULT_EGRESS_DENY},
        placement::Placement,
    },
    sandbox::{parse_duration, Resources, Sizes, Timers},
};

/// The seed's default sandbox image.
pub const DEFAULT_IMAGE: &str =
    "enterprise-public-cn-beijing.cr.volces.com/vefaas-public/all-in-one-sandbox:latest";

/// Flags of `sandbox-provisioner serve`; each can also be given as the named environment variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address and port the HTTP API listens on.
    #[arg(long, env = "PROVISIONER_LISTEN", default_value = "0.0.0.0:8002")]
    pub listen: String,

    /// Namespace that holds the sandboxes' Pods and Services (created when missing).
    #[arg(long, env = "K8S_NAMESPACE", default_value = "deer-flow")]
    pub namespace: String,

    /// Container image of every sandbox.
    #[arg(long, env = "SANDBOX_IMAGE", default_value = DEFAULT_IMAGE)]
    pub sandbox_image: String,

    /// Host directory of shared skills, mounted read-only at /mnt/skills (absolute path).
    #[arg(long, env = "SKILLS_HOST_PATH")]
    pub skills_host_path: Option<String>,

    /// Host directory of per-thread data; `{path}/{thread_id}/user-data` is mounted at
    /// /mnt/user-data (absolute path). Unset: an emptyDir that lives as long as the pod.
    #[arg(long, env = "THREADS_HOST_PATH")]
    pub threads_host_path: Option<String>,

    /// PersistentVolumeClaim mounted read-only at /mnt/skills, instead of SKILLS_HOST_PATH (for
    /// clusters without shared host paths).
    #[arg(long, env = "SKILLS_PVC_NAME")]
    pub skills_pvc_name: Option<String>,

    /// Directory inside SKILLS_PVC_NAME to mount (relative, no '..'); the whole volume when unset.
    #[arg(long, env = "SKILLS_PVC_SUBPATH")]
    pub skills_pvc_subpath: Option<String>,

    /// PersistentVolumeClaim holding user data, instead of THREADS_HOST_PATH: sub-path
    /// `threads/{thread_id}/user-data` is mounted at /mnt/user-data.
    #[arg(long, env = "USERDATA_PVC_NAME")]
    pub userdata_pvc_name: Option<String>,

    /// Kubeconfig file; when it does not exist, KUBECONFIG and then the in-cluster service
    /// account are tried.
    #[arg(long, env = "KUBECONFIG_PATH", default_value = "/root/.kube/config")]
    pub kubeconfig_path: PathBuf,

    /// Host name the backend uses to reach node ports; sandbox URLs are `http://NODE_HOST:port`.
    #[arg(long, env = "NODE_HOST", default_value = "host.docker.internal")]
    pub node_host: String,

    /// Replaces the kubeconfig's API server address (e.g. https://host.docker.internal:6443).
    /// The certificate is still verified against the kubeconfig's own host name.
    #[arg(long, env = "K8S_API_SERVER")]
    pub k8s_api_server: Option<String>,

    /// Turns off TLS verification of the API server. Unsafe: only for throw-away clusters.
    #[arg(long, env = "K8S_INSECURE_SKIP_TLS_VERIFY", default_value_t = false)]
    pub k8s_insecure_skip_tls_verify: bool,

    /// Time limit of every Kubernetes API call, in seconds.
    #[arg(long, env = "K8S_API_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub k8s_api_timeout_seconds: f64,

    /// How the backend reaches sandboxes: NodePort (URL http://NODE_HOST:nodePort) or ClusterIP
    /// (URL http://sandbox-{id}-svc.{namespace}.svc.cluster.local:PORT, for in-cluster backends).
    #[arg(long, env = "SANDBOX_SERVICE_TYPE", default_value = "NodePort")]
    pub sandbox_service_type: String,

    /// Port the sandbox image serves on: container port, probes and service port.
    #[arg(long, env = "SANDBOX_CONTAINER_PORT", default_value_t = 8080)]
    pub sandbox_container_port: u16,

    /// Named resource sizes callers may choose, as JSON: {"NAME": {"requests": {...}, "limits":
    /// {...}}, ...} with cpu, memory and ephemeral-storage quantities. A size "default" with the
    /// seed's values always exists unless redefined here.
    #[arg(long, env = "SANDBOX_SIZES")]
    pub sandbox_sizes: Option<String>,

    /// The size used when a request names none.
    #[arg(long, env = "SANDBOX_DEFAULT_SIZE", default_value = "default")]
    pub sandbox_default_size: String,

    /// Ceiling of every request and limit, as JSON {"cpu": ..., "memory": ...,
    /// "ephemeral-storage": ...}; callers asking for more get 422.
    #[arg(
        long,
        env = "SANDBOX_MAX_RESOURCES",
        default_value = r#"{"cpu":"4","memory":"8Gi","ephemeral-storage":"10Gi"}"#
    )]
    pub sandbox_max_resources: String,

    /// Where sandboxes run: a JSON object of PodSpec fields (nodeSelector, tolerations,
    /// affinity, topologySpreadConstraints, priorityClassName, runtimeClassName), or the path
    /// of a file holding one.
    #[arg(long, env = "SANDBOX_PLACEMENT")]
    pub sandbox_placement: Option<String>,

    /// Network isolation of sandboxes: none, isolated, or the absolute path of a JSON file with
    /// a NetworkPolicy spec to use as the template.
    #[arg(long, env = "SANDBOX_NETWORK_POLICY", default_value = "none")]
    pub sandbox_network_policy: String,

    /// With `isolated`: who may connect to sandboxes, as a JSON list of NetworkPolicy peers
    /// (podSelector / namespaceSelector / ipBlock); anyone when unset.
    #[arg(long, env = "SANDBOX_NETWORK_POLICY_INGRESS_FROM")]
    pub sandbox_network_policy_ingress_from: Option<String>,

    /// With `isolated`: ranges sandboxes may not reach (comma-separated CIDRs). Add the cluster's
    /// pod and service ranges when they lie outside these.
    #[arg(long, env = "SANDBOX_EGRESS_DENY_CIDRS", default_value = DEFAULT_EGRESS_DENY)]
    pub sandbox_egress_deny_cidrs: String,

    /// Longest a sandbox may live from creation (e.g. 2h); 0 = no limit. Also the ceiling of a
    /// request's ttl_seconds.
    #[arg(long, env = "SANDBOX_MAX_LIFETIME", default_value = "0")]
    pub sandbox_max_lifetime: String,

    /// Remove a sandbox after this long without activity (create, GET, keepalive); 0 = never.
    /// Also the ceiling of a request's idle_timeout_seconds.
    #[arg(long, env = "SANDBOX_IDLE_TIMEOUT", default_value = "0")]
    pub sandbox_idle_timeout: String,

    /// Remove a sandbox that has not become ready this long after creation; 0 = never.
    #[arg(long, env = "SANDBOX_READY_TIMEOUT", default_value = "15m")]
    pub sandbox_ready_timeout: String,

    /// How often expired sandboxes are looked for.
    #[arg(long, env = "SANDBOX_REAP_INTERVAL", default_value = "10s")]
    pub sandbox_reap_interval: String,

    /// How often, at most, a sandbox's last activity is written to its pod (so that a restarted
    /// or second provisioner knows it); activity in between is kept in memory. With the
    /// election on, idle deadlines are this much later, so that activity another replica saw is
    /// never missed.
    #[arg(long, env = "SANDBOX_ACTIVITY_PERSIST_INTERVAL", default_value = "30s")]
    pub sandbox_activity_persist_interval: String,

    /// Lease duration for electing the one replica that reaps and sweeps, so that any number
    /// of replicas can run; 0 = no election (only safe with a single replica).
    #[arg(long, env = "SANDBOX_LEADER_LEASE", default_value = "15s")]
    pub sandbox_leader_lease: String,

    /// How old a pod without its Service or NetworkPolicy, or a Service or NetworkPolicy without
    /// its pod, must be before the sweeper repairs or removes it.
    #[arg(long, env = "SANDBOX_ORPHAN_GRACE", default_value = "60s")]
    pub sandbox_orphan_grace: String,

    /// Key every /api/* request must present as `X-API-Key: KEY` or `Authorization: Bearer KEY`.
    /// Unset: the API is open (a warning is logged).
    #[arg(long, env = "PROVISIONER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Refuse to start without PROVISIONER_API_KEY.
    #[arg(long, env = "PROVISIONER_REQUIRE_API_KEY", default_value_t = false)]
    pub require_api_key: bool,

    /// Largest request body accepted, in bytes (413 above it).
    #[arg(long, env = "PROVISIONER_MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,

    /// Time limit of a whole API request, in seconds (503 after it).
    #[arg(
        long,
        env = "PROVISIONER_REQUEST_TIMEOUT_SECONDS",
        default_value_t = 30.0
    )]
    pub request_timeout_seconds: f64,

    /// Requests served at once; more are refused at once with 503 and Retry-After.
    #[arg(
        long,
        env = "PROVISIONER_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256
    )]
    pub max_concurrent_requests: usize,

    /// After SIGTERM or Ctrl-C, how long in-flight requests may take before the process exits.
    #[arg(
        long,
        env = "PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 20.0
    )]
    pub shutdown_timeout_seconds: f64,

    /// Mount a Kubernetes API token into sandboxes (off: sandboxed code gets no cluster credential).
    #[arg(
        long,
        env = "SANDBOX_AUTOMOUNT_SERVICE_ACCOUNT_TOKEN",
        default_value_t = false
    )]
    pub sandbox_automount_service_account_token: bool,

    /// Inject environment variables for every Service in the namespace (off: sandboxes do not
    /// learn about each other).
    #[arg(long, env = "SANDBOX_ENABLE_SERVICE_LINKS", default_value_t = false)]
    pub sandbox_enable_service_links: bool,

    /// Seccomp profile of sandboxes: RuntimeDefault, Unconfined, or Localhost/<profile path>.
    #[arg(
        long,
        env = "SANDBOX_SECCOMP_PROFILE",
        default_value = "RuntimeDefault"
    )]
    pub sandbox_seccomp_profile: String,

    /// Let sandbox processes gain privileges (setuid binaries such as sudo).
    #[arg(
        long,
        env = "SANDBOX_ALLOW_PRIVILEGE_ESCALATION",
        default_value_t = false
    )]
    pub sandbox_allow_privilege_escalation: bool,

    /// Linux capabilities dropped from the sandbox container (comma-separated; empty for none).
    #[arg(long, env = "SANDBOX_CAPABILITIES_DROP", default_value = "ALL")]
    pub sandbox_capabilities_drop: String,

    /// Linux capabilities added back (comma-separated; empty for none). The default is what a
    /// root-based image usually needs, without NET_RAW, MKNOD, SETFCAP, SYS_CHROOT, AUDIT_WRITE.
    #[arg(
        long,
        env = "SANDBOX_CAPABILITIES_ADD",
        default_value = "CHOWN,DAC_OVERRIDE,FOWNER,FSETID,KILL,NET_BIND_SERVICE,SETGID,SETUID,SETPCAP"
    )]
    pub sandbox_capabilities_add: String,
}

/// How sandbox Services expose the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    NodePort,
    ClusterIp,
}

/// Security settings of every sandbox pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSecurity {
    pub automount_service_account_token: bool,
    pub enable_service_links: bool,
    pub seccomp: Seccomp,
    pub allow_privilege_escalation: bool,
    pub capabilities_drop: Vec<String>,
    pub capabilities_add: Vec<String>,
}

/// The pod's seccomp profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

/// Limits that keep the HTTP API responsive under abuse.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub shutdown_timeout: Duration,
}

/// Validated configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub namespace: String,
    pub sandbox_image: String,
    pub skills_host_path: Option<String>,
    pub threads_host_path: Option<String>,
    /// Claim and optional sub-path for /mnt/skills.
    pub skills_pvc: Option<(String, Option<String>)>,
    /// Claim for /mnt/user-data.
    pub userdata_pvc: Option<String>,
    pub kubeconfig_path: PathBuf,
    pub node_host: String,
    pub service_type: ServiceType,
    pub container_port: u16,
    pub sizes: Sizes,
    pub placement: Placement,
    pub network_policy: NetworkPolicyMode,
    /// The configured timers: defaults and ceilings of per-request values.
    pub timers: Timers,
    pub reap_interval: Duration,
    pub leader_lease: Duration,
    pub orphan_grace: Duration,
    pub activity_persist_interval: Duration,
    pub k8s_api_server: Option<http::Uri>,
    pub k8s_insecure_skip_tls_verify: bool,
    pub k8s_api_timeout: Duration,
    pub api_key: Option<String>,
    pub limits: HttpLimits,
    pub pod_security: PodSecurity,
}

/// A setting that stops the service at start; the message names the variable and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {variable}={value:?}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &'static str, value: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            variable,
            value: value.into(),
            problem: problem.into(),
        }
    }
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let sizes = sizes(&args)?;
        let placement = placement(args.sandbox_placement.as_deref())?;
        let network_policy = network_policy(&args)?;
        let timers = Timers {
            lifetime: duration("SANDBOX_MAX_LIFETIME", &args.sandbox_max_lifetime)?,
            idle: duration("SANDBOX_IDLE_TIMEOUT", &args.sandbox_idle_timeout)?,
            ready: duration("SANDBOX_READY_TIMEOUT", &args.sandbox_ready_timeout)?,
        };
        let reap_interval = duration("SANDBOX_REAP_INTERVAL", &args.sandbox_reap_interval)?;
        if reap_interval.is_zero() {
            return Err(ConfigError::new(
                "SANDBOX_REAP_INTERVAL",
                &args.sandbox_reap_interval,
                "must be above 0, for example 10s",
            ));
        }
        let leader_lease = duration("SANDBOX_LEADER_LEASE", &args.sandbox_leader_lease)?;
        if !leader_lease.is_zero() && leader_lease < Duration::from_secs(3) {
            return Err(ConfigError::new(
                "SANDBOX_LEADER_LEASE",
                &args.sandbox_leader_lease,
                "must be 0 (no election) or at least 3s",
            ));
        }
        let orphan_grace = duration("SANDBOX_ORPHAN_GRACE", &args.sandbox_orphan_grace)?;
        let activity_persist_interval = duration(
            "SANDBOX_ACTIVITY_PERSIST_INTERVAL",
            &args.sandbox_activity_persist_interval,
        )?;
        let listen = args.listen.parse().map_err(|_| {
            ConfigError::new(
                "PROVISIONER_LISTEN",
                &args.listen,
                "must be ADDRESS:PORT, for example 0.0.0.0:8002",
            )
        })?;
        validate_namespace(&args.namespace)?;
        if args.sandbox_image.trim().is_empty() {
            return Err(ConfigError::new(
                "SANDBOX_IMAGE",
                &args.sandbox_image,
                "must name a container image, for example python:3.12-slim",
            ));
        }
        let skills_host_path = host_path("SKILLS_HOST_PATH", args.skills_host_path)?;
        let threads_host_path = host_path("THREADS_HOST_PATH", args.threads_host_path)?;
        let skills_pvc = match claim_name("SKILLS_PVC_NAME", args.skills_pvc_name)? {
            Some(claim) => Some((
                claim,
                sub_path("SKILLS_PVC_SUBPATH", args.skills_pvc_subpath)?,
            )),
            None => None,
        };
        let userdata_pvc = claim_name("USERDATA_PVC_NAME", args.userdata_pvc_name)?;
        if skills_pvc.is_some() && skills_host_path.is_some() {
            return Err(ConfigError::new(
                "SKILLS_PVC_NAME",
                skills_pvc.clone().map(|c| c.0).unwrap_or_default(),
                "is set together with SKILLS_HOST_PATH: choose one source for /mnt/skills",
            ));
        }
        if userdata_pvc.is_some() && threads_host_path.is_some() {
            return Err(ConfigError::new(
                "USERDATA_PVC_NAME",
                userdata_pvc.clone().unwrap_or_default(),
                "is set together with THREADS_HOST_PATH: choose one source for /mnt/user-data",
            ));
        }
        if args.node_host.trim().is_empty() || args.node_host.contains(['/', ' ', '@']) {
            return Err(ConfigError::new(
                "NODE_HOST",
                &args.node_host,
                "must be a bare host name or IP address, for example host.docker.internal",
            ));
        }
        let k8s_api_server = match args.k8s_api_server.filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(s) => Some(api_server_uri(&s)?),
        };
        let service_type = match args.sandbox_service_type.trim() {
            "NodePort" => ServiceType::NodePort,
            "ClusterIP" => ServiceType::ClusterIp,
            other => {
                return Err(ConfigError::new(
                    "SANDBOX_SERVICE_TYPE",
                    other,
                    "must be NodePort (URLs on NODE_HOST) or ClusterIP (cluster DNS URLs for backends inside the cluster)",
                ))
            }
        };
        if args.sandbox_container_port == 0 {
            return Err(ConfigError::new(
                "SANDBOX_CONTAINER_PORT",
                "0",
                "must be a port from 1 to 65535, for example 8080",
            ));
        }
        let k8s_api_timeout = seconds(
            "K8S_API_TIMEOUT_SECONDS",
            args.k8s_api_timeout_seconds,
            300.0,
        )?;
        let api_key = args.api_key.filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    "PROVISIONER_API_KEY",
                    "(hidden)",
                    "must be at least 16 characters without spaces or control characters, for example from `openssl rand -hex 32`",
                ));
            }
        } else if args.require_api_key {
            return Err(ConfigError::new(
                "PROVISIONER_API_KEY",
                "",
                "is required because PROVISIONER_REQUIRE_API_KEY is set: set a key (for example from `openssl rand -hex 32`) or unset PROVISIONER_REQUIRE_API_KEY",
            ));
        }
        let limits = HttpLimits {
            max_body_bytes: positive("PROVISIONER_MAX_BODY_BYTES", args.max_body_bytes)?,
            request_timeout: seconds(
                "PROVISIONER_REQUEST_TIMEOUT_SECONDS",
                args.request_timeout_seconds,
                3600.0,
            )?,
            max_concurrent_requests: positive(
                "PROVISIONER_MAX_CONCURRENT_REQUESTS",
                args.max_concurrent_requests,
            )?,
            shutdown_timeout: seconds(
                "PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS",
                args.shutdown_timeout_seconds,
                3600.0,
            )?,
        };
        let pod_security = PodSecurity {
            automount_service_account_token: args.sandbox_automount_service_account_token,
            enable_service_links: args.sandbox_enable_service_links,
            seccomp: seccomp(&args.sandbox_seccomp_profile)?,
            allow_privilege_escalation: args.sandbox_allow_privilege_escalation,
            capabilities_drop: capabilities(
                "SANDBOX_CAPABILITIES_DROP",
                &args.sandbox_capabilities_drop,
            )?,
            capabilities_add: capabilities(
                "SANDBOX_CAPABILITIES_ADD",
                &args.sandbox_capabilities_add,
            )?,
        };
        Ok(Config {
            listen,
            namespace: args.namespace,
            sandbox_image: args.sandbox_image.trim().to_string(),
            skills_host_path,
            threads_host_path,
            skills_pvc,
            userdata_pvc,
            kubeconfig_path: args.kubeconfig_path,
            node_host: args.node_host.trim().to_string(),
            service_type,
            container_port: args.sandbox_container_port,
            sizes,
            placement,
            network_policy,
            timers,
            reap_interval,
            leader_lease,
            orphan_grace,
            activity_persist_interval,
            k8s_api_server,
            k8s_insecure_skip_tls_verify: args.k8s_insecure_skip_tls_verify,
            k8s_api_timeout,
            api_key,
            limits,
            pod_security,
        })
    }
}

/// The seed's size as "default", the operator's sizes over it, and the ceiling, validated.
fn sizes(args: &ServeArgs) -> Result<Sizes, ConfigError> {
    let mut named =
        std::collections::BTreeMap::from([("default".to_string(), Sizes::seed_default())]);
    if let Some(json) = args
        .sandbox_sizes
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        let given: std::collections::BTreeMap<String, Resources> = serde_json::from_str(json).map_err(|e| {
            ConfigError::new(
                "SANDBOX_SIZES",
                json,
                format!("must be JSON like {{\"small\": {{\"requests\": {{\"cpu\": \"100m\"}}, \"limits\": {{\"cpu\": \"500m\"}}}}}}: {e}"),
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
        let variable = if problem.starts_with("the default size") {
            "SANDBOX_DEFAULT_SIZE"
        } else if problem.starts_with("max ")
            || problem.contains("unknown resource") && !problem.starts_with("size")
        {
            "SANDBOX_MAX_RESOURCES"
        } else {
            "SANDBOX_SIZES"
        };
        ConfigError::new(
            variable,
            args.sandbox_sizes.clone().unwrap_or_default(),
            problem,
        )
    })?;
    Ok(sizes)
}

/// A duration setting such as 90s, 10m, 2h or 0.
fn duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| {
        ConfigError::new(
            variable,
            value,
            "must be a duration such as 90s, 10m, 2h or 1h30m (0 turns it off)",
        )
    })
}

/// The network policy mode and its settings.
fn network_policy(args: &ServeArgs) -> Result<NetworkPolicyMode, ConfigError> {
    let mode = args.sandbox_network_policy.trim();
    match mode {
        "" | "none" => Ok(NetworkPolicyMode::None),
        "isolated" => {
            let ingress_from = match args.sandbox_network_policy_ingress_from.as_deref().map(str::trim) {
                None | Some("") => Vec::new(),
                Some(json) => serde_json::from_str(json).map_err(|e| {
                    ConfigError::new(
                        "SANDBOX_NETWORK_POLICY_INGRESS_FROM",
                        json,
                        format!("must be a JSON list of NetworkPolicy peers, for example [{{\"podSelector\": {{\"matchLabels\": {{\"app\": \"deer-flow-gateway\"}}}}}}]: {e}"),
                    )
                })?,
            };
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
                    format!("the template must be a JSON NetworkPolicy spec (policyTypes, ingress, egress): {e}"),
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
fn placement(value: Option<&str>) -> Result<Placement, ConfigError> {
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
            format!("must be a JSON object of nodeSelector, tolerations, affinity, topologySpreadConstraints, priorityClassName, runtimeClassName: {e}"),
        )
    })
}

/// A PersistentVolumeClaim name: a DNS-1123 subdomain.
fn claim_name(
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
            "must be the name of a PersistentVolumeClaim in K8S_NAMESPACE (lowercase letters, digits, '-' and '.')",
        ))
    }
}

/// A sub-path inside a volume: relative and free of `..`.
fn sub_path(variable: &'static str, value: Option<String>) -> Result<Option<String>, ConfigError> {
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
            "must be a relative path inside the volume, without '..' or empty parts, for example skills/public",
        ));
    }
    Ok(Some(path))
}

fn seconds(variable: &'static str, value: f64, max: f64) -> Result<Duration, ConfigError> {
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

fn positive(variable: &'static str, value: usize) -> Result<usize, ConfigError> {
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

fn seccomp(value: &str) -> Result<Seccomp, ConfigError> {
    match value.trim() {
        "RuntimeDefault" => Ok(Seccomp::RuntimeDefault),
        "Unconfined" => Ok(Seccomp::Unconfined),
        other => match other.strip_prefix("Localhost/") {
            Some(path) if !path.is_empty() && !path.starts_with('/') && !path.split('/').any(|p| p == "..") => {
                Ok(Seccomp::Localhost(path.to_string()))
            }
            _ => Err(ConfigError::new(
                "SANDBOX_SECCOMP_PROFILE",
                value,
                "must be RuntimeDefault, Unconfined, or Localhost/<path relative to the kubelet's seccomp directory>",
            )),
        },
    }
}

/// A comma-separated list of capability names, upper-cased, with any `CAP_` prefix removed.
fn capabilities(variable: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let name = c.to_ascii_uppercase();
            let name = name.strip_prefix("CAP_").unwrap_or(&name).to_string();
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()) {
                Ok(name)
            } else {
                Err(ConfigError::new(
                    variable,
                    value,
                    "must be a comma-separated list of capability names such as NET_ADMIN,SYS_PTRACE (or ALL)",
                ))
            }
        })
        .collect()
}

fn validate_namespace(ns: &str) -> Result<(), ConfigError> {
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
            "must be a DNS-1123 label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        ))
    }
}

/// Host paths become hostPath volumes: they must be absolute and must not climb with `..`.
fn host_path(variable: &'static str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if !raw.starts_with('/') {
        return Err(ConfigError::new(
            variable,
            &raw,
            "must be an absolute path on the Kubernetes node's host, for example /srv/deer-flow/skills",
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

fn api_server_uri(s: &str) -> Result<http::Uri, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["test"];
        argv.extend_from_slice(args);
        Config::try_from(TestCli::try_parse_from(argv).unwrap().serve)
    }

    #[test]
    fn defaults_are_the_seeds() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8002");
        assert_eq!(c.namespace, "deer-flow");
        assert_eq!(c.sandbox_image, DEFAULT_IMAGE);
        assert_eq!(c.node_host, "host.docker.internal");
        assert_eq!(c.kubeconfig_path, PathBuf::from("/root/.kube/config"));
        assert_eq!(c.k8s_api_server, None);
        assert!(!c.k8s_insecure_skip_tls_verify);
    }

    #[test]
    fn relative_host_path_names_the_variable() {
        let e = parse(&["--skills-host-path", "skills"]).unwrap_err();
        assert_eq!(e.variable, "SKILLS_HOST_PATH");
        assert!(e.to_string().contains("absolute"), "{e}");
    }

    #[test]
    fn dotdot_host_path_is_refused() {
        let e = parse(&["--threads-host-path", "/srv/../etc"]).unwrap_err();
        assert_eq!(e.variable, "THREADS_HOST_PATH");
        assert!(e.to_string().contains(".."), "{e}");
        assert!(parse(&["--threads-host-path", "/srv/..data"]).is_ok());
    }

    #[test]
    fn host_paths_lose_trailing_slashes() {
        let c = parse(&["--threads-host-path", "/srv/threads/"]).unwrap();
        assert_eq!(c.threads_host_path.as_deref(), Some("/srv/threads"));
    }

    #[test]
    fn bad_namespace_listen_server_and_timeout_are_refused() {
        assert_eq!(
            parse(&["--namespace", "Deer_Flow"]).unwrap_err().variable,
            "K8S_NAMESPACE"
        );
        assert_eq!(
            parse(&["--listen", "8002"]).unwrap_err().variable,
            "PROVISIONER_LISTEN"
        );
        assert_eq!(
            parse(&["--k8s-api-server", "host.docker.internal"])
                .unwrap_err()
                .variable,
            "K8S_API_SERVER"
        );
        assert_eq!(
            parse(&["--k8s-api-timeout-seconds", "0"])
                .unwrap_err()
                .variable,
            "K8S_API_TIMEOUT_SECONDS"
        );
        assert_eq!(
            parse(&["--node-host", "http://x"]).unwrap_err().variable,
            "NODE_HOST"
        );
    }

    #[test]
    fn security_defaults_are_strict() {
        let c = parse(&[]).unwrap();
        let s = c.pod_security;
        assert!(
            !s.automount_service_account_token
                && !s.enable_service_links
                && !s.allow_privilege_escalation
        );
        assert_eq!(s.seccomp, Seccomp::RuntimeDefault);
        assert_eq!(s.capabilities_drop, ["ALL"]);
        assert!(!s.capabilities_add.contains(&"NET_RAW".to_string()));
        assert!(s.capabilities_add.contains(&"SETUID".to_string()));
        assert_eq!(c.api_key, None);
    }

    #[test]
    fn security_settings_are_parsed_and_checked() {
        let c = parse(&[
            "--sandbox-seccomp-profile",
            "Localhost/profiles/sandbox.json",
            "--sandbox-capabilities-add",
            "cap_sys_ptrace, NET_ADMIN",
            "--sandbox-capabilities-drop",
            "",
        ])
        .unwrap();
        assert_eq!(
            c.pod_security.seccomp,
            Seccomp::Localhost("profiles/sandbox.json".into())
        );
        assert_eq!(c.pod_security.capabilities_add, ["SYS_PTRACE", "NET_ADMIN"]);
        assert!(c.pod_security.capabilities_drop.is_empty());
        assert_eq!(
            parse(&["--sandbox-seccomp-profile", "Bogus"])
                .unwrap_err()
                .variable,
            "SANDBOX_SECCOMP_PROFILE"
        );
        assert_eq!(
            parse(&["--sandbox-capabilities-add", "NET ADMIN"])
                .unwrap_err()
                .variable,
            "SANDBOX_CAPABILITIES_ADD"
        );
    }

    #[test]
    fn api_key_rules() {
        let e = parse(&["--require-api-key"]).unwrap_err();
        assert_eq!(e.variable, "PROVISIONER_API_KEY");
        let short = parse(&["--api-key", "short"]).unwrap_err();
        assert!(
            !short.to_string().contains("short"),
            "the key is never echoed: {short}"
        );
        let c = parse(&["--api-key", "0123456789abcdef0123", "--require-api-key"]).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("0123456789abcdef0123"));
        assert_eq!(
            parse(&["--max-concurrent-requests", "0"])
                .unwrap_err()
                .variable,
            "PROVISIONER_MAX_CONCURRENT_REQUESTS"
        );
    }

    #[test]
    fn service_type_and_port() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (c.service_type, c.container_port),
            (ServiceType::NodePort, 8080)
        );
        let c = parse(&[
            "--sandbox-service-type",
            "ClusterIP",
            "--sandbox-container-port",
            "9090",
        ])
        .unwrap();
        assert_eq!(
            (c.service_type, c.container_port),
            (ServiceType::ClusterIp, 9090)
        );
        assert_eq!(
            parse(&["--sandbox-service-type", "LoadBalancer"])
                .unwrap_err()
                .variable,
            "SANDBOX_SERVICE_TYPE"
        );
        assert_eq!(
            parse(&["--sandbox-container-port", "0"])
                .unwrap_err()
                .variable,
            "SANDBOX_CONTAINER_PORT"
        );
    }

    #[test]
    fn sizes_from_the_environment() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.sizes.sizes["default"], Sizes::seed_default());
        let c = parse(&[
            "--sandbox-sizes",
            r#"{"large": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "4Gi"}}}"#,
            "--sandbox-default-size",
            "large",
        ])
        .unwrap();
        assert_eq!(c.sizes.default_size, "large");
        assert_eq!(c.sizes.sizes.len(), 2);
        assert_eq!(
            parse(&["--sandbox-sizes", "{not json"])
                .unwrap_err()
                .variable,
            "SANDBOX_SIZES"
        );
        let too_big = r#"{"huge": {"limits": {"memory": "64Gi"}}}"#;
        let e = parse(&["--sandbox-sizes", too_big]).unwrap_err();
        assert_eq!(e.variable, "SANDBOX_SIZES");
        assert!(
            e.problem.contains("huge") && e.problem.contains("8Gi"),
            "{e}"
        );
        assert_eq!(
            parse(&["--sandbox-default-size", "nope"])
                .unwrap_err()
                .variable,
            "SANDBOX_DEFAULT_SIZE"
        );
        assert_eq!(
            parse(&["--sandbox-max-resources", "[]"])
                .unwrap_err()
                .variable,
            "SANDBOX_MAX_RESOURCES"
        );
    }

    #[test]
    fn pvc_settings() {
        let c = parse(&[
            "--skills-pvc-name",
            "skills",
            "--skills-pvc-subpath",
            "public/skills",
            "--userdata-pvc-name",
            "data",
        ])
        .unwrap();
        assert_eq!(
            c.skills_pvc,
            Some(("skills".into(), Some("public/skills".into())))
        );
        assert_eq!(c.userdata_pvc.as_deref(), Some("data"));
        assert_eq!(
            parse(&["--userdata-pvc-name", "Bad_Name"])
                .unwrap_err()
                .variable,
            "USERDATA_PVC_NAME"
        );
        assert_eq!(
            parse(&["--skills-pvc-name", "s", "--skills-pvc-subpath", "../x"])
                .unwrap_err()
                .variable,
            "SKILLS_PVC_SUBPATH"
        );
        assert_eq!(
            parse(&["--userdata-pvc-name", "d", "--threads-host-path", "/srv/t"])
                .unwrap_err()
                .variable,
            "USERDATA_PVC_NAME"
        );
    }

    #[test]
    fn placement_inline_or_from_a_file() {
        assert_eq!(parse(&[]).unwrap().placement, Placement::default());
        let c = parse(&["--sandbox-placement", r#"{"runtimeClassName": "gvisor"}"#]).unwrap();
        assert_eq!(c.placement.runtime_class_name.as_deref(), Some("gvisor"));
        let e = parse(&["--sandbox-placement", r#"{"nodeSelecter": {}}"#]).unwrap_err();
        assert_eq!(e.variable, "SANDBOX_PLACEMENT");
        assert!(e.problem.contains("nodeSelecter"), "{e}");
        let file = std::env::temp_dir().join(format!("placement-{}.json", std::process::id()));
        std::fs::write(&file, r#"{"priorityClassName": "low"}"#).unwrap();
        let c = parse(&["--sandbox-placement", file.to_str().unwrap()]).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(c.placement.priority_class_name.as_deref(), Some("low"));
        assert!(parse(&["--sandbox-placement", "/nonexistent/placement.json"]).is_err());
    }

    #[test]
    fn network_policy_modes() {
        assert_eq!(parse(&[]).unwrap().network_policy, NetworkPolicyMode::None);
        let c = parse(&["--sandbox-network-policy", "isolated"]).unwrap();
        let NetworkPolicyMode::Isolated {
            ingress_from,
            egress_deny,
        } = c.network_policy
        else {
            panic!()
        };
        assert!(ingress_from.is_empty());
        assert_eq!(egress_deny.len(), 4);
        assert_eq!(
            parse(&["--sandbox-network-policy", "open"])
                .unwrap_err()
                .variable,
            "SANDBOX_NETWORK_POLICY"
        );
        assert_eq!(
            parse(&[
                "--sandbox-network-policy",
                "isolated",
                "--sandbox-egress-deny-cidrs",
                "10.0.0.0/8,nope"
            ])
            .unwrap_err()
            .variable,
            "SANDBOX_EGRESS_DENY_CIDRS"
        );
        assert_eq!(
            parse(&[
                "--sandbox-network-policy",
                "isolated",
                "--sandbox-network-policy-ingress-from",
                "{}"
            ])
            .unwrap_err()
            .variable,
            "SANDBOX_NETWORK_POLICY_INGRESS_FROM"
        );
        let file = std::env::temp_dir().join(format!("netpol-{}.json", std::process::id()));
        std::fs::write(&file, r#"{"policyTypes": ["Ingress"], "ingress": []}"#).unwrap();
        let c = parse(&["--sandbox-network-policy", file.to_str().unwrap()]).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(c.network_policy, NetworkPolicyMode::Template(_)));
    }

    #[test]
    fn timers() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.timers,
            Timers {
                lifetime: Duration::ZERO,
                idle: Duration::ZERO,
                ready: Duration::from_secs(900)
            }
        );
        assert_eq!(c.reap_interval, Duration::from_secs(10));
        let c = parse(&[
            "--sandbox-max-lifetime",
            "2h",
            "--sandbox-idle-timeout",
            "10m",
        ])
        .unwrap();
        assert_eq!(
            (c.timers.lifetime.as_secs(), c.timers.idle.as_secs()),
            (7200, 600)
        );
        assert_eq!(
            parse(&["--sandbox-idle-timeout", "soon"])
                .unwrap_err()
                .variable,
            "SANDBOX_IDLE_TIMEOUT"
        );
        assert_eq!(
            parse(&["--sandbox-reap-interval", "0"])
                .unwrap_err()
                .variable,
            "SANDBOX_REAP_INTERVAL"
        );
    }

    #[test]
    fn api_server_override_is_parsed() {
        let c = parse(&["--k8s-api-server", "https://host.docker.internal:26443"]).unwrap();
        assert_eq!(
            c.k8s_api_server.unwrap().host(),
            Some("host.docker.internal")
        );
    }
}
