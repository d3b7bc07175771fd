//! The sandbox rules the API promises, on top of the cluster operations: idempotent creates,
//! no half-made sandboxes, repair of a sandbox missing one of its objects, reads from the
//! watch cache, and the background decisions (expiry, sweep, baseline policy).
//!
//! ```text
//!   api ──► Cluster ──► create / read / delete / suspend   (one file each)
//!               │      └──► expiry / sweep / baseline       (plan: pure; apply: thin)
//!               ├── Cluster  (timed, retried, counted Kubernetes calls)
//!               ├── Cache    (watched Pods, Services, NetworkPolicies, suspended records)
//!               └── Memory   (what this process remembers per sandbox)
//! ```

mod baseline;
mod connect;
mod create;
mod delete;
pub mod expiry;
mod health;
mod lock;
mod memory;
mod pool;
mod quota;
mod read;
mod startup;
mod suspend;
pub mod sweep;
mod traffic;
mod views;

use std::sync::{atomic::AtomicBool, Arc};

use k8s_openapi::jiff::Timestamp;

pub use crate::k8s::manifests::pod_name;
pub use crate::k8s::manifests::SuspendTrigger;
pub use connect::{connection, PROBE_INTERVAL};
pub use health::Health;
pub use lock::{Arbiter, LockError, QuotaLock};
pub use memory::Memory;
pub use quota::cpu_and_memory;
pub use read::PodPresence;
pub use suspend::ResumeTrigger;

use std::collections::BTreeMap;

use crate::{
    config::Lifecycle,
    k8s::{
        cache::{Cache, CacheSummary},
        calls::{self, Calls},
        lease::Leases,
        manifests,
        record::PodRecord,
        refusals::Refusals,
    },
    metrics::Metrics,
    sandbox::{InvalidId, Sandbox, SandboxId},
    spec::SandboxSpec,
};

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] InvalidId),
    #[error("sandbox {0:?} not found")]
    NotFound(String),
    #[error(
        "sandbox {id:?} already exists for thread {existing:?}, but this request names thread \
        {requested:?}; use another sandbox_id, or delete the existing sandbox first"
    )]
    ThreadConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error(
        "sandbox {id:?} already exists for user {existing:?}, but this request names user \
        {requested:?}; use another sandbox_id, or delete the existing sandbox first"
    )]
    UserConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error("sandbox {id:?} exists with a shell-session capacity of {existing}{default}, below \
        the {requested} this request asks for; its pod was left alone: delete the sandbox and \
        create it again to get the larger \
        capacity", default = if *.existing_is_default { " (the image's default)" } else { "" })]
    ShellCapacity {
        id: String,
        existing: u32,
        existing_is_default: bool,
        requested: u32,
    },
    #[error(
        "sandbox {id:?} exists with skills at {existing}, but this request names {requested} \
        (skills_container_path); its pod was left alone: delete the sandbox and create it again \
        to move its skills"
    )]
    SkillsPathConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error(
        "sandbox {id:?} exists {existing} the Lark CLI broker sidecar, but this request asks \
        {requested} it (provision_lark_cli_broker); its pod was left alone: delete the sandbox \
        and create it again",
        existing = broker_words(*.existing_has_broker).0,
        requested = broker_words(*.existing_has_broker).1
    )]
    LarkConflict {
        id: String,
        existing_has_broker: bool,
    },
    #[error(
        "the request asks for the Lark CLI broker (provision_lark_cli_broker), but this \
        provisioner has no broker image: set LARK_CLI_BROKER_IMAGE on the provisioner, or create \
        the sandbox without the broker"
    )]
    LarkBrokerUnavailable,
    #[error("the sandbox id {0:?} is taken; choose another sandbox_id")]
    Taken(String),
    #[error("sandbox {0:?} is being deleted; retry in a moment")]
    Terminating(String),
    #[error(
        "sandbox {0:?} was created before this provisioner recorded what a sandbox was created \
        with, so it could not be made again after a suspend; it was left as it is. Delete it \
        and create it again to be able to suspend it"
    )]
    NotSuspendable(String),
    #[error(
        "cannot create {kind} {name}: another {kind} of that name kept reappearing; retry in \
        a moment"
    )]
    KeptReappearing { kind: String, name: String },
    #[error(
        "sandbox {id:?} took a warm pool Pod, but its data was not bound into it ({reason}: \
        {message}); the Pod was removed again. Retry; when this repeats, check the node agent \
        on that node (docs/operations.md, \"Warm pools\")"
    )]
    DataNotBound {
        id: String,
        reason: String,
        message: String,
    },
    #[error(transparent)]
    Kubernetes(#[from] calls::Error),
}

/// How a Lark conflict reads: (what the sandbox has, what the request asks).
fn broker_words(existing_has_broker: bool) -> (&'static str, &'static str) {
    if existing_has_broker {
        ("with", "without")
    } else {
        ("without", "for")
    }
}

impl Error {
    /// A refused permission: already logged (rate-limited) and counted where it happened.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Kubernetes(e) if e.is_permission_denied())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One Kubernetes cluster the service works in: how to reach it (timed calls, the watch
/// cache, whether its apiserver answers), what placement knows about it, and the sandbox rules
/// applied there. Without SANDBOX_CLUSTERS there is one, named `default`. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    name: Arc<str>,
    calls: Calls,
    cache: Cache,
    /// What its probe found: whether its apiserver answers, whether its namespace is usable.
    probe: health::ProbeState,
    /// Share of new sandboxes; 0 drains the cluster.
    weight: u32,
    max_sandboxes: Option<usize>,
    labels: Arc<BTreeMap<String, String>>,
    spec: Arc<SandboxSpec>,
    lifecycle: Lifecycle,
    metrics: Metrics,
    memory: Memory,
    views: views::Views,
    /// Bounds the activity writes in flight: each is a request (and, at once, a connection) to
    /// the apiserver, and a burst of reads of many sandboxes must not open thousands.
    activity_writes: Arc<tokio::sync::Semaphore>,
    /// Whether the baseline NetworkPolicy is known to be as the configuration wants it.
    baseline_done: Arc<AtomicBool>,
}

/// Activity writes in flight at once, per cluster: enough for every sandbox of a large fleet
/// once per persist interval (each takes a few milliseconds), few enough that a burst of reads
/// does not become a burst of apiserver writes competing with the reads themselves.
const ACTIVITY_WRITES_AT_ONCE: usize = 2;

/// A created or found sandbox, and whether this call created it.
pub struct Provisioned {
    pub sandbox: Sandbox,
    pub created: bool,
    /// The name of its Pod (a claimed pool Pod keeps its own).
    pub pod_name: String,
}

impl Cluster {
    /// A cluster from its parts, taking every sandbox (tests build one whose calls go nowhere;
    /// [`Cluster::connect`] builds the real ones).
    pub fn new(
        name: &str,
        (calls, cache): (Calls, Cache),
        spec: SandboxSpec,
        lifecycle: Lifecycle,
        metrics: Metrics,
    ) -> Self {
        Cluster {
            name: name.into(),
            calls,
            cache,
            probe: health::unprobed(),
            weight: 1,
            max_sandboxes: None,
            labels: Arc::default(),
            spec: Arc::new(spec),
            lifecycle,
            metrics,
            memory: Memory::default(),
            views: views::Views::default(),
            activity_writes: Arc::new(tokio::sync::Semaphore::new(ACTIVITY_WRITES_AT_ONCE)),
            baseline_done: Arc::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What this cluster's sandbox objects look like.
    pub fn spec(&self) -> &SandboxSpec {
        &self.spec
    }

    /// Whether reads are served from the watch cache.
    /// The watch cache (for tasks that wake on its changes).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn cache_summary(&self) -> CacheSummary {
        self.cache.state().summary()
    }

    /// A cluster of this configuration whose calls go nowhere (a closed port) and whose cache
    /// never syncs, so that every read would ask the apiserver: for tests of what needs no
    /// cluster.
    #[cfg(test)]
    pub fn nowhere(name: &str, config: &crate::config::Config, metrics: &Metrics) -> Cluster {
        let nowhere = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        let metrics = metrics.for_cluster(name);
        let namespace = &config.connection.namespace;
        let calls = Calls::new(
            kube::Client::try_from(nowhere).expect("a client"),
            namespace,
            config.connection.api_timeout,
            metrics.clone(),
            Refusals::new(namespace, metrics.clone()),
        );
        let cache = Cache::unwatched(namespace);
        let spec = config.sandbox.clone();
        Cluster::new(name, (calls, cache), spec, config.lifecycle, metrics)
    }

    /// Placement's view of the cluster: its share of new sandboxes (0 drains it), its
    /// capacity, and the labels requests select it by.
    pub fn with_placement(
        mut self,
        weight: u32,
        max_sandboxes: Option<usize>,
        labels: BTreeMap<String, String>,
    ) -> Self {
        self.weight = weight;
        self.max_sandboxes = max_sandboxes;
        self.labels = Arc::new(labels);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    pub fn max_sandboxes(&self) -> Option<usize> {
        self.max_sandboxes
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The permissions the apiserver refused and that have not worked since.
    pub fn refusals(&self) -> &Refusals {
        self.calls.refusals()
    }

    pub fn namespace(&self) -> &str {
        self.calls.namespace()
    }

    /// The Leases of this cluster's namespace, taken as `holder`.
    pub fn leases(&self, holder: String) -> Leases {
        Leases::new(self.calls.clone(), holder)
    }

    /// Whether the cache holds the sandbox's pod, even from before the watch broke: where a
    /// sandbox lives does not change while its cluster is out of reach.
    pub fn holds(&self, id: &SandboxId) -> bool {
        self.cache.pod(id.as_str()).is_some() || self.cache.suspended(id.as_str()).is_some()
    }

    /// Whether the cache holds the sandbox suspended (no live Pod, its record kept).
    pub fn holds_suspended(&self, id: &SandboxId) -> bool {
        self.cache.suspended(id.as_str()).is_some()
            && self
                .cache
                .pod(id.as_str())
                .is_none_or(|pod| pod.terminating)
    }

    /// Sandboxes in the cluster as the synced cache counts them (None while it is not usable).
    pub fn count(&self) -> Option<usize> {
        self.cache.state().usable().then(|| self.cache.pod_count())
    }

    /// Updates the sandboxes-by-status gauge from the cache (no apiserver call).
    pub fn refresh_status_gauge(&self) {
        self.metrics.cache_synced(self.cache.state().usable());
        if self.cache.state().usable() {
            let mut phases = self
                .cache
                .pods()
                .iter()
                .map(|(_, p)| p.status.phase)
                .collect::<Vec<_>>();
            phases.extend(
                self.suspended_candidates()
                    .iter()
                    .map(|_| crate::sandbox::Phase::Suspended),
            );
            self.metrics.sandboxes_by_status(phases);
        }
    }

    /// Notes activity on a sandbox: kept in memory, and written to the pod at most once per
    /// SANDBOX_ACTIVITY_PERSIST_INTERVAL (in the background, so a GET costs no write).
    /// The name of the sandbox's Pod: `sandbox-{id}`, or a claimed pool Pod's own name. The
    /// cache knows; without it (or before it has the Pod) the apiserver is asked by label when
    /// the cluster keeps pools.
    pub(crate) async fn pod_name_of(&self, id: &str) -> Result<String> {
        if let Some(pod) = self.cache.pod(id) {
            return Ok(pod.pod_name(id));
        }
        if !self.spec.warm_pool.on() {
            return Ok(manifests::pod_name(id));
        }
        let selector = format!("{}={id}", manifests::SANDBOX_ID_LABEL);
        let found = self
            .calls
            .list::<k8s_openapi::api::core::v1::Pod>(&selector)
            .await?;
        Ok(found
            .into_iter()
            .find_map(|p| p.metadata.name)
            .unwrap_or_else(|| manifests::pod_name(id)))
    }

    fn touch(&self, id: &str, pod: &PodRecord) {
        let now = Timestamp::now();
        // Creation counts as written activity: a create costs no extra write.
        let written = pod
            .activity
            .or(pod.created)
            .unwrap_or(Timestamp::UNIX_EPOCH);
        if !self
            .memory
            .touch(id, now, written, self.lifecycle.activity_persist_interval)
        {
            return;
        }
        let cluster = self.calls.clone();
        let name = pod.pod_name(id);
        let writes = Arc::clone(&self.activity_writes);
        tokio::spawn(async move {
            // Waits its turn; the activity is in memory meanwhile.
            let Ok(_turn) = writes.acquire_owned().await else {
                return;
            };
            if let Err(e) = cluster
                .annotate_pod(&name, manifests::ACTIVITY_ANNOTATION, &now.to_string())
                .await
            {
                // A refusal is reported by the cluster layer, once.
                tracing::debug!(pod = %name, error = %e, "recording activity failed; it stays in \
                    memory");
            }
        });
    }

    /// Where the idle timer starts: the latest known activity (in memory here, written on the
    /// pod, or the creation), plus the grace that covers activity other replicas saw but have
    /// not written yet. The published `expires_at` and the reaper both use it, so a sandbox
    /// goes when its answer said it would.
    fn idle_since(&self, id: &str, pod: &PodRecord) -> Timestamp {
        let last = [self.memory.last_activity(id), pod.activity, pod.created]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or_else(Timestamp::now);
        last + self.lifecycle.idle_grace()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Pod, Service};

    use super::*;
    use crate::{
        admission::Snapshot,
        k8s::manifests::test_support::{a_request, spec},
        sandbox::{Phase, ThreadId, Timers},
    };

    /// A sandbox's Pod (Running and Ready unless `terminating`) and its Service on node port
    /// 30000 + n.
    fn objects(id: &str, tenant: &str, n: i32, terminating: bool) -> (Pod, Service) {
        timed_objects(id, tenant, n, terminating, Timers::default())
    }

    /// The same, created at the epoch with these timers.
    fn timed_objects(
        id: &str,
        tenant: &str,
        n: i32,
        terminating: bool,
        timers: Timers,
    ) -> (Pod, Service) {
        let t = spec(None, None);
        let mut request = a_request();
        request.id = SandboxId::parse(id).unwrap();
        request.thread = ThreadId::parse("t").unwrap();
        request.tenant = tenant.into();
        request.timers = timers;
        let mut pod = manifests::pod(&t, &request, Timestamp::UNIX_EPOCH);
        pod.metadata.uid = Some(format!("uid-{id}"));
        pod.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            }))
            .unwrap(),
        );
        if terminating {
            pod.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
            );
        }
        let mut service = manifests::service(&t, &request.id, &request.thread, &pod);
        service.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(30000 + n);
        (pod, service)
    }

    /// A cluster whose cache holds these sandboxes and whose calls go nowhere: every answer
    /// below comes from the cache.
    fn cluster(sandboxes: &[(&str, &str, bool)]) -> Cluster {
        let objects = sandboxes
            .iter()
            .enumerate()
            .map(|(n, (id, tenant, terminating))| objects(id, tenant, n as i32, *terminating));
        cluster_of(objects.collect())
    }

    fn cluster_of(objects: Vec<(Pod, Service)>) -> Cluster {
        let config = crate::config::from_flags(&["--node-host", "node.example"]);
        let (pods, services): (Vec<Pod>, Vec<Service>) = objects.into_iter().unzip();
        let cache = Cache::from_objects("deer-flow", &pods, &services);
        let nowhere = Cluster::nowhere("a", &config, &Metrics::new());
        Cluster { cache, ..nowhere }
    }

    fn id(s: &str) -> SandboxId {
        SandboxId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn reads_come_from_the_cache_records() {
        let c = cluster(&[("s-2", "team-b", true), ("s-1", "team-a", false)]);
        assert!(c.holds(&id("s-1")) && !c.holds(&id("s-3")));
        assert_eq!(c.count(), Some(2));
        assert_eq!(c.cached_tenant(&id("s-2")).as_deref(), Some("team-b"));

        let got = c.get(&id("s-1")).await.unwrap();
        assert_eq!(got.sandbox_url, "http://node.example:30001");
        assert_eq!((got.status, got.ready), (Phase::Running, true));
        assert_eq!(got.container_id.as_deref(), Some("uid-s-1"));
        assert_eq!((got.cluster.as_str(), got.tenant.as_str()), ("a", "team-a"));
        let presence = c.presence(&id("s-2")).await.unwrap().unwrap();
        assert_eq!(
            presence.uid.as_deref(),
            Some("uid-s-2"),
            "terminating still exists"
        );

        let listed = c.list().await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|s| s.sandbox_id.as_str()).collect();
        assert_eq!(ids, ["s-1", "s-2"], "sorted by id");
        assert_eq!(listed[1].reason.as_deref(), Some("Terminating"));
        // The next listing, with nothing changed, is the same one.
        assert!(Arc::ptr_eq(&listed[0], &c.list().await.unwrap()[0]));

        // Quotas count live sandboxes only, with the limits recorded on each.
        let held = c.held();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].0.as_str(), held[0].1.cpu), ("s-1", 1.0));
        let mut seen = Snapshot::default();
        c.tally("team-b", &mut seen);
        assert_eq!((seen.total, seen.tenant.len()), (1, 0));
    }

    #[tokio::test]
    async fn a_read_is_activity_and_a_listing_is_not() {
        let c = cluster(&[("s-1", "team-a", false), ("s-2", "team-a", false)]);
        let before = c.memory.version();
        c.list().await.unwrap();
        assert_eq!(c.memory.version(), before, "a listing moves no idle timer");
        assert_eq!(c.memory.last_activity("s-1"), None);
        c.get(&id("s-1")).await.unwrap();
        assert_ne!(c.memory.version(), before);
        assert!(c.memory.last_activity("s-1").is_some());
        assert_eq!(c.memory.last_activity("s-2"), None, "only the sandbox read");
        // The presence check proves existence; it is not activity either.
        c.presence(&id("s-2")).await.unwrap();
        assert_eq!(c.memory.last_activity("s-2"), None);
    }

    #[tokio::test]
    async fn the_deadline_a_read_publishes_is_the_one_the_reaper_plans_with() {
        let minute = std::time::Duration::from_secs(60);
        let c = cluster_of(vec![
            timed_objects(
                "idle",
                "t",
                0,
                false,
                Timers {
                    idle: minute,
                    ..Timers::default()
                },
            ),
            timed_objects(
                "ttl",
                "t",
                1,
                false,
                Timers {
                    lifetime: minute,
                    ..Timers::default()
                },
            ),
        ]);
        // Created at the epoch: the lifetime is long over; the idle one was read just now.
        let read = c.get(&id("idle")).await.unwrap();
        let published: Timestamp = read.expires_at.unwrap().parse().unwrap();
        let now = Timestamp::now();
        let due = expiry::plan(&c.expiry_candidates(now), now);
        let due: Vec<_> = due.iter().map(|r| (r.id.as_str(), r.reason)).collect();
        assert_eq!(due, [("ttl", crate::metrics::DeletionReason::Lifetime)]);
        let at_deadline = expiry::plan(&c.expiry_candidates(published), published);
        assert_eq!(
            at_deadline.len(),
            2,
            "the idle one is due when its answer said"
        );
        let just_before = published - jiff::SignedDuration::from_millis(1);
        assert_eq!(
            expiry::plan(&c.expiry_candidates(just_before), just_before).len(),
            1
        );
    }

    #[tokio::test]
    async fn waiting_for_a_ready_or_hopeless_sandbox_returns_at_once() {
        let c = cluster(&[("ready", "t", false), ("leaving", "t", true)]);
        let hour = std::time::Duration::from_secs(3600);
        let started = std::time::Instant::now();
        let ready = c.wait_ready(&id("ready"), hour).await.unwrap();
        assert!(ready.ready);
        let leaving = c.wait_ready(&id("leaving"), hour).await.unwrap();
        assert_eq!(leaving.reason.as_deref(), Some("Terminating"));
        assert!(
            started.elapsed() < hour / 60,
            "neither waited for its limit"
        );
    }

    #[tokio::test]
    async fn health_says_why_a_cluster_cannot_be_used() {
        let c = cluster(&[("s-1", "t", false)]);
        let now = std::time::Duration::ZERO;
        let healthy = c.health(now).await;
        assert_eq!((healthy.error, healthy.sandboxes), (None, Some(1)));

        c.probe
            .send_modify(|p| p.namespace = Some("namespace is terminating".into()));
        assert_eq!(
            c.health(now).await.error.as_deref(),
            Some("namespace is terminating")
        );
        assert!(
            !c.note_reachable(Some("connection refused".into())),
            "not a recovery"
        );
        assert_eq!(
            c.health(now).await.error.as_deref(),
            Some("cannot reach the Kubernetes API: connection refused"),
            "an apiserver out of reach says so first"
        );
        assert_eq!(c.unreachable().as_deref(), Some("connection refused"));
        assert!(c.note_reachable(None), "reachable again: a recovery");
        assert!(!c.note_reachable(None), "once");
        assert_eq!(c.unreachable(), None);
    }

    #[tokio::test]
    async fn the_status_gauge_counts_what_the_cache_holds() {
        let c = cluster(&[("s-1", "t", false), ("s-2", "t", false), ("s-3", "t", true)]);
        c.refresh_status_gauge();
        let text = c.metrics().render();
        for line in [
            r#"sandbox_provisioner_sandboxes{cluster="a",status="Running"} 3"#,
            r#"sandbox_provisioner_cache_synced{cluster="a"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn a_lark_conflict_says_which_way_round_it_is() {
        let conflict = |existing_has_broker| {
            Error::LarkConflict {
                id: "s".into(),
                existing_has_broker,
            }
            .to_string()
        };
        assert!(conflict(true).starts_with(
            "sandbox \"s\" exists with the Lark CLI broker sidecar, but this request asks \
             without it"
        ));
        assert!(conflict(false).starts_with(
            "sandbox \"s\" exists without the Lark CLI broker sidecar, but this request asks \
             for it"
        ));
        assert!(conflict(false).ends_with("delete the sandbox and create it again"));
    }
}
