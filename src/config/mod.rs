//! Configuration: every flag and environment variable, parsed once and validated at start
//! into typed sections. A bad setting stops the service with a [`ConfigError`] that names the
//! variable and the fix.
//!
//! The environment variable names and defaults are those of DeerFlow's provisioner, so an
//! existing deployment keeps working unchanged.

mod args;
mod check;
mod clusters;
mod gateway;
mod pool;
#[cfg(test)]
mod tests;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

pub use clusters::ClusterConfig;
pub use gateway::{GatewayLimits, GatewaySection};

pub use args::{
    ClusterArgs, GatewayArgs, LifecycleArgs, ListenArgs, ProbeArgs, SandboxArgs, SecurityArgs,
    ServeArgs, SizeArgs, StorageArgs, TenancyArgs,
};

use crate::{
    sandbox::{HostBase, Sizes, Timers},
    spec::{
        Exposure, LarkImages, PodSecurity, ProbeTimings, Reach, SandboxSpec, SandboxUrls,
        SkillsMount, SubPathTemplate, UserDataMount,
    },
};

/// DeerFlow's default state directory on the host.
pub const DEFAULT_HOST_BASE_DIR: &str = "/.deer-flow";

/// DeerFlow's default sandbox image.
pub const DEFAULT_IMAGE: &str =
    "enterprise-public-cn-beijing.cr.volces.com/vefaas-public/all-in-one-sandbox:latest";

/// Limits that keep the HTTP API responsive under abuse.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Bounds of every connection, on the API's and the gateway's listeners.
    pub connections: ConnectionBounds,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub shutdown_timeout: Duration,
}

/// Bounds of a listener's connections (see `server::connections`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionBounds {
    pub header_read: Duration,
    pub keep_alive: Duration,
    pub max_connections: usize,
}

/// The HTTP API: where it listens and who may call it.
#[derive(Debug, Clone)]
pub struct HttpSection {
    pub listen: SocketAddr,
    pub api_key: Option<String>,
    /// Without a key, serve /api/* to anyone (else refuse it).
    pub allow_no_api_key: bool,
    pub limits: HttpLimits,
}

/// How to reach a cluster: its kubeconfig, context and apiserver, its namespace, the time
/// limit of every call.
#[derive(Debug, Clone)]
pub struct Connection {
    pub namespace: String,
    pub kubeconfig_path: PathBuf,
    /// The kubeconfig context (its current context when unset).
    pub context: Option<String>,
    /// Overrides the kubeconfig's server; TLS is still verified against the kubeconfig's name.
    pub api_server: Option<http::Uri>,
    pub insecure_skip_tls_verify: bool,
    /// Bound of every Kubernetes call.
    pub api_timeout: Duration,
}

/// When sandboxes are removed, and how replicas share that work.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// Defaults and ceilings of the per-request timers.
    pub timers: Timers,
    pub reap_interval: Duration,
    /// Zero: no election (a single replica).
    pub leader_lease: Duration,
    /// Age after which the sweep acts on an orphan.
    pub orphan_grace: Duration,
    /// How often, at most, activity is written to a pod.
    pub activity_persist_interval: Duration,
    /// What the idle timeout does.
    pub idle_action: IdleAction,
    /// How long a sandbox may stay suspended; zero: until deleted.
    pub suspended_max_age: Duration,
}

/// What the idle timeout does to a sandbox (SANDBOX_IDLE_ACTION).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleAction {
    #[default]
    Delete,
    /// Its Pod goes; its record keeps it, and its next request wakes it.
    Suspend,
}

impl Lifecycle {
    /// How long past its idle deadline (as this replica knows it) a sandbox is kept: with
    /// several replicas, activity another replica saw may not be written to the pod yet, but
    /// is at most one persist interval newer than what is (zero for a single replica).
    pub fn idle_grace(&self) -> Duration {
        if self.leader_lease.is_zero() {
            Duration::ZERO
        } else {
            self.activity_persist_interval
        }
    }
}

/// Validated configuration of the service.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpSection,
    /// The single-cluster settings, which are also the defaults of SANDBOX_CLUSTERS' entries.
    pub connection: Connection,
    /// What every sandbox's objects look like (each cluster may override some of it).
    pub sandbox: SandboxSpec,
    /// The clusters sandboxes are placed in: SANDBOX_CLUSTERS' entries, else one named
    /// `default` from `connection` and `sandbox`. Never empty.
    pub clusters: Vec<ClusterConfig>,
    pub sizes: Sizes,
    pub tenancy: TenancySection,
    pub lifecycle: Lifecycle,
    pub gateway: GatewaySection,
}

/// Who may call the API and the deployment-wide quota.
#[derive(Debug, Clone)]
pub struct TenancySection {
    /// PROVISIONER_TENANTS, checked at start (and again at each change while serving).
    pub file: Option<PathBuf>,
    /// The tenants at start: the file's (plus PROVISIONER_API_KEY's `default`), or the one
    /// tenant `default` of PROVISIONER_API_KEY, or none (an open or closed API).
    pub tenants: Option<crate::admission::Tenants>,
    pub max_total: Option<usize>,
}

impl TenancySection {
    /// Whether creates take quota locks (Leases): with SANDBOX_MAX_TOTAL, or a tenant limit
    /// that counts sandboxes.
    pub fn locks(&self) -> bool {
        self.max_total.is_some()
            || self
                .tenants
                .iter()
                .flat_map(|t| &t.tenants)
                .any(|t| crate::admission::lock_name(t, None).is_some())
    }

    /// The tenants and quotas of this configuration.
    pub fn admission(&self, metrics: crate::metrics::Metrics) -> crate::admission::Admission {
        use crate::admission::Admission;
        match &self.tenants {
            Some(tenants) => Admission::new(tenants.clone(), self.max_total, metrics),
            None => Admission::open(self.max_total, metrics),
        }
    }

    /// What the reload needs to check a changed file the same way.
    pub fn tenant_file(&self, config: &Config) -> Option<crate::admission::TenantFile> {
        let path = self.file.clone()?;
        Some(crate::admission::TenantFile {
            path,
            extra: config.http.api_key.as_deref().map(|key| {
                std::sync::Arc::new(crate::admission::Tenant::unlimited(
                    crate::admission::DEFAULT_TENANT,
                    Some(key),
                ))
            }),
            known_sizes: config.sizes.names(),
            known_clusters: config.clusters.iter().map(|c| c.name.clone()).collect(),
        })
    }
}

/// The configuration of these flags (as `serve` takes them), for unit tests.
#[cfg(test)]
pub fn from_flags(flags: &[&str]) -> Config {
    use clap::Parser;
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        serve: ServeArgs,
    }
    let mut argv = vec!["sandbox-provisioner"];
    argv.extend_from_slice(flags);
    Config::try_from(Flags::try_parse_from(argv).expect("known flags").serve).expect("valid flags")
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
        let ServeArgs {
            http,
            cluster,
            sandbox,
            storage,
            sizes,
            lifecycle,
            security,
            probes,
            tenancy,
            gateway,
            warm_pool,
        } = args;
        let gateway = gateway::parse(gateway)?;
        let clusters_file = cluster
            .clusters
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        let connection = Connection::try_from(cluster)?;
        let sizes = check::sizes(&sizes)?;
        let probes = ProbeTimings::try_from(probes)?;
        let mut sandbox = sandbox_spec(
            &connection.namespace,
            sandbox,
            storage,
            security,
            probes,
            &sizes,
        )?;
        if gateway.section.on {
            admit_only_the_gateway(&mut sandbox.network_policy);
        }
        sandbox.urls = gateway.urls;
        sandbox.reach = gateway.reach;
        sandbox.upstream_key = gateway.upstream_key;
        sandbox.warm_pool = pool::parse(&warm_pool)?;
        let clusters = match clusters_file {
            Some(path) => clusters::from_file(&path, &connection, &sandbox)?,
            None => vec![clusters::single(&connection, &sandbox)],
        };
        let mut clusters = clusters;
        for cluster in &mut clusters {
            pool::settle(&cluster.name, &mut cluster.sandbox, &sizes)?;
        }
        for cluster in &clusters {
            gateway::check_cluster(
                &cluster.name,
                gateway.section.on,
                &cluster.sandbox.exposure,
                cluster.sandbox.reach,
            )?;
        }
        let mut config = Config {
            http: HttpSection::try_from(http)?,
            connection,
            sandbox,
            clusters,
            sizes,
            lifecycle: Lifecycle::try_from(lifecycle)?,
            gateway: gateway.section,
            tenancy: TenancySection {
                file: tenancy.tenants.filter(|p| !p.as_os_str().is_empty()),
                tenants: None,
                max_total: tenancy.sandbox_max_total,
            },
        };
        if config.tenancy.max_total == Some(0) {
            return Err(ConfigError::new(
                "SANDBOX_MAX_TOTAL",
                "0",
                "must be at least 1 (unset it for no limit)",
            ));
        }
        config.tenancy.tenants = match config.tenancy.tenant_file(&config) {
            Some(file) => Some(file.load().map_err(|problem| {
                ConfigError::new(
                    "PROVISIONER_TENANTS",
                    file.path.display().to_string(),
                    problem,
                )
            })?),
            None => config
                .http
                .api_key
                .as_deref()
                .map(crate::admission::Tenants::single),
        };
        Ok(config)
    }
}

impl TryFrom<ListenArgs> for HttpSection {
    type Error = ConfigError;

    fn try_from(args: ListenArgs) -> Result<Self, ConfigError> {
        let listen = args.listen.parse().map_err(|_| {
            ConfigError::new(
                "PROVISIONER_LISTEN",
                &args.listen,
                "must be ADDRESS:PORT, for example 0.0.0.0:8002",
            )
        })?;
        let api_key = args.api_key.filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            if key.len() < 16 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    "PROVISIONER_API_KEY",
                    "(hidden)",
                    "must be at least 16 characters without spaces or control characters, for \
                        example from `openssl rand -hex 32`",
                ));
            }
        } else if args.require_api_key {
            return Err(ConfigError::new(
                "PROVISIONER_API_KEY",
                "",
                "is required because PROVISIONER_REQUIRE_API_KEY is set: set a key (for example \
                    from `openssl rand -hex 32`) or unset PROVISIONER_REQUIRE_API_KEY",
            ));
        }
        let limits = HttpLimits {
            connections: ConnectionBounds {
                header_read: check::seconds(
                    "PROVISIONER_HEADER_READ_TIMEOUT_SECONDS",
                    args.header_read_timeout_seconds,
                    3600.0,
                )?,
                keep_alive: check::seconds(
                    "PROVISIONER_KEEPALIVE_TIMEOUT_SECONDS",
                    args.keepalive_timeout_seconds,
                    3600.0,
                )?,
                max_connections: check::positive(
                    "PROVISIONER_MAX_CONNECTIONS",
                    args.max_connections,
                )?,
            },
            max_body_bytes: check::positive("PROVISIONER_MAX_BODY_BYTES", args.max_body_bytes)?,
            request_timeout: check::seconds(
                "PROVISIONER_REQUEST_TIMEOUT_SECONDS",
                args.request_timeout_seconds,
                3600.0,
            )?,
            max_concurrent_requests: check::positive(
                "PROVISIONER_MAX_CONCURRENT_REQUESTS",
                args.max_concurrent_requests,
            )?,
            shutdown_timeout: check::seconds(
                "PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS",
                args.shutdown_timeout_seconds,
                3600.0,
            )?,
        };
        Ok(HttpSection {
            listen,
            api_key,
            allow_no_api_key: args.allow_no_api_key,
            limits,
        })
    }
}

impl TryFrom<ClusterArgs> for Connection {
    type Error = ConfigError;

    fn try_from(args: ClusterArgs) -> Result<Self, ConfigError> {
        check::validate_namespace(&args.namespace)?;
        let api_server = match args.k8s_api_server.filter(|s| !s.trim().is_empty()) {
            None => None,
            Some(s) => Some(check::api_server_uri(&s)?),
        };
        Ok(Connection {
            namespace: args.namespace,
            kubeconfig_path: args.kubeconfig_path,
            context: None,
            api_server,
            insecure_skip_tls_verify: args.k8s_insecure_skip_tls_verify,
            api_timeout: check::seconds(
                "K8S_API_TIMEOUT_SECONDS",
                args.k8s_api_timeout_seconds,
                300.0,
            )?,
        })
    }
}

impl TryFrom<LifecycleArgs> for Lifecycle {
    type Error = ConfigError;

    fn try_from(args: LifecycleArgs) -> Result<Self, ConfigError> {
        let timers = Timers {
            lifetime: check::duration("SANDBOX_MAX_LIFETIME", &args.sandbox_max_lifetime)?,
            idle: check::duration("SANDBOX_IDLE_TIMEOUT", &args.sandbox_idle_timeout)?,
            ready: check::duration("SANDBOX_READY_TIMEOUT", &args.sandbox_ready_timeout)?,
        };
        let reap_interval = check::duration("SANDBOX_REAP_INTERVAL", &args.sandbox_reap_interval)?;
        if reap_interval.is_zero() {
            return Err(ConfigError::new(
                "SANDBOX_REAP_INTERVAL",
                &args.sandbox_reap_interval,
                "must be above 0, for example 10s",
            ));
        }
        let leader_lease = check::duration("SANDBOX_LEADER_LEASE", &args.sandbox_leader_lease)?;
        if !leader_lease.is_zero() && leader_lease < Duration::from_secs(3) {
            return Err(ConfigError::new(
                "SANDBOX_LEADER_LEASE",
                &args.sandbox_leader_lease,
                "must be 0 (no election) or at least 3s",
            ));
        }
        Ok(Lifecycle {
            timers,
            reap_interval,
            leader_lease,
            orphan_grace: check::duration("SANDBOX_ORPHAN_GRACE", &args.sandbox_orphan_grace)?,
            activity_persist_interval: check::duration(
                "SANDBOX_ACTIVITY_PERSIST_INTERVAL",
                &args.sandbox_activity_persist_interval,
            )?,
            idle_action: match args.sandbox_idle_action.trim() {
                "delete" => IdleAction::Delete,
                "suspend" => IdleAction::Suspend,
                _ => {
                    return Err(ConfigError::new(
                        "SANDBOX_IDLE_ACTION",
                        &args.sandbox_idle_action,
                        "must be delete (remove idle sandboxes) or suspend (keep them, without \
                         a Pod, until their next request)",
                    ))
                }
            },
            suspended_max_age: check::duration(
                "SANDBOX_SUSPENDED_MAX_AGE",
                &args.sandbox_suspended_max_age,
            )?,
        })
    }
}

impl TryFrom<ProbeArgs> for ProbeTimings {
    type Error = ConfigError;

    fn try_from(args: ProbeArgs) -> Result<Self, ConfigError> {
        const MAX: u32 = 3600;
        let period = |variable: &'static str, value: u32| {
            if (1..=MAX).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    variable,
                    value.to_string(),
                    format!("must be a whole number of seconds from 1 to {MAX}"),
                ))
            }
        };
        let delay = |variable: &'static str, value: u32| {
            if value <= MAX {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    variable,
                    value.to_string(),
                    format!("must be a whole number of seconds from 0 to {MAX}"),
                ))
            }
        };
        let startup_period = period(
            "SANDBOX_PROBE_STARTUP_PERIOD_SECONDS",
            args.sandbox_probe_startup_period_seconds,
        )?;
        let timeout = check::duration(
            "SANDBOX_PROBE_STARTUP_TIMEOUT",
            &args.sandbox_probe_startup_timeout,
        )?;
        let startup = if timeout.is_zero() {
            None
        } else {
            if timeout.as_secs() > u64::from(MAX) * 24 {
                return Err(ConfigError::new(
                    "SANDBOX_PROBE_STARTUP_TIMEOUT",
                    &args.sandbox_probe_startup_timeout,
                    "must be at most 24h (0 turns the startup probe off)",
                ));
            }
            // Enough failures to cover the whole timeout, as the kubelet counts them.
            let failures = timeout.as_secs().div_ceil(u64::from(startup_period)).max(1);
            Some((startup_period, failures as u32))
        };
        Ok(ProbeTimings {
            startup,
            readiness: (
                delay(
                    "SANDBOX_PROBE_READINESS_INITIAL_DELAY_SECONDS",
                    args.sandbox_probe_readiness_initial_delay_seconds,
                )?,
                period(
                    "SANDBOX_PROBE_READINESS_PERIOD_SECONDS",
                    args.sandbox_probe_readiness_period_seconds,
                )?,
            ),
            liveness: (
                delay(
                    "SANDBOX_PROBE_LIVENESS_INITIAL_DELAY_SECONDS",
                    args.sandbox_probe_liveness_initial_delay_seconds,
                )?,
                period(
                    "SANDBOX_PROBE_LIVENESS_PERIOD_SECONDS",
                    args.sandbox_probe_liveness_period_seconds,
                )?,
            ),
        })
    }
}

/// What every sandbox's objects look like, from the sandbox, storage and security groups.
fn sandbox_spec(
    namespace: &str,
    sandbox: SandboxArgs,
    storage: StorageArgs,
    security: SecurityArgs,
    probes: ProbeTimings,
    sizes: &Sizes,
) -> Result<SandboxSpec, ConfigError> {
    if sandbox.sandbox_image.trim().is_empty() {
        return Err(ConfigError::new(
            "SANDBOX_IMAGE",
            &sandbox.sandbox_image,
            "must name a container image, for example python:3.12-slim",
        ));
    }
    let node_host = sandbox.node_host.trim();
    if node_host.is_empty() || node_host.contains(['/', ' ', '@']) {
        return Err(ConfigError::new(
            "NODE_HOST",
            &sandbox.node_host,
            "must be a bare host name or IP address, for example host.docker.internal",
        ));
    }
    let exposure =
        match sandbox.sandbox_service_type.trim() {
            "NodePort" => Exposure::NodePort {
                node_host: node_host.to_string(),
            },
            "ClusterIP" => Exposure::ClusterIp,
            "None" => Exposure::None,
            other => return Err(ConfigError::new(
                "SANDBOX_SERVICE_TYPE",
                other,
                "must be NodePort (URLs on NODE_HOST), ClusterIP (cluster DNS URLs for backends \
                    inside the cluster) or None (no Service; gateway mode with pod-ip reach)",
            )),
        };
    if sandbox.sandbox_container_port == 0 {
        return Err(ConfigError::new(
            "SANDBOX_CONTAINER_PORT",
            "0",
            "must be a port from 1 to 65535, for example 8080",
        ));
    }
    let (skills, user_data, host_base) = mounts(storage)?;
    let image = |variable, value: Option<String>| {
        let value = value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        match value {
            Some(v) if v.contains(char::is_whitespace) => Err(ConfigError::new(
                variable,
                v,
                "must name a container image, without spaces",
            )),
            other => Ok(other),
        }
    };
    let lark = LarkImages {
        init_image: image("LARK_CLI_INIT_IMAGE", sandbox.lark_cli_init_image)?,
        broker_image: image("LARK_CLI_BROKER_IMAGE", sandbox.lark_cli_broker_image)?,
        broker_deny_subcommands: sandbox
            .lark_broker_deny_subcommands
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty()),
    };
    let template_path = sandbox.sandbox_pod_template.as_deref();
    let shown = template_path
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let pod_template = check::pod_template(template_path)
        .map_err(|problem| ConfigError::new("SANDBOX_POD_TEMPLATE", &shown, problem))?;
    let placement = check::placement(sandbox.sandbox_placement.as_deref())?;
    check::placement_and_template(&placement, &pod_template)
        .map_err(|problem| ConfigError::new("SANDBOX_POD_TEMPLATE", &shown, problem))?;
    Ok(SandboxSpec {
        namespace: namespace.to_string(),
        image: sandbox.sandbox_image.trim().to_string(),
        port: sandbox.sandbox_container_port,
        probes,
        skills,
        user_data,
        host_base,
        lark,
        exposure,
        urls: SandboxUrls::Direct,
        reach: Reach::PodIp,
        upstream_key: false,
        placement,
        pod_template,
        network_policy: check::network_policy(&security)?,
        security: PodSecurity {
            automount_service_account_token: security.sandbox_automount_service_account_token,
            enable_service_links: security.sandbox_enable_service_links,
            seccomp: check::seccomp(&security.sandbox_seccomp_profile)?,
            allow_privilege_escalation: security.sandbox_allow_privilege_escalation,
            capabilities_drop: check::capabilities(
                "SANDBOX_CAPABILITIES_DROP",
                &security.sandbox_capabilities_drop,
            )?,
            capabilities_add: check::capabilities(
                "SANDBOX_CAPABILITIES_ADD",
                &security.sandbox_capabilities_add,
            )?,
        },
        default_resources: sizes
            .choose(None, None)
            .unwrap_or_else(|_| Sizes::deerflow_default()),
        warm_pool: Default::default(),
    })
}

/// In gateway mode, isolated sandboxes admit only the provisioner's Pods unless
/// SANDBOX_NETWORK_POLICY_INGRESS_FROM names other peers.
fn admit_only_the_gateway(mode: &mut crate::spec::NetworkPolicyMode) {
    use crate::spec::network_policy::PROVISIONER_POD_LABEL;
    if let crate::spec::NetworkPolicyMode::Isolated { ingress_from, .. } = mode {
        if ingress_from.is_empty() {
            let (key, value) = PROVISIONER_POD_LABEL;
            let peer = serde_json::json!({"podSelector": {"matchLabels": {key: value}}});
            ingress_from.push(serde_json::from_value(peer).expect("a valid peer"));
        }
    }
}

/// A template variable, parsed (the error names the variable).
fn template(variable: &'static str, value: &str) -> Result<SubPathTemplate, ConfigError> {
    SubPathTemplate::parse(value).map_err(|problem| ConfigError::new(variable, value, problem))
}

/// One source for each of /mnt/skills and /mnt/user-data, and the directory extra mounts must
/// lie in. Skills come from, in this order: SKILLS_PVC_NAME, SKILLS_HOST_PATH, DeerFlow's
/// per-user layout below DEER_FLOW_HOST_BASE_DIR (or the parent of a THREADS_HOST_PATH that
/// ends in /threads), else nothing.
fn mounts(storage: StorageArgs) -> Result<(SkillsMount, UserDataMount, HostBase), ConfigError> {
    let skills_host_path = check::host_path("SKILLS_HOST_PATH", storage.skills_host_path)?;
    let threads_host_path = check::host_path("THREADS_HOST_PATH", storage.threads_host_path)?;
    let base_dir = check::host_path("DEER_FLOW_HOST_BASE_DIR", storage.deer_flow_host_base_dir)?
        .map(|dir| normalised(&dir));
    let skills_claim = check::claim_name("SKILLS_PVC_NAME", storage.skills_pvc_name)?;
    let user_data_claim = check::claim_name("USERDATA_PVC_NAME", storage.userdata_pvc_name)?;
    let threads_parent = threads_host_path.as_deref().and_then(|t| {
        let t = normalised(t);
        t.strip_suffix("/threads").map(|parent| {
            if parent.is_empty() {
                "/".to_string()
            } else {
                parent.to_string()
            }
        })
    });
    let known_base = match (base_dir, threads_parent) {
        (Some(dir), _) => Some(HostBase {
            dir,
            origin: "DEER_FLOW_HOST_BASE_DIR",
        }),
        (None, Some(dir)) => Some(HostBase {
            dir,
            origin: "the parent of THREADS_HOST_PATH",
        }),
        (None, None) => None,
    };
    let skills_sub_path = match (
        check::sub_path("SKILLS_PVC_SUBPATH", storage.skills_pvc_subpath)?,
        storage
            .skills_pvc_subpath_template
            .filter(|t| !t.is_empty()),
    ) {
        (Some(fixed), Some(_)) => {
            return Err(ConfigError::new(
                "SKILLS_PVC_SUBPATH_TEMPLATE",
                fixed,
                "is set together with SKILLS_PVC_SUBPATH: keep one (a template without \
                    placeholders is a fixed sub-path)",
            ))
        }
        (Some(fixed), None) => Some(template("SKILLS_PVC_SUBPATH", &fixed)?),
        (None, Some(t)) => Some(template("SKILLS_PVC_SUBPATH_TEMPLATE", &t)?),
        (None, None) => None,
    };
    let skills = match (skills_claim, skills_host_path) {
        (Some(claim), Some(_)) => {
            return Err(ConfigError::new(
                "SKILLS_PVC_NAME",
                claim,
                "is set together with SKILLS_HOST_PATH: choose one source for /mnt/skills",
            ))
        }
        (Some(name), None) => SkillsMount::Claim {
            name,
            sub_path: skills_sub_path,
        },
        (None, Some(path)) => SkillsMount::HostPath(path),
        (None, None) => match &known_base {
            Some(base) => SkillsMount::PerUser {
                base: base.dir.clone(),
            },
            None => SkillsMount::None,
        },
    };
    let user_data = match (user_data_claim, threads_host_path) {
        (Some(claim), Some(_)) => {
            return Err(ConfigError::new(
                "USERDATA_PVC_NAME",
                claim,
                "is set together with THREADS_HOST_PATH: choose one source for /mnt/user-data",
            ))
        }
        (Some(name), None) => UserDataMount::Claim {
            name,
            sub_path: template(
                "USERDATA_PVC_SUBPATH_TEMPLATE",
                &storage.userdata_pvc_subpath_template,
            )?,
        },
        (None, Some(path)) => UserDataMount::HostPath(path),
        (None, None) => UserDataMount::EmptyDir,
    };
    let host_base = known_base.unwrap_or_else(|| HostBase {
        dir: DEFAULT_HOST_BASE_DIR.into(),
        origin: "DeerFlow's default; set DEER_FLOW_HOST_BASE_DIR to change it",
    });
    Ok((skills, user_data, host_base))
}

/// An absolute path without empty or '.' parts and without a trailing '/'.
fn normalised(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}
