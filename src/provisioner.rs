//! Creating, reading, listing and deleting sandboxes: the rules the API promises (idempotent
//! creates, no half-made sandboxes, repair of a pod left without its service), on top of the
//! cluster operations.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};

use crate::{
    k8s::{
        cache::{Cache, CacheSummary},
        cluster::{self, Cluster, Kind},
        manifests::{self, SandboxTemplate},
        network_policy::NetworkPolicyMode,
    },
    metrics::DeletionReason as Reason,
    metrics::Metrics,
    permissions::Refusals,
    sandbox::{
        Expiry, InvalidId, Phase, Resources, Sandbox, SandboxId, SandboxStatus, ThreadId, Timers,
    },
};

/// How long a delete waits for the cache to drop the sandbox, so that a read right after it
/// from this service does not see it.
const CACHE_CATCH_UP: Duration = Duration::from_secs(2);
/// How many expired sandboxes the reaper removes at a time.
const REAP_CONCURRENCY: usize = 8;

/// How long a created sandbox is listed from memory while the watch has not delivered it.
const FRESH_FOR: Duration = Duration::from_secs(10);

/// Reasons that mean a sandbox will not become ready by waiting.
const HOPELESS_REASONS: [&str; 8] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "Unschedulable",
    "CreateContainerConfigError",
    "CreateContainerError",
    "Terminating",
];

/// Ready, or never going to be without someone changing something.
fn settled(status: &SandboxStatus) -> bool {
    status.ready
        || matches!(status.phase, Phase::Failed | Phase::Succeeded)
        || status
            .reason
            .as_deref()
            .is_some_and(|r| HOPELESS_REASONS.contains(&r))
}

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] InvalidId),
    #[error("sandbox {0:?} not found")]
    NotFound(String),
    #[error("sandbox {id:?} already exists for thread {existing:?}, but this request names thread {requested:?}; use another sandbox_id, or delete the existing sandbox first")]
    ThreadConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error("sandbox {0:?} is being deleted; retry in a moment")]
    Terminating(String),
    #[error(transparent)]
    Kubernetes(#[from] cluster::Error),
}

impl Error {
    /// A refused permission: already logged (rate-limited) and counted where it happened.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Kubernetes(e) if e.is_permission_denied())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The sandbox service: one per process, shared by all requests.
#[derive(Clone)]
pub struct Provisioner {
    cluster: Cluster,
    cache: Cache,
    template: SandboxTemplate,
    metrics: Metrics,
    /// Sandboxes already seen Ready, so that time-to-ready is recorded once per sandbox.
    seen_ready: Arc<Mutex<HashSet<String>>>,
    /// Last activity per sandbox seen by this process, and when it was last written to the pod.
    activity: Arc<Mutex<HashMap<String, (Timestamp, Timestamp)>>>,
    /// Sandboxes this process created that the cache may not show yet, with when.
    fresh: Arc<Mutex<HashMap<String, (Sandbox, Instant)>>>,
    /// Whether the baseline NetworkPolicy is known to be as the configuration wants it.
    baseline_settled: Arc<AtomicBool>,
}

/// A created or found sandbox, and whether this call created it.
pub struct Provisioned {
    pub sandbox: Sandbox,
    pub created: bool,
}

impl Provisioner {
    pub fn new(
        cluster: Cluster,
        cache: Cache,
        template: SandboxTemplate,
        metrics: Metrics,
    ) -> Self {
        Provisioner {
            cluster,
            cache,
            template,
            metrics,
            seen_ready: Arc::default(),
            fresh: Arc::default(),
            activity: Arc::default(),
            baseline_settled: Arc::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether reads are served from the watch cache.
    pub fn cache_summary(&self) -> CacheSummary {
        self.cache.state().summary()
    }

    /// Updates the sandboxes-by-status gauge from the cache (no apiserver call).
    pub fn refresh_status_gauge(&self) {
        self.metrics.cache_synced(self.cache.state().usable());
        if self.cache.state().usable() {
            let phases = self
                .cache
                .pods()
                .iter()
                .map(|p| SandboxStatus::of(p).phase)
                .collect::<Vec<_>>();
            self.metrics.sandboxes_by_status(phases);
        }
    }

    /// Notes activity on a sandbox: kept in memory, and written to the pod at most once per
    /// SANDBOX_ACTIVITY_PERSIST_INTERVAL (in the background, so a GET costs no write).
    fn touch(&self, id: &str, pod: &Pod) {
        let now = Timestamp::now();
        let persist = {
            let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
            // Creation counts as written activity: a create costs no extra write.
            let written = manifests::activity_of(pod)
                .or_else(|| manifests::created_of(pod))
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let entry = activity.entry(id.to_string()).or_insert((now, written));
            entry.0 = now;
            let due = now.duration_since(entry.1).unsigned_abs()
                >= self.template.activity_persist_interval;
            if due {
                entry.1 = now;
            }
            due
        };
        if persist {
            let cluster = self.cluster.clone();
            let name = pod.metadata.name.clone().unwrap_or_default();
            tokio::spawn(async move {
                if let Err(e) = cluster
                    .annotate_pod(&name, manifests::ACTIVITY_ANNOTATION, &now.to_string())
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "recording activity failed; it stays in memory");
                }
            });
        }
    }

    /// The latest known activity: in memory here, written on the pod, or the creation.
    fn last_activity(&self, id: &str, pod: &Pod) -> Timestamp {
        let remembered = self
            .activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .map(|(last, _)| *last);
        [
            remembered,
            manifests::activity_of(pod),
            manifests::created_of(pod),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_else(Timestamp::now)
    }

    /// Where the idle timer starts: the latest known activity, plus the grace that covers
    /// activity other replicas saw but have not written yet. The published `expires_at` and the
    /// reaper both use it, so a sandbox goes when its answer said it would.
    fn idle_since(&self, id: &str, pod: &Pod) -> Timestamp {
        self.last_activity(id, pod) + self.template.idle_grace
    }

    /// Fills in what depends on timers and activity.
    fn finish_view(&self, sandbox: &mut Sandbox, pod: &Pod) {
        let timers = manifests::timers_of(pod, self.template.timers.ready);
        let created = manifests::created_of(pod).unwrap_or_else(Timestamp::now);
        sandbox.expires_at = timers
            .expires_at(created, self.idle_since(&sandbox.sandbox_id, pod))
            .map(|t| t.to_string());
    }

    /// The timers of a new sandbox: the request's, within the configured ceilings.
    pub fn timers_for(&self, ttl_seconds: Option<u32>, idle_seconds: Option<u32>) -> Timers {
        self.template.timers.for_request(ttl_seconds, idle_seconds)
    }

    /// Counts as activity and returns the sandbox with its new deadline.
    pub async fn keepalive(&self, id: &SandboxId) -> Result<Sandbox> {
        self.get(id).await
    }

    /// Deletes every managed sandbox whose lifetime, idle or ready timer ran out. Only objects
    /// that carry this service's labels are seen (the cache is label-selected). Returns how
    /// many were removed. Stops early once `leading` says this replica lost the lease.
    pub async fn reap(&self, leading: impl Fn() -> bool) -> usize {
        if !self.cache.state().usable() {
            return 0;
        }
        let now = Timestamp::now();
        let due: Vec<(SandboxId, Reason, String)> = self
            .cache
            .pods()
            .iter()
            .filter_map(|pod| {
                let raw_id = sandbox_id_of(&pod.metadata)?;
                let id = SandboxId::parse(&raw_id).ok()?;
                let timers = manifests::timers_of(pod, self.template.timers.ready);
                let created = manifests::created_of(pod).unwrap_or(now);
                let status = SandboxStatus::of(pod);
                let expiry =
                    timers.due(now, created, self.idle_since(&raw_id, pod), status.ready)?;
                let (reason, why) = match expiry {
                    Expiry::Lifetime => (Reason::Lifetime, "its lifetime ended".to_string()),
                    Expiry::Idle => (Reason::Idle, "it was idle too long".to_string()),
                    Expiry::NeverReady => (
                        Reason::NeverReady,
                        format!(
                            "it never became ready ({}: {})",
                            status.reason.as_deref().unwrap_or("no reason reported"),
                            status.message.as_deref().unwrap_or("-")
                        ),
                    ),
                };
                Some((id, reason, why))
            })
            .collect();
        // Several at a time, so that many deadlines falling together (a backend that went
        // away with all its sandboxes) are still met within the promised lag.
        let removals = futures::stream::iter(due).map(|(id, reason, why)| {
            let leading = &leading;
            async move {
                if !leading() {
                    return false;
                }
                match self.remove(&id, reason).await {
                    Ok(true) => {
                        tracing::warn!(sandbox_id = %id, reason = %why, "sandbox expired and was removed");
                        true
                    }
                    Ok(false) => false,
                    Err(e) => {
                        if !e.is_permission_denied() {
                            tracing::warn!(sandbox_id = %id, error = %e, "removing an expired sandbox failed; retrying next round");
                        }
                        false
                    }
                }
            }
        });
        removals
            .buffer_unordered(REAP_CONCURRENCY)
            .filter(|removed| std::future::ready(*removed))
            .count()
            .await
    }

    /// Repairs or removes what a crash or a third party left behind, among the managed objects
    /// older than SANDBOX_ORPHAN_GRACE: a pod without its Service (or, when configured, its
    /// NetworkPolicy) gets it back, a Service or NetworkPolicy without its pod is removed (the
    /// garbage collector would, later), and a sandbox whose pod ended is removed. Returns how
    /// many objects it acted on. Stops early once `leading` says this replica lost the lease.
    pub async fn sweep(&self, leading: impl Fn() -> bool) -> usize {
        if !self.cache.state().usable() {
            return 0;
        }
        let now = Timestamp::now();
        let old = |meta: &ObjectMeta| {
            meta.creation_timestamp.as_ref().is_some_and(|t| {
                now.duration_since(t.0).unsigned_abs() >= self.template.orphan_grace
            })
        };
        let pods = self.cache.pods();
        let services = self.cache.services();
        let policies = self.sweepable_policies().await;
        let mut acted = self
            .remove_ownerless(
                &services.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                &pods,
                &old,
                &leading,
                true,
            )
            .await;
        if let Some(policies) = &policies {
            if !policies
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(manifests::BASELINE_POLICY_NAME))
            {
                self.baseline_settled.store(false, Ordering::Relaxed);
                match self.settle_baseline_policy().await {
                    Ok(()) => {
                        acted += 1;
                        tracing::warn!("the baseline NetworkPolicy was missing; restored it");
                    }
                    Err(e) if e.is_permission_denied() => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "restoring the baseline NetworkPolicy failed; retrying next round")
                    }
                }
            }
            // Each sandbox's own policy (the baseline belongs to no sandbox).
            let own: Vec<&NetworkPolicy> = policies
                .iter()
                .filter(|p| sandbox_id_of(&p.metadata).is_some())
                .map(AsRef::as_ref)
                .collect();
            acted += self
                .remove_ownerless(&own, &pods, &old, &leading, false)
                .await;
        }
        for pod in &pods {
            if !leading() {
                break;
            }
            if old(&pod.metadata) || pod_ended(pod) {
                acted += self.sweep_pod(pod, &services, policies.as_deref()).await;
            }
        }
        acted
    }

    /// Deletes the objects among `objects` whose pod is gone (old enough ones only); a Service
    /// counts as an orphaned sandbox in the deletion metric.
    async fn remove_ownerless<K: Kind>(
        &self,
        objects: &[&K],
        pods: &[Arc<Pod>],
        old: &impl Fn(&ObjectMeta) -> bool,
        leading: &impl Fn() -> bool,
        counted_as_sandbox: bool,
    ) -> usize {
        let mut removed = 0;
        for object in objects {
            if !leading() {
                break;
            }
            let meta = object.meta();
            if !old(meta) || pods.iter().any(|p| manifests::meta_owned_by(meta, p)) {
                continue;
            }
            let name = meta.name.clone().unwrap_or_default();
            let kind = K::kind(&()).to_lowercase();
            match self.cluster.delete::<K>(&name).await {
                Ok(true) => {
                    removed += 1;
                    if counted_as_sandbox {
                        self.metrics.sandbox_deleted(Reason::Orphan);
                    }
                    tracing::warn!(%name, %kind, "removed an object whose pod is gone");
                }
                Ok(false) => {}
                Err(e) if e.is_permission_denied() => {}
                Err(e) => {
                    tracing::warn!(%name, %kind, error = %e, "removing an orphaned object failed")
                }
            }
        }
        removed
    }

    /// One managed pod (old enough, or ended): an ended sandbox is removed; a missing Service
    /// or NetworkPolicy is put back (a pod whose Service cannot be is removed). Returns how
    /// many objects it acted on.
    async fn sweep_pod(
        &self,
        pod: &Pod,
        services: &[Arc<Service>],
        policies: Option<&[Arc<NetworkPolicy>]>,
    ) -> usize {
        let Some(id) = sandbox_id_of(&pod.metadata).and_then(|i| SandboxId::parse(&i).ok()) else {
            return 0;
        };
        if pod_ended(pod) {
            let removed = matches!(self.remove(&id, Reason::Orphan).await, Ok(true));
            if removed {
                tracing::warn!(sandbox_id = %id, phase = ?SandboxStatus::of(pod).phase, "removed a sandbox whose pod ended");
            }
            return usize::from(removed);
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return 0;
        }
        let thread = manifests::thread_of(&pod.metadata).and_then(|t| ThreadId::parse(t).ok());
        let mut acted = 0;
        if !services.iter().any(|s| manifests::owned_by(s, pod)) {
            let repaired = match &thread {
                Some(thread) => self.ensure_service(&id, thread, pod).await.is_ok(),
                None => false,
            };
            if !repaired {
                let removed = matches!(self.remove(&id, Reason::Orphan).await, Ok(true));
                if removed {
                    tracing::warn!(sandbox_id = %id, "removed a pod whose Service could not be restored");
                }
                return usize::from(removed);
            }
            acted += 1;
            tracing::warn!(sandbox_id = %id, "gave a pod its missing Service back");
        }
        let lacks_policy = policies.is_some_and(|ps| {
            !ps.iter()
                .any(|p| manifests::meta_owned_by(&p.metadata, pod))
        });
        if let (true, Some(thread)) = (lacks_policy, &thread) {
            match self.ensure_network_policy(&id, thread, pod).await {
                Ok(()) => {
                    acted += 1;
                    tracing::warn!(sandbox_id = %id, "gave a pod its missing NetworkPolicy back");
                }
                Err(e) if e.is_permission_denied() => {}
                Err(e) => {
                    tracing::warn!(sandbox_id = %id, error = %e, "restoring a missing NetworkPolicy failed; retrying next round")
                }
            }
        }
        acted
    }

    /// Brings the baseline NetworkPolicy in line with the configuration, once per process (and
    /// again when the sweep finds it missing): created when policies are on, so that a sandbox
    /// is shut off before its own policy exists; removed when they are off, since a baseline
    /// left from before would shut every sandbox off (quietly when absent or not permitted: the
    /// service then needs no rights on policies).
    async fn settle_baseline_policy(&self) -> Result<()> {
        if self.baseline_settled.load(Ordering::Relaxed) {
            return Ok(());
        }
        match manifests::baseline_network_policy(&self.template) {
            Some(baseline) => match self.cluster.create(&baseline).await {
                Ok(_) => tracing::info!(
                    name = manifests::BASELINE_POLICY_NAME,
                    "created the baseline NetworkPolicy that shuts off sandboxes without their own"
                ),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            },
            None => match self
                .cluster
                .delete::<NetworkPolicy>(manifests::BASELINE_POLICY_NAME)
                .await
            {
                Ok(true) => tracing::warn!(
                    name = manifests::BASELINE_POLICY_NAME,
                    "SANDBOX_NETWORK_POLICY is none: removed the baseline NetworkPolicy left from before"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not check for a baseline NetworkPolicy")
                }
            },
        }
        self.baseline_settled.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The managed NetworkPolicies from the cache, when sandboxes get one (None otherwise).
    async fn sweepable_policies(&self) -> Option<Vec<Arc<NetworkPolicy>>> {
        if matches!(self.template.network_policy, NetworkPolicyMode::None) {
            // Never fails without policies: a stale baseline is removed or left quietly.
            let _ = self.settle_baseline_policy().await;
            return None;
        }
        self.cache.policies()
    }

    /// The client, for background tasks that need their own API access.
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// The permissions the apiserver refused and that have not worked since.
    pub fn refusals(&self) -> &Refusals {
        self.cluster.refusals()
    }

    /// Records time-to-ready the first time this process sees a sandbox Ready.
    fn note_readiness(&self, sandbox: &Sandbox) {
        if !sandbox.ready {
            return;
        }
        let mut seen = self.seen_ready.lock().unwrap_or_else(|e| e.into_inner());
        if seen.insert(sandbox.sandbox_id.clone()) {
            let created = sandbox
                .created_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok());
            if let Some(created) = created {
                let waited = Timestamp::now().duration_since(created);
                if let Ok(waited) = Duration::try_from(waited) {
                    self.metrics.sandbox_ready(waited);
                }
            }
        }
    }

    pub fn namespace(&self) -> &str {
        self.cluster.namespace()
    }

    /// Has the apiserver validate and admit the pod this configuration makes (dry run), so that
    /// a placement, size or security setting it refuses is found at start, not at first use.
    pub async fn check_pod_template(&self) -> Result<(), cluster::Error> {
        let id = SandboxId::parse("startup-check").expect("a valid id");
        let thread = ThreadId::parse("startup-check").expect("a valid thread id");
        let resources = self.template.default_resources.clone();
        let pod = manifests::pod(
            &self.template,
            &id,
            &thread,
            Timestamp::now(),
            &resources,
            &self.template.timers,
        );
        self.cluster.dry_run_pod(&pod).await.map(|_| ())
    }

    /// Whether the configured PersistentVolumeClaim exists in the sandbox namespace.
    pub async fn pvc_exists(&self, name: &str) -> Result<bool> {
        Ok(self.cluster.pvc_exists(name).await?)
    }

    /// Creates the sandbox namespace when missing. Returns whether it was created.
    pub async fn ensure_namespace(&self) -> Result<bool> {
        Ok(self
            .cluster
            .ensure_namespace(&manifests::namespace(self.namespace()))
            .await?)
    }

    /// Creates the sandbox, or returns the existing one when it belongs to the same thread.
    ///
    /// Callers should not cancel this future half-way (run it in its own task): a cancelled
    /// create could leave a Pod without its Service until the next POST repairs it.
    pub async fn create(
        &self,
        id: &SandboxId,
        thread: &ThreadId,
        resources: &Resources,
        timers: &Timers,
    ) -> Result<Provisioned> {
        let started = Instant::now();
        // Before the first pod: whatever happens between the pod and its own policy, the
        // sandbox is then shut off rather than open.
        self.settle_baseline_policy().await?;
        let wanted = manifests::pod(
            &self.template,
            id,
            thread,
            Timestamp::now(),
            resources,
            timers,
        );
        let (pod, created) = match self.create_pod(&wanted).await {
            Ok(pod) => (pod, true),
            Err(e) if e.is_already_exists() => (self.existing_pod(id, thread).await?, false),
            Err(e) => return Err(e.into()),
        };
        let service = match self.ensure_service(id, thread, &pod).await {
            Ok(service) => service,
            Err(e) if created => {
                self.roll_back(id).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        match self.ensure_network_policy(id, thread, &pod).await {
            Ok(()) => {}
            Err(e) if created => {
                self.roll_back(id).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let mut sandbox =
            manifests::sandbox_view(id.as_str(), &pod, Some(&service), &self.template);
        self.touch(id.as_str(), &pod);
        self.finish_view(&mut sandbox, &pod);
        if created {
            // Until the watch delivers it, LIST shows it from here (GET confirms a cache miss
            // with the apiserver), so a read right after this write sees it.
            self.fresh
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.to_string(), (sandbox.clone(), Instant::now()));
            self.metrics.sandbox_created(started.elapsed());
            tracing::info!(sandbox_id = %id, thread_id = %thread, url = %sandbox.sandbox_url, "sandbox created");
        }
        Ok(Provisioned { sandbox, created })
    }

    /// Creates the pod, creating a missing namespace first and waiting out the moment after a
    /// namespace is created when its default ServiceAccount does not exist yet.
    async fn create_pod(&self, pod: &Pod) -> Result<Pod, cluster::Error> {
        const SERVICE_ACCOUNT_WAIT: Duration = Duration::from_secs(10);
        let started = Instant::now();
        loop {
            match self.cluster.create(pod).await {
                Err(e) if e.is_namespace_missing() && started.elapsed() < SERVICE_ACCOUNT_WAIT => {
                    tracing::info!(
                        namespace = self.namespace(),
                        "namespace is missing; creating it"
                    );
                    self.cluster
                        .ensure_namespace(&manifests::namespace(self.namespace()))
                        .await?;
                }
                Err(e)
                    if e.is_service_account_pending()
                        && started.elapsed() < SERVICE_ACCOUNT_WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// The pod that a create collided with, if it is this thread's and not on its way out.
    async fn existing_pod(&self, id: &SandboxId, thread: &ThreadId) -> Result<Pod> {
        let pod = self
            .cluster
            .get::<Pod>(&manifests::pod_name(id))
            .await?
            // Deleted between our create and this read: it is on its way out.
            .ok_or_else(|| Error::Terminating(id.to_string()))?;
        let existing = manifests::thread_of(&pod.metadata).unwrap_or_default();
        if existing != thread.as_str() {
            return Err(Error::ThreadConflict {
                id: id.to_string(),
                existing: existing.to_string(),
                requested: thread.to_string(),
            });
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return Err(Error::Terminating(id.to_string()));
        }
        Ok(pod)
    }

    /// Returns the pod's Service, creating it when missing and replacing one left over from an
    /// earlier pod of the same name.
    async fn ensure_service(
        &self,
        id: &SandboxId,
        thread: &ThreadId,
        pod: &Pod,
    ) -> Result<Service> {
        self.ensure_owned(&manifests::service(&self.template, id, thread, pod), pod)
            .await
    }

    /// The sandbox's NetworkPolicy, when configured: created when missing, replaced when it was
    /// left over from an earlier pod of the same name.
    async fn ensure_network_policy(
        &self,
        id: &SandboxId,
        thread: &ThreadId,
        pod: &Pod,
    ) -> Result<()> {
        match manifests::network_policy(&self.template, id, thread, pod) {
            Some(wanted) => self.ensure_owned(&wanted, pod).await.map(drop),
            None => Ok(()),
        }
    }

    /// Creates an object that belongs to the pod, or returns the one that exists; an object of
    /// that name owned by an earlier pod of the same sandbox is deleted and made anew.
    async fn ensure_owned<K: Kind>(&self, wanted: &K, pod: &Pod) -> Result<K> {
        let name = wanted.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&()).to_lowercase();
        for _ in 0..3 {
            match self.cluster.create(wanted).await {
                Ok(created) => return Ok(created),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
            match self.cluster.get::<K>(&name).await? {
                Some(existing) if manifests::meta_owned_by(existing.meta(), pod) => {
                    return Ok(existing)
                }
                Some(_) => {
                    tracing::info!(%name, %kind, "replacing an object left over from an earlier pod");
                    self.cluster.delete::<K>(&name).await?;
                }
                None => {}
            }
        }
        Err(cluster::Error::Refused {
            action: format!("create {kind} {name}"),
            code: 409,
            reason: "Conflict".into(),
            message: format!("another {kind} of that name kept reappearing"),
            kind: Some(K::plural(&()).into_owned()),
        }
        .into())
    }

    /// Removes what this call created when the sandbox could not be completed.
    async fn roll_back(&self, id: &SandboxId) {
        let _ = self
            .cluster
            .delete::<Service>(&manifests::service_name(id))
            .await;
        match self.cluster.delete::<Pod>(&manifests::pod_name(id)).await {
            Ok(_) => {
                tracing::warn!(sandbox_id = %id, "the sandbox could not be completed; its pod was removed again")
            }
            Err(e) => {
                tracing::error!(sandbox_id = %id, error = %e, "service creation failed and the pod could not be removed; the next POST for this id repairs it")
            }
        }
    }

    /// One sandbox: from the cache when it is synced and has the pod (no apiserver call),
    /// otherwise from the apiserver (so a miss is confirmed before answering 404).
    pub async fn get(&self, id: &SandboxId) -> Result<Sandbox> {
        let (pod_name, service_name) = (manifests::pod_name(id), manifests::service_name(id));
        if self.cache.state().usable() {
            if let Some(pod) = self.cache.pod(&pod_name) {
                let service = match self.cache.service(&service_name) {
                    Some(s) => Some((*s).clone()),
                    None => self.cluster.get::<Service>(&service_name).await?,
                };
                let mut sandbox =
                    manifests::sandbox_view(id.as_str(), &pod, service.as_ref(), &self.template);
                self.touch(id.as_str(), &pod);
                self.finish_view(&mut sandbox, &pod);
                self.note_readiness(&sandbox);
                return Ok(sandbox);
            }
        }
        let (pod, service) = tokio::join!(
            self.cluster.get::<Pod>(&pod_name),
            self.cluster.get::<Service>(&service_name),
        );
        let pod = pod?.ok_or_else(|| Error::NotFound(id.to_string()))?;
        let service = service?;
        let mut sandbox =
            manifests::sandbox_view(id.as_str(), &pod, service.as_ref(), &self.template);
        self.touch(id.as_str(), &pod);
        self.finish_view(&mut sandbox, &pod);
        self.note_readiness(&sandbox);
        Ok(sandbox)
    }

    /// Returns as soon as the sandbox is ready or cannot become ready (image pull failure,
    /// crash loop, unschedulable, ended), or after `limit` with its current status. Driven by
    /// the watch; only while the cache is not usable does it poll the apiserver.
    pub async fn wait_ready(&self, id: &SandboxId, limit: Duration) -> Result<Sandbox> {
        let deadline = tokio::time::Instant::now() + limit;
        let pod_name = manifests::pod_name(id);
        loop {
            let sandbox = self.get(id).await?;
            let status = SandboxStatus {
                phase: sandbox.status,
                ready: sandbox.ready,
                reason: sandbox.reason.clone(),
                message: None,
            };
            let now = tokio::time::Instant::now();
            if settled(&status) || now >= deadline {
                return Ok(sandbox);
            }
            if self.cache.state().usable() {
                self.cache
                    .wait_for(deadline - now, |c| {
                        !c.state().usable()
                            || c.pod(&pod_name)
                                .is_none_or(|p| settled(&SandboxStatus::of(&p)))
                    })
                    .await;
            } else {
                tokio::time::sleep((deadline - now).min(Duration::from_millis(250))).await;
            }
        }
    }

    /// All managed sandboxes: from the cache when it is synced, otherwise from one pod list and
    /// one service list.
    pub async fn list(&self) -> Result<Vec<Sandbox>> {
        let from_cache = self.cache.state().usable();
        let (pods, services) = if from_cache {
            (self.cache.pods(), self.cache.services())
        } else {
            let selector = manifests::managed_selector();
            let (pods, services) = tokio::join!(
                self.cluster.list::<Pod>(&selector),
                self.cluster.list::<Service>(&selector),
            );
            (shared(pods?), shared(services?))
        };
        let services: HashMap<String, &Service> = services
            .iter()
            .filter_map(|s| Some((sandbox_id_of(&s.metadata)?, s.as_ref())))
            .collect();
        let mut sandboxes: Vec<Sandbox> = pods
            .iter()
            .filter_map(|pod| {
                let id = sandbox_id_of(&pod.metadata)?;
                let mut sandbox =
                    manifests::sandbox_view(&id, pod, services.get(&id).copied(), &self.template);
                self.finish_view(&mut sandbox, pod);
                Some(sandbox)
            })
            .collect();
        if from_cache {
            let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
            fresh.retain(|id, (_, at)| {
                at.elapsed() < FRESH_FOR && !sandboxes.iter().any(|s| &s.sandbox_id == id)
            });
            sandboxes.extend(fresh.values().map(|(sandbox, _)| sandbox.clone()));
        }
        sandboxes.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        self.metrics
            .sandboxes_by_status(sandboxes.iter().map(|s| s.status));
        sandboxes.iter().for_each(|s| self.note_readiness(s));
        Ok(sandboxes)
    }

    /// Deletes the sandbox's Service and Pod at a caller's request. Returns whether anything
    /// existed.
    pub async fn delete(&self, id: &SandboxId) -> Result<bool> {
        self.remove(id, Reason::Api).await
    }

    /// Deletes the sandbox's objects, counting the deletion under `reason`.
    async fn remove(&self, id: &SandboxId, reason: Reason) -> Result<bool> {
        let (pod_name, service_name) = (manifests::pod_name(id), manifests::service_name(id));
        let (service, pod) = tokio::join!(
            self.cluster.delete::<Service>(&service_name),
            self.cluster.delete::<Pod>(&pod_name),
        );
        let existed = service? | pod?;
        if !matches!(self.template.network_policy, NetworkPolicyMode::None) {
            // The garbage collector would remove it with the pod; this makes it immediate.
            self.cluster
                .delete::<NetworkPolicy>(&manifests::network_policy_name(id))
                .await?;
        }
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str());
        if existed {
            self.metrics.sandbox_deleted(reason);
            tracing::info!(sandbox_id = %id, "sandbox deleted");
        }
        if existed && self.cache.state().usable() {
            self.cache
                .wait_for(CACHE_CATCH_UP, |c| {
                    c.pod(&pod_name).is_none() && c.service(&service_name).is_none()
                })
                .await;
        }
        self.seen_ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str());
        self.activity
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id.as_str());
        Ok(existed)
    }
}

/// Whether the pod ran to an end (Succeeded or Failed): its sandbox is over.
fn pod_ended(pod: &Pod) -> bool {
    matches!(
        SandboxStatus::of(pod).phase,
        Phase::Succeeded | Phase::Failed
    )
}

fn shared<T>(items: Vec<T>) -> Vec<Arc<T>> {
    items.into_iter().map(Arc::new).collect()
}

fn sandbox_id_of(meta: &ObjectMeta) -> Option<String> {
    meta.labels
        .as_ref()?
        .get(manifests::SANDBOX_ID_LABEL)
        .cloned()
}
