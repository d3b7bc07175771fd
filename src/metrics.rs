//! Prometheus metrics: one explicit registry (no globals), shared by the layers that record.

use std::{sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

use crate::sandbox::{Phase, StartSteps};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeLabels {
    cluster: String,
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeErrorLabels {
    cluster: String,
    verb: String,
    resource: String,
    /// HTTP status of the refusal, or `timeout` / `unreachable`.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    cluster: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    cluster: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    tenant: String,
    /// The limit's name as configured.
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    cluster: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    cluster: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabels {
    cluster: String,
    tenant: String,
    /// `2xx` .. `5xx`.
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    cluster: String,
    tenant: String,
    /// `upstream` (to sandboxes) or `downstream` (to callers).
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    cluster: String,
    /// connect, timeout, gone, not-ready, body-limit, idle, broken.
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    cluster: String,
    pool: String,
    /// `ready` or `starting`.
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    cluster: String,
    /// Suspends: `api`, `idle`. Resumes: `api`, `traffic` (the gateway), `create`.
    trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    cluster: String,
    /// `warm`, or `cold` with the reason (size, shell_sessions, lark, skills_path, mount,
    /// empty), or `failed` (taken, but its data could not be bound).
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenLabels {
    /// `api` or `gateway` (the listener), or `websocket`.
    what: String,
}

/// What the gateway records for one tenant in one cluster (see [`Metrics::gateway_handles`]).
#[derive(Clone, Debug)]
pub struct GatewayHandles {
    by_class: [Counter; 5],
    pub upstream: Counter,
    pub downstream: Counter,
    duration: Histogram,
}

impl GatewayHandles {
    /// A proxied request's answer (its head).
    pub fn answered(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// Why a sandbox was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionReason {
    /// A caller's DELETE.
    Api,
    Lifetime,
    Idle,
    NeverReady,
    Orphan,
    /// It stayed suspended longer than SANDBOX_SUSPENDED_MAX_AGE.
    SuspendedTooLong,
}

impl DeletionReason {
    const ALL: [DeletionReason; 6] = [
        DeletionReason::Api,
        DeletionReason::Lifetime,
        DeletionReason::Idle,
        DeletionReason::NeverReady,
        DeletionReason::Orphan,
        DeletionReason::SuspendedTooLong,
    ];

    fn label(self) -> &'static str {
        match self {
            DeletionReason::Api => "api",
            DeletionReason::Lifetime => "lifetime",
            DeletionReason::Idle => "idle",
            DeletionReason::NeverReady => "never-ready",
            DeletionReason::Orphan => "orphan",
            DeletionReason::SuspendedTooLong => "suspended-max-age",
        }
    }
}

/// Every metric the service records. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    create_duration: Family<ClusterLabels, Histogram>,
    time_to_ready: Family<ClusterLabels, Histogram>,
    start_steps: Family<StepLabels, Histogram>,
    sandboxes: Family<StatusLabels, Gauge>,
    deletions: Family<ReasonLabels, Counter>,
    kube_requests: Family<KubeLabels, Counter>,
    kube_errors: Family<KubeErrorLabels, Counter>,
    kube_forbidden: Family<KubeLabels, Counter>,
    cache_synced: Family<ClusterLabels, Gauge>,
    leader: Family<ClusterLabels, Gauge>,
    tenant_sandboxes: Family<TenantLabels, Gauge>,
    quota_refusals: Family<RefusalLabels, Counter>,
    reaper_rounds: Family<RoundLabels, Counter>,
    tenant_file_checks: Family<CheckLabels, Counter>,
    gateway_requests: Family<GatewayLabels, Counter>,
    gateway_bytes: Family<BytesLabels, Counter>,
    gateway_duration: Family<ClusterLabels, Histogram>,
    gateway_upstream_errors: Family<UpstreamErrorLabels, Counter>,
    open: Family<OpenLabels, Gauge>,
    connections_refused: Family<OpenLabels, Counter>,
    pool_pods: Family<PoolLabels, Gauge>,
    claims: Family<ClaimLabels, Counter>,
    claim_duration: Family<ClusterLabels, Histogram>,
    suspends: Family<TriggerLabels, Counter>,
    resumes: Family<TriggerLabels, Counter>,
    resume_duration: Family<ClusterLabels, Histogram>,
    /// The cluster whose events this handle records (`default` with a single cluster).
    cluster: Arc<str>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Whole seconds from 0 to 5 minutes.
fn step_buckets() -> Histogram {
    Histogram::new([
        0.5, 1.5, 2.5, 3.5, 5.5, 10.5, 20.5, 30.5, 60.5, 120.5, 300.5,
    ])
}

fn ready_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sandbox_provisioner");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests, by method and route",
            http_duration.clone(),
        );
        let create_duration = Family::<ClusterLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "sandbox_create_duration_seconds",
            "Time to create a sandbox's Pod and Service (successful creates)",
            create_duration.clone(),
        );
        let time_to_ready = Family::<ClusterLabels, Histogram>::new_with_constructor(
            ready_buckets as fn() -> Histogram,
        );
        registry.register(
            "sandbox_time_to_ready_seconds",
            "Time from a sandbox's creation until this provisioner first saw it Ready",
            time_to_ready.clone(),
        );
        let start_steps = Family::<StepLabels, Histogram>::new_with_constructor(
            step_buckets as fn() -> Histogram,
        );
        registry.register(
            "sandbox_start_step_seconds",
            "Time-to-ready split by step, from the pod status (whole seconds): step=scheduled \
                (creation to PodScheduled), started (scheduled to the sandbox container running: \
                image pulls, init containers), ready (running to Ready: boot and probes)",
            start_steps.clone(),
        );
        let sandboxes = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "sandboxes",
            "Managed sandboxes by status, as of the last listing",
            sandboxes.clone(),
        );
        let deletions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "sandbox_deletions",
            "Sandboxes deleted, by reason",
            deletions.clone(),
        );
        let kube_requests = Family::<KubeLabels, Counter>::default();
        registry.register(
            "kubernetes_requests",
            "Kubernetes API calls (each attempt), by verb and resource",
            kube_requests.clone(),
        );
        let kube_errors = Family::<KubeErrorLabels, Counter>::default();
        registry.register(
            "kubernetes_errors",
            "Kubernetes API calls that failed, by verb, resource and code",
            kube_errors.clone(),
        );
        let kube_forbidden = Family::<KubeLabels, Counter>::default();
        registry.register(
            "kubernetes_forbidden",
            "Kubernetes calls refused for lack of a permission (403), by verb and resource",
            kube_forbidden.clone(),
        );
        let cache_synced = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "cache_synced",
            "1 while reads are served from the watch cache, 0 while they go to the apiserver",
            cache_synced.clone(),
        );
        let leader = Family::<ClusterLabels, Gauge>::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease and runs the reaper and sweeper",
            leader.clone(),
        );
        let tenant_sandboxes = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "tenant_sandboxes",
            "Sandboxes each tenant holds in all clusters, as of the last scrape",
            tenant_sandboxes.clone(),
        );
        let quota_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "quota_refusals",
            "Creates refused with 429, by tenant and by the limit they would have broken",
            quota_refusals.clone(),
        );
        let reaper_rounds = Family::<RoundLabels, Counter>::default();
        registry.register(
            "reaper_rounds",
            "Rounds of the reaper completed, by role: a leader's removes what expired and sweeps, \
                a follower's only looks whether it leads",
            reaper_rounds.clone(),
        );
        let tenant_file_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "tenant_file_checks",
            "Checks of PROVISIONER_TENANTS for changes, by result: unchanged, applied, invalid \
                (logged and ignored), unreadable",
            tenant_file_checks.clone(),
        );
        let gateway_requests = Family::<GatewayLabels, Counter>::default();
        registry.register(
            "gateway_requests",
            "Requests proxied to sandboxes (past the token check), by cluster, tenant and status \
                class",
            gateway_requests.clone(),
        );
        let gateway_bytes = Family::<BytesLabels, Counter>::default();
        registry.register(
            "gateway_bytes",
            "Body and WebSocket bytes the gateway moved, by cluster, tenant and direction",
            gateway_bytes.clone(),
        );
        let gateway_duration = Family::<ClusterLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "gateway_request_duration_seconds",
            "Time from a proxied request's arrival to its answer's head",
            gateway_duration.clone(),
        );
        let gateway_upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "gateway_upstream_errors",
            "Proxied requests that failed on the sandbox's side, by kind: connect, timeout, \
                gone, not-ready, body-limit, idle, broken",
            gateway_upstream_errors.clone(),
        );
        let open = Family::<OpenLabels, Gauge>::default();
        registry.register(
            "open",
            "Open client connections by listener (api, gateway), and open WebSockets (websocket)",
            open.clone(),
        );
        let connections_refused = Family::<OpenLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because the listener held its maximum",
            connections_refused.clone(),
        );
        let pool_pods = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "warm_pool_pods",
            "Unclaimed warm pool Pods by cluster, pool and state (ready, starting), as the \
                leader's pool keeper last counted them",
            pool_pods.clone(),
        );
        let claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "warm_pool_claims",
            "Creates of new sandboxes in clusters with warm pools, by result: warm (a pool Pod \
                was taken), cold (with the reason), failed (taken, data not bound)",
            claims.clone(),
        );
        let claim_duration = Family::<ClusterLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "warm_pool_claim_duration_seconds",
            "Time from a create's start to its warm Pod answering ready (claim and bind)",
            claim_duration.clone(),
        );
        let suspends = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "suspends",
            "Sandboxes suspended (Pod removed, record kept), by trigger: api, idle",
            suspends.clone(),
        );
        let resumes = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "resumes",
            "Suspended sandboxes given a Pod again, by trigger: api, traffic (a gateway \
                request), create (a POST for the suspended id)",
            resumes.clone(),
        );
        let resume_duration = Family::<ClusterLabels, Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "resume_duration_seconds",
            "Time from a resume's start to its sandbox answering ready",
            resume_duration.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            suspends,
            resumes,
            resume_duration,
            pool_pods,
            claims,
            claim_duration,
            gateway_requests,
            gateway_bytes,
            gateway_duration,
            gateway_upstream_errors,
            open,
            connections_refused,
            reaper_rounds,
            tenant_file_checks,
            tenant_sandboxes,
            quota_refusals,
            http_requests,
            http_duration,
            create_duration,
            time_to_ready,
            start_steps,
            sandboxes,
            deletions,
            kube_requests,
            kube_errors,
            kube_forbidden,
            cache_synced,
            leader,
            cluster: crate::sandbox::DEFAULT_CLUSTER.into(),
        }
        .for_cluster(crate::sandbox::DEFAULT_CLUSTER)
    }

    /// A handle on the same registry that records under `cluster` (every per-cluster family
    /// carries a `cluster` label; the HTTP families do not). Zero samples are created for the
    /// counters a dashboard expects to see from the start.
    pub fn for_cluster(&self, cluster: &str) -> Metrics {
        let scoped = Metrics {
            cluster: cluster.into(),
            ..self.clone()
        };
        for reason in DeletionReason::ALL {
            let _ = scoped.deletions.get_or_create(&ReasonLabels {
                cluster: cluster.into(),
                reason: reason.label().into(),
            });
        }
        scoped
    }

    /// The cluster this handle records under.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    fn cluster_labels(&self) -> ClusterLabels {
        ClusterLabels {
            cluster: self.cluster.to_string(),
        }
    }

    /// Handles on everything the gateway records for one tenant's sandboxes in this cluster,
    /// looked up once and kept, so that a proxied request allocates no labels.
    pub fn gateway_handles(&self, tenant: &str) -> GatewayHandles {
        let class = |class: &str| {
            self.gateway_requests
                .get_or_create(&GatewayLabels {
                    cluster: self.cluster.to_string(),
                    tenant: tenant.into(),
                    class: class.into(),
                })
                .clone()
        };
        GatewayHandles {
            by_class: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(class),
            upstream: self.gateway_bytes(tenant, true),
            downstream: self.gateway_bytes(tenant, false),
            duration: self
                .gateway_duration
                .get_or_create(&self.cluster_labels())
                .clone(),
        }
    }

    /// The counter of bytes the gateway moves for one tenant in one direction.
    fn gateway_bytes(&self, tenant: &str, upstream: bool) -> Counter {
        self.gateway_bytes
            .get_or_create(&BytesLabels {
                cluster: self.cluster.to_string(),
                tenant: tenant.into(),
                direction: if upstream { "upstream" } else { "downstream" }.into(),
            })
            .clone()
    }

    pub fn gateway_upstream_error(&self, kind: &str) {
        self.gateway_upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                cluster: self.cluster.to_string(),
                kind: kind.into(),
            })
            .inc();
    }

    /// The gauge of open connections of a listener (`api`, `gateway`) or of `websocket`s.
    pub fn open(&self, what: &str) -> Gauge {
        self.open
            .get_or_create(&OpenLabels { what: what.into() })
            .clone()
    }

    pub fn connection_refused(&self, listener: &str) {
        self.connections_refused
            .get_or_create(&OpenLabels {
                what: listener.into(),
            })
            .inc();
    }

    /// Replaces the per-tenant sandbox counts.
    pub fn tenant_sandboxes(&self, counts: impl IntoIterator<Item = (String, usize)>) {
        self.tenant_sandboxes.clear();
        for (tenant, count) in counts {
            self.tenant_sandboxes
                .get_or_create(&TenantLabels { tenant })
                .set(count as i64);
        }
    }

    pub fn quota_refused(&self, tenant: &str, limit: &str) {
        self.quota_refusals
            .get_or_create(&RefusalLabels {
                tenant: tenant.into(),
                limit: limit.into(),
            })
            .inc();
    }

    pub fn leader(&self, leading: bool) {
        self.leader
            .get_or_create(&self.cluster_labels())
            .set(i64::from(leading));
    }

    /// A round of the reaper has ended (`leading`: it removed and swept; else it only looked).
    pub fn reaper_round(&self, leading: bool) {
        let role = if leading { "leader" } else { "follower" };
        self.reaper_rounds
            .get_or_create(&RoundLabels {
                cluster: self.cluster.to_string(),
                role: role.into(),
            })
            .inc();
    }

    /// A check of the tenant file has ended with `result`.
    pub fn tenant_file_checked(&self, result: &str) {
        self.tenant_file_checks
            .get_or_create(&CheckLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn cache_synced(&self, synced: bool) {
        self.cache_synced
            .get_or_create(&self.cluster_labels())
            .set(i64::from(synced));
    }

    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let (method, route) = (method.to_string(), route.to_string());
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.clone(),
                route: route.clone(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }

    /// A create served warm, with the time to its Pod answering ready.
    pub fn warm_claim(&self, elapsed: Duration) {
        self.claim_result("warm", "");
        self.claim_duration
            .get_or_create(&self.cluster_labels())
            .observe(elapsed.as_secs_f64());
    }

    /// A sandbox suspended.
    pub fn suspended(&self, trigger: &str) {
        self.suspends
            .get_or_create(&TriggerLabels {
                cluster: self.cluster.to_string(),
                trigger: trigger.into(),
            })
            .inc();
    }

    /// A sandbox resumed.
    pub fn resumed(&self, trigger: &str) {
        self.resumes
            .get_or_create(&TriggerLabels {
                cluster: self.cluster.to_string(),
                trigger: trigger.into(),
            })
            .inc();
    }

    /// A resumed sandbox answered ready this long after its resume started.
    pub fn resume_ready(&self, elapsed: Duration) {
        self.resume_duration
            .get_or_create(&self.cluster_labels())
            .observe(elapsed.as_secs_f64());
    }

    /// A create that a pool could not serve (`result` cold or failed) and why.
    pub fn claim_result(&self, result: &str, reason: &str) {
        self.claims
            .get_or_create(&ClaimLabels {
                cluster: self.cluster.to_string(),
                result: result.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The unclaimed Pods of a pool, as the keeper counted them.
    pub fn pool_pods(&self, pool: &str, ready: usize, starting: usize) {
        for (state, count) in [("ready", ready), ("starting", starting)] {
            self.pool_pods
                .get_or_create(&PoolLabels {
                    cluster: self.cluster.to_string(),
                    pool: pool.into(),
                    state: state.into(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn sandbox_created(&self, elapsed: Duration) {
        self.create_duration
            .get_or_create(&self.cluster_labels())
            .observe(elapsed.as_secs_f64());
    }

    pub fn sandbox_ready(&self, since_creation: Duration, steps: Option<StartSteps>) {
        self.time_to_ready
            .get_or_create(&self.cluster_labels())
            .observe(since_creation.as_secs_f64());
        if let Some(steps) = steps {
            for (step, took) in [
                ("scheduled", steps.scheduled),
                ("started", steps.started),
                ("ready", steps.ready),
            ] {
                self.start_steps
                    .get_or_create(&StepLabels {
                        cluster: self.cluster.to_string(),
                        step: step.into(),
                    })
                    .observe(took.as_secs_f64());
            }
        }
    }

    pub fn sandbox_deleted(&self, reason: DeletionReason) {
        self.deletions
            .get_or_create(&ReasonLabels {
                cluster: self.cluster.to_string(),
                reason: reason.label().into(),
            })
            .inc();
    }

    /// Replaces the per-status counts with those of a fresh listing.
    pub fn sandboxes_by_status(&self, phases: impl IntoIterator<Item = Phase>) {
        let all = [
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
            Phase::Unknown,
            Phase::Suspended,
        ];
        let mut counts = [0i64; 6];
        for phase in phases {
            if let Some(i) = all.iter().position(|p| *p == phase) {
                counts[i] += 1;
            }
        }
        for (phase, count) in all.iter().zip(counts) {
            self.sandboxes
                .get_or_create(&StatusLabels {
                    cluster: self.cluster.to_string(),
                    status: format!("{phase:?}"),
                })
                .set(count);
        }
    }

    pub fn kube_request(&self, verb: &str, resource: &str) {
        self.kube_requests
            .get_or_create(&KubeLabels {
                cluster: self.cluster.to_string(),
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    pub fn kube_error(&self, verb: &str, resource: &str, code: &str) {
        self.kube_errors
            .get_or_create(&KubeErrorLabels {
                cluster: self.cluster.to_string(),
                verb: verb.into(),
                resource: resource.into(),
                code: code.into(),
            })
            .inc();
    }

    /// A call refused with 403 Forbidden: the credential lacks `verb` on `resource`.
    pub fn kube_forbidden(&self, verb: &str, resource: &str) {
        self.kube_forbidden
            .get_or_create(&KubeLabels {
                cluster: self.cluster.to_string(),
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text exposition format (0.0.4), which every scraper and
    /// `promtool` read.
    pub fn render(&self) -> String {
        let mut open_metrics = String::new();
        encode(&mut open_metrics, &self.registry).expect("writing to a String cannot fail");
        prometheus_text(&open_metrics)
    }

    /// Kubernetes calls made so far with `verb` on `resource` (for tests and benchmarks).
    pub fn kube_request_count(&self, verb: &str, resource: &str) -> u64 {
        self.kube_requests
            .get_or_create(&KubeLabels {
                cluster: self.cluster.to_string(),
                verb: verb.into(),
                resource: resource.into(),
            })
            .get()
    }
}

/// Converts OpenMetrics text to the Prometheus format: counters are described under their
/// `_total` sample name, and there is no `# EOF` marker.
fn prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len() + 256);
    for line in open_metrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(described.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.http_request("GET", "/api/sandboxes", 200, Duration::from_millis(3));
        m.sandbox_created(Duration::from_millis(20));
        m.sandbox_ready(
            Duration::from_secs(2),
            Some(StartSteps {
                scheduled: Duration::ZERO,
                started: Duration::from_secs(1),
                ready: Duration::from_secs(1),
            }),
        );
        m.sandbox_deleted(DeletionReason::Api);
        m.sandboxes_by_status([Phase::Running, Phase::Running, Phase::Pending]);
        m.kube_request("create", "pods");
        m.kube_error("create", "pods", "409");
        m.kube_forbidden("watch", "pods");
        m.cache_synced(true);
        let text = m.render();
        for needle in [
            concat!(
                "sandbox_provisioner_http_requests_total",
                "{method=\"GET\",route=\"/api/sandboxes\",status=\"200\"} 1"
            ),
            "sandbox_provisioner_http_request_duration_seconds_bucket",
            "sandbox_provisioner_sandbox_create_duration_seconds_count{cluster=\"default\"} 1",
            "sandbox_provisioner_sandbox_time_to_ready_seconds_count{cluster=\"default\"} 1",
            concat!(
                "sandbox_provisioner_sandbox_start_step_seconds_count",
                "{cluster=\"default\",step=\"started\"} 1"
            ),
            "sandbox_provisioner_sandboxes{cluster=\"default\",status=\"Running\"} 2",
            "sandbox_provisioner_sandboxes{cluster=\"default\",status=\"Pending\"} 1",
            "sandbox_provisioner_sandbox_deletions_total{cluster=\"default\",reason=\"api\"} 1",
            concat!(
                "sandbox_provisioner_sandbox_deletions_total",
                "{cluster=\"default\",reason=\"idle\"} 0"
            ),
            concat!(
                "sandbox_provisioner_kubernetes_requests_total",
                "{cluster=\"default\",verb=\"create\",resource=\"pods\"} 1"
            ),
            concat!(
                "sandbox_provisioner_kubernetes_errors_total",
                "{cluster=\"default\",verb=\"create\",resource=\"pods\",code=\"409\"} 1"
            ),
            concat!(
                "sandbox_provisioner_kubernetes_forbidden_total",
                "{cluster=\"default\",verb=\"watch\",resource=\"pods\"} 1"
            ),
            "sandbox_provisioner_cache_synced{cluster=\"default\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert_eq!(m.kube_request_count("create", "pods"), 1);
        assert!(
            text.contains("# TYPE sandbox_provisioner_http_requests_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
