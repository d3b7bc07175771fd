//! The command line of `sandbox-provisioner serve`: every flag, each also read from the named
//! environment variable (DeerFlow's names and defaults). Grouped by concern; the values are
//! checked and typed by `Config::try_from`.

use std::path::PathBuf;

use clap::Args;

use super::DEFAULT_IMAGE;
use crate::spec::network_policy::DEFAULT_EGRESS_DENY;

/// The capabilities a root-based image usually needs (SANDBOX_CAPABILITIES_ADD's default).
const DEFAULT_CAPABILITIES_ADD: &str =
    "CHOWN,DAC_OVERRIDE,FOWNER,FSETID,KILL,NET_BIND_SERVICE,SETGID,SETUID,SETPCAP";

/// Flags of `sandbox-provisioner serve`; each can also be given as the named environment variable.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: ListenArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub sizes: SizeArgs,
    #[command(flatten)]
    pub lifecycle: LifecycleArgs,
    #[command(flatten)]
    pub security: SecurityArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
    #[command(flatten)]
    pub tenancy: TenancyArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub warm_pool: WarmPoolArgs,
}

/// Warm pools: started Pods kept ready per size, claimed by creates (see docs/configuration.md).
#[derive(Args, Debug, Clone)]
pub struct WarmPoolArgs {
    /// How many started, unclaimed Pods to keep ready per size, as JSON {"SIZE": COUNT, ...}
    /// (e.g. {"default": 5}); unset: no pools. Needs host-path or emptyDir storage and the node
    /// agent on every node (docs/operations.md).
    #[arg(long, env = "SANDBOX_WARM_POOL")]
    pub sandbox_warm_pool: Option<String>,

    /// An unclaimed pool Pod older than this is replaced.
    #[arg(long, env = "SANDBOX_WARM_POOL_MAX_AGE", default_value = "1h")]
    pub sandbox_warm_pool_max_age: String,

    /// How long a claim waits for the node agent to bind the thread's data into the Pod.
    #[arg(long, env = "SANDBOX_WARM_POOL_BIND_TIMEOUT", default_value = "10s")]
    pub sandbox_warm_pool_bind_timeout: String,

    /// The directory on each node that holds pool Pods' slots (the node agent's --slot-root).
    #[arg(
        long,
        env = "SANDBOX_WARM_POOL_SLOT_ROOT",
        default_value = crate::spec::warm_pool::DEFAULT_SLOT_ROOT
    )]
    pub sandbox_warm_pool_slot_root: String,
}

/// The sandbox gateway: one authenticated door to every sandbox (see docs/gateway.md).
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// The URLs handed out: `direct` (the sandbox's Service, DeerFlow's URLs) or `gateway`
    /// (`PROVISIONER_PUBLIC_URL/sandboxes/{id}/{token}`, through this service).
    #[arg(long, env = "SANDBOX_URL_MODE", default_value = "direct")]
    pub sandbox_url_mode: String,

    /// The address backends reach the gateway at, e.g. http://provisioner:8002 (required in
    /// gateway mode; no query, no trailing slash needed).
    #[arg(long, env = "PROVISIONER_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The secret sandbox URL tokens are signed with, shared by every replica (at least 32
    /// characters; required in gateway mode unless PROVISIONER_GATEWAY_SECRET_FILE is set).
    #[arg(long, env = "PROVISIONER_GATEWAY_SECRET", hide_env_values = true)]
    pub gateway_secret: Option<String>,

    /// A file holding the gateway secret (e.g. a mounted Secret), instead of
    /// PROVISIONER_GATEWAY_SECRET.
    #[arg(long, env = "PROVISIONER_GATEWAY_SECRET_FILE")]
    pub gateway_secret_file: Option<PathBuf>,

    /// During a rotation: the previous secret, whose URLs keep working while it is set.
    #[arg(
        long,
        env = "PROVISIONER_GATEWAY_PREVIOUS_SECRET",
        hide_env_values = true
    )]
    pub gateway_previous_secret: Option<String>,

    /// A separate address for the gateway (e.g. 0.0.0.0:8003); unset: it shares the API's port.
    #[arg(long, env = "PROVISIONER_GATEWAY_LISTEN")]
    pub gateway_listen: Option<String>,

    /// How the gateway reaches sandboxes: pod-ip (it shares the pod network) or apiserver (the
    /// apiserver's service proxy). Each SANDBOX_CLUSTERS entry may set its own `reach`.
    #[arg(long, env = "SANDBOX_GATEWAY_REACH", default_value = "pod-ip")]
    pub gateway_reach: String,

    /// Longest wait for a sandbox's answer to start, in seconds (504 after it). DeerFlow holds
    /// commands for up to 600 s.
    #[arg(
        long,
        env = "PROVISIONER_GATEWAY_TIMEOUT_SECONDS",
        default_value_t = 610.0
    )]
    pub gateway_timeout_seconds: f64,

    /// Longest time a proxied body or WebSocket may move no bytes, in seconds (then it is cut).
    #[arg(
        long,
        env = "PROVISIONER_GATEWAY_IDLE_TIMEOUT_SECONDS",
        default_value_t = 610.0
    )]
    pub gateway_idle_timeout_seconds: f64,

    /// Largest request body the gateway forwards, in bytes (413 above it).
    #[arg(
        long,
        env = "PROVISIONER_GATEWAY_MAX_BODY_BYTES",
        default_value_t = 104_857_600
    )]
    pub gateway_max_body_bytes: usize,

    /// How long a request for a sandbox that is not ready yet waits for it, in seconds (then
    /// 503 with Retry-After).
    #[arg(
        long,
        env = "PROVISIONER_GATEWAY_READY_WAIT_SECONDS",
        default_value_t = 60.0
    )]
    pub gateway_ready_wait_seconds: f64,

    /// `per-sandbox`: each sandbox demands its own API key (SANDBOX_API_KEY, derived from the
    /// gateway secret), which only the gateway sends; `none`: the sandbox's API is open to
    /// whoever reaches its port.
    #[arg(long, env = "SANDBOX_UPSTREAM_KEY", default_value = "none")]
    pub sandbox_upstream_key: String,
}

/// Tenants and deployment-wide quotas.
#[derive(Args, Debug, Clone)]
pub struct TenancyArgs {
    /// YAML or JSON file of tenants: each with the SHA-256 of its API key and its limits (see
    /// docs/configuration.md#tenants-and-quotas); reloaded when it changes.
    #[arg(long, env = "PROVISIONER_TENANTS")]
    pub tenants: Option<PathBuf>,

    /// Most sandboxes in the whole deployment, all tenants and clusters together (429 above).
    #[arg(long, env = "SANDBOX_MAX_TOTAL")]
    pub sandbox_max_total: Option<usize>,
}

/// HTTP API: where it listens, who may call it, and its limits.
#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Address and port the HTTP API listens on.
    #[arg(long, env = "PROVISIONER_LISTEN", default_value = "0.0.0.0:8002")]
    pub listen: String,

    /// Key every /api/* request must present as `X-API-Key: KEY` or `Authorization: Bearer KEY`.
    /// Unset: every /api/* request is refused with 401 (unless PROVISIONER_ALLOW_NO_API_KEY).
    #[arg(long, env = "PROVISIONER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Without PROVISIONER_API_KEY, serve /api/* to anyone instead of refusing it (only where
    /// nobody but the backend can reach the port; logged at WARN).
    #[arg(long, env = "PROVISIONER_ALLOW_NO_API_KEY", default_value_t = false)]
    pub allow_no_api_key: bool,

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

    /// Longest time from accepting a connection to its first request's complete head, in
    /// seconds (then it is closed), on the API's and the gateway's listeners.
    #[arg(
        long,
        env = "PROVISIONER_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 10.0
    )]
    pub header_read_timeout_seconds: f64,

    /// Longest time an idle keep-alive connection waits for its next request (and its head),
    /// in seconds, on both listeners.
    #[arg(
        long,
        env = "PROVISIONER_KEEPALIVE_TIMEOUT_SECONDS",
        default_value_t = 60.0
    )]
    pub keepalive_timeout_seconds: f64,

    /// Connections open at once on each listener (API, gateway); more are closed as soon as
    /// they are accepted (and counted).
    #[arg(long, env = "PROVISIONER_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,

    /// After SIGTERM or Ctrl-C, how long in-flight requests may take before the process exits.
    #[arg(
        long,
        env = "PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 20.0
    )]
    pub shutdown_timeout_seconds: f64,
}

/// The Kubernetes cluster and namespace.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Namespace that holds the sandboxes' Pods and Services (created when missing).
    #[arg(long, env = "K8S_NAMESPACE", default_value = "deer-flow")]
    pub namespace: String,

    /// Kubeconfig file; when it does not exist, KUBECONFIG and then the in-cluster service
    /// account are tried.
    #[arg(long, env = "KUBECONFIG_PATH", default_value = "/root/.kube/config")]
    pub kubeconfig_path: PathBuf,

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

    /// YAML or JSON file listing several clusters to place sandboxes in (see
    /// docs/configuration.md#several-clusters); the settings above are each entry's defaults.
    /// Unset: one cluster, `default`, from KUBECONFIG_PATH.
    #[arg(long, env = "SANDBOX_CLUSTERS")]
    pub clusters: Option<PathBuf>,
}

/// What a sandbox runs and how the backend reaches it.
#[derive(Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Container image of every sandbox.
    #[arg(long, env = "SANDBOX_IMAGE", default_value = DEFAULT_IMAGE)]
    pub sandbox_image: String,

    /// Port the sandbox image serves on: container port, probes and service port.
    #[arg(long, env = "SANDBOX_CONTAINER_PORT", default_value_t = 8080)]
    pub sandbox_container_port: u16,

    /// How the backend reaches sandboxes: NodePort (URL http://NODE_HOST:nodePort) or ClusterIP
    /// (URL http://sandbox-{id}-svc.{namespace}.svc.cluster.local:PORT, for in-cluster backends);
    /// None (no Service) only with SANDBOX_URL_MODE=gateway and pod-ip reach.
    #[arg(long, env = "SANDBOX_SERVICE_TYPE", default_value = "NodePort")]
    pub sandbox_service_type: String,

    /// Host name the backend uses to reach node ports; sandbox URLs are `http://NODE_HOST:port`.
    #[arg(long, env = "NODE_HOST", default_value = "host.docker.internal")]
    pub node_host: String,

    /// Where sandboxes run: a JSON object of PodSpec fields (nodeSelector, tolerations,
    /// affinity, topologySpreadConstraints, priorityClassName, runtimeClassName), or the path
    /// of a file holding one.
    #[arg(long, env = "SANDBOX_PLACEMENT")]
    pub sandbox_placement: Option<String>,

    /// A YAML file holding a partial Pod merged into every sandbox pod: labels, annotations,
    /// spec fields (runtimeClassName, tolerations, dnsConfig, extra volumes, ...) and, for the
    /// container named sandbox, extra env, volumeMounts and resource defaults. Fields the
    /// provisioner owns are refused at start. Unset: none.
    #[arg(long, env = "SANDBOX_POD_TEMPLATE")]
    pub sandbox_pod_template: Option<PathBuf>,

    /// Image of the Lark CLI init container that stages the CLI runtime for sandboxes that ask
    /// for it (provision_lark_cli_runtime). Unset: off.
    #[arg(long, env = "LARK_CLI_INIT_IMAGE")]
    pub lark_cli_init_image: Option<String>,

    /// Image of the Lark CLI broker: a shim init container plus a sidecar that alone holds the
    /// credential mounts, for sandboxes that ask for it (provision_lark_cli_broker). Unset: off.
    #[arg(long, env = "LARK_CLI_BROKER_IMAGE")]
    pub lark_cli_broker_image: Option<String>,

    /// Comma-separated Lark CLI subcommands the broker refuses (passed to it as is).
    #[arg(long, env = "DEERFLOW_LARK_BROKER_DENY_SUBCOMMANDS")]
    pub lark_broker_deny_subcommands: Option<String>,
}

/// Where /mnt/skills, /mnt/user-data and extra mounts come from.
#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// Host directory of shared skills, mounted read-only at /mnt/skills (absolute path).
    /// Unset: DeerFlow's per-user skills below DEER_FLOW_HOST_BASE_DIR, when that is known.
    #[arg(long, env = "SKILLS_HOST_PATH")]
    pub skills_host_path: Option<String>,

    /// DeerFlow's state directory on the host (absolute path): extra mounts must lie in it, and
    /// per-user skills are mounted from it. Unset: the parent of THREADS_HOST_PATH when that
    /// ends in /threads, else /.deer-flow (for extra mounts only).
    #[arg(long, env = "DEER_FLOW_HOST_BASE_DIR")]
    pub deer_flow_host_base_dir: Option<String>,

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

    /// Like SKILLS_PVC_SUBPATH, with placeholders {user_id} and {thread_id}.
    #[arg(long, env = "SKILLS_PVC_SUBPATH_TEMPLATE")]
    pub skills_pvc_subpath_template: Option<String>,

    /// PersistentVolumeClaim holding user data, instead of THREADS_HOST_PATH: the sub-path of
    /// USERDATA_PVC_SUBPATH_TEMPLATE is mounted at /mnt/user-data, and extra mounts are
    /// sub-paths `deer-flow/<host path below the base directory>` of it.
    #[arg(long, env = "USERDATA_PVC_NAME")]
    pub userdata_pvc_name: Option<String>,

    /// Sub-path of USERDATA_PVC_NAME mounted at /mnt/user-data, with placeholders {user_id}
    /// and {thread_id}.
    #[arg(
        long,
        env = "USERDATA_PVC_SUBPATH_TEMPLATE",
        default_value = "deer-flow/users/{user_id}/threads/{thread_id}/user-data"
    )]
    pub userdata_pvc_subpath_template: String,
}

/// The resources callers may choose.
#[derive(Args, Debug, Clone)]
pub struct SizeArgs {
    /// Named resource sizes callers may choose, as JSON: {"NAME": {"requests": {...}, "limits":
    /// {...}}, ...} with cpu, memory and ephemeral-storage quantities. A size "default" with the
    /// DeerFlow's values always exists unless redefined here.
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
}

/// When sandboxes are removed, and who removes them.
#[derive(Args, Debug, Clone)]
pub struct LifecycleArgs {
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

    /// What the idle timeout does: `delete` the sandbox, or `suspend` it (its Pod goes; its
    /// identity, URL and files stay, and its next request wakes it).
    #[arg(long, env = "SANDBOX_IDLE_ACTION", default_value = "delete")]
    pub sandbox_idle_action: String,

    /// Delete a sandbox that stays suspended this long (e.g. 7d); 0 = keep it until deleted.
    #[arg(long, env = "SANDBOX_SUSPENDED_MAX_AGE", default_value = "7d")]
    pub sandbox_suspended_max_age: String,

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
}

/// Locking sandboxes down: pod security and network policy.
#[derive(Args, Debug, Clone)]
pub struct SecurityArgs {
    /// Mount a Kubernetes API token into sandboxes (off: sandboxed code gets no cluster
    /// credential).
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
        default_value = DEFAULT_CAPABILITIES_ADD
    )]
    pub sandbox_capabilities_add: String,

    /// Network isolation of sandboxes: none, isolated, or the absolute path of a JSON file with
    /// a NetworkPolicy spec to use as the template.
    #[arg(long, env = "SANDBOX_NETWORK_POLICY", default_value = "none")]
    pub sandbox_network_policy: String,

    /// With `isolated`: who may connect to sandboxes, as a JSON list of NetworkPolicy peers
    /// (podSelector / namespaceSelector / ipBlock); anyone when unset.
    #[arg(long, env = "SANDBOX_NETWORK_POLICY_INGRESS_FROM")]
    pub sandbox_network_policy_ingress_from: Option<String>,

    /// With `isolated`: where sandboxes may send DNS queries (port 53), as a JSON list of
    /// NetworkPolicy peers; unset: the cluster's DNS Pods (kube-system, k8s-app=kube-dns).
    #[arg(long, env = "SANDBOX_NETWORK_POLICY_DNS_TO")]
    pub sandbox_network_policy_dns_to: Option<String>,

    /// With `isolated`: ranges sandboxes may not reach (comma-separated CIDRs). Add the cluster's
    /// pod and service ranges when they lie outside these.
    #[arg(long, env = "SANDBOX_EGRESS_DENY_CIDRS", default_value = DEFAULT_EGRESS_DENY)]
    pub sandbox_egress_deny_cidrs: String,
}

/// How the kubelet checks a sandbox: a startup probe that finds a booted sandbox within a
/// second, then readiness and liveness. DeerFlow's timings: SANDBOX_PROBE_STARTUP_TIMEOUT=0,
/// SANDBOX_PROBE_READINESS_INITIAL_DELAY_SECONDS=5 and
/// SANDBOX_PROBE_LIVENESS_INITIAL_DELAY_SECONDS=10.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Longest a sandbox may take to boot before the kubelet restarts it; a startup probe
    /// checks it every SANDBOX_PROBE_STARTUP_PERIOD_SECONDS until then. 0: no startup probe.
    #[arg(long, env = "SANDBOX_PROBE_STARTUP_TIMEOUT", default_value = "120s")]
    pub sandbox_probe_startup_timeout: String,

    /// Seconds between startup probes: at most this long passes between a sandbox booting
    /// and the kubelet seeing it.
    #[arg(
        long,
        env = "SANDBOX_PROBE_STARTUP_PERIOD_SECONDS",
        default_value_t = 1
    )]
    pub sandbox_probe_startup_period_seconds: u32,

    /// Seconds after the container starts before the first readiness probe.
    #[arg(
        long,
        env = "SANDBOX_PROBE_READINESS_INITIAL_DELAY_SECONDS",
        default_value_t = 0
    )]
    pub sandbox_probe_readiness_initial_delay_seconds: u32,

    /// Seconds between readiness probes.
    #[arg(
        long,
        env = "SANDBOX_PROBE_READINESS_PERIOD_SECONDS",
        default_value_t = 5
    )]
    pub sandbox_probe_readiness_period_seconds: u32,

    /// Seconds after the container starts before the first liveness probe (which, with a
    /// startup probe, waits for it anyway).
    #[arg(
        long,
        env = "SANDBOX_PROBE_LIVENESS_INITIAL_DELAY_SECONDS",
        default_value_t = 0
    )]
    pub sandbox_probe_liveness_initial_delay_seconds: u32,

    /// Seconds between liveness probes.
    #[arg(
        long,
        env = "SANDBOX_PROBE_LIVENESS_PERIOD_SECONDS",
        default_value_t = 10
    )]
    pub sandbox_probe_liveness_period_seconds: u32,
}
