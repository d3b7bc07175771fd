//! Every cluster behind one API: a create is placed by [`placement`] (pure), and reads,
//! deletes and lists find a sandbox in whichever cluster holds it.
//!
//! ```text
//!   api ──► Fleet ──► Cluster "eu-1" (its client, watch cache, probe and loops, all private)
//!                └──► Cluster "us-1"
//! ```
//!
//! Sandbox ids are unique across the fleet: before placing a new one, every cluster is asked
//! whether it holds the id. A cluster whose apiserver does not answer is skipped for new
//! sandboxes, and a read of a sandbox it holds (or of an id found nowhere while it is out of
//! reach) answers 503, never 404: a 404 makes DeerFlow's client forget the sandbox.

pub mod placement;
pub mod plan;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use placement::{place, preference, ClusterState, Skipped};

use crate::{
    admission::{Admission, Ask, Held, Refusal, Snapshot, Tenant},
    cluster::{self, Cluster, PodPresence, Provisioned, ResumeTrigger},
    metrics::Metrics,
    sandbox::{Listed, Sandbox, SandboxId, SandboxRequest},
};

/// How long a client should wait before retrying a 503 about a cluster (its probe runs every
/// two seconds).
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// Why a fleet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "there is no cluster named {name:?}; the clusters are {known:?} (GET \
        /api/capabilities lists them)"
    )]
    UnknownCluster { name: String, known: Vec<String> },
    #[error(
        "no cluster has the labels {wanted}; the clusters and their labels are {known} (GET \
        /api/capabilities lists them)"
    )]
    NoClusterMatches { wanted: String, known: String },
    #[error("no cluster can take a new sandbox now: {}; retry later", reasons(.0))]
    NoCapacity(Vec<(String, Skipped)>),
    #[error(
        "cannot reach the Kubernetes API of cluster {cluster:?} ({cause}); {what}; retry when \
        it answers again"
    )]
    Unreachable {
        cluster: String,
        cause: String,
        what: &'static str,
    },
    #[error(
        "sandbox {id:?} exists in cluster {holder:?}, which this request does not select; use \
        another sandbox_id, or delete the existing sandbox first"
    )]
    HeldElsewhere { id: String, holder: String },
    #[error("tenant {tenant:?} may not use size {size:?}; it may use {allowed:?}")]
    SizeNotAllowed {
        tenant: String,
        size: String,
        allowed: Vec<String>,
    },
    #[error("tenant {tenant:?} may not use cluster {cluster:?}; it may use {allowed:?}")]
    ClusterNotAllowed {
        tenant: String,
        cluster: String,
        allowed: Vec<String>,
    },
    #[error(transparent)]
    Quota(#[from] Refusal),
    #[error(transparent)]
    Lock(#[from] cluster::LockError),
    #[error(transparent)]
    Provision(#[from] cluster::Error),
}

/// The sandbox if the scope may see it; another tenant's is not found.
fn visible(sandbox: Sandbox, scope: &Scope) -> Result<Sandbox> {
    if scope.allows(&sandbox.tenant) {
        Ok(sandbox)
    } else {
        Err(cluster::Error::NotFound(sandbox.sandbox_id).into())
    }
}

fn reasons(skipped: &[(String, Skipped)]) -> String {
    skipped
        .iter()
        .map(|(name, why)| format!("cluster {name:?} is {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub type Result<T, E = FleetError> = std::result::Result<T, E>;

/// An error for reading or deleting in `cluster` while it is out of reach.
fn reachable(cluster: &Cluster, what: &'static str) -> Result<()> {
    match cluster.unreachable() {
        Some(cause) => Err(FleetError::Unreachable {
            cluster: cluster.name().to_string(),
            cause,
            what,
        }),
        None => Ok(()),
    }
}

/// The cluster as placement sees it now. A cluster with a capacity whose cache is not usable
/// cannot count its sandboxes, so it takes none until the cache is back.
fn state(cluster: &Cluster) -> ClusterState<'_> {
    let count = cluster.count();
    let unreachable = cluster.unreachable().or_else(|| {
        (cluster.max_sandboxes().is_some() && count.is_none())
            .then(|| "its watch cache is not synced, so its sandbox count is unknown".into())
    });
    ClusterState {
        name: cluster.name(),
        weight: cluster.weight(),
        sandboxes: count.unwrap_or(0),
        max_sandboxes: cluster.max_sandboxes(),
        unreachable,
    }
}

/// What GET /api/capabilities and /readyz say about a cluster.
pub fn info(cluster: &Cluster) -> ClusterInfo {
    ClusterInfo {
        name: cluster.name().to_string(),
        namespace: cluster.namespace().to_string(),
        labels: cluster.labels().clone(),
        weight: cluster.weight(),
        sandboxes: cluster.count(),
        max_sandboxes: cluster.max_sandboxes(),
        reachable: cluster.unreachable().is_none(),
        warm_pools: cluster
            .warm_pools()
            .into_iter()
            .map(|(name, target, (ready, starting))| WarmPoolInfo {
                size: name,
                target,
                ready,
                starting,
            })
            .collect(),
    }
}

/// Which clusters a create may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Target {
    #[default]
    Any,
    /// Exactly this cluster.
    Named(String),
    /// Clusters that carry all of these labels.
    Labels(BTreeMap<String, String>),
}

/// A cluster and its capacity use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterInfo {
    pub name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Share of new sandboxes; 0: draining.
    pub weight: u32,
    /// Sandboxes it holds (null while its cache is not synced).
    pub sandboxes: Option<usize>,
    /// Most sandboxes it takes (null: no limit).
    pub max_sandboxes: Option<usize>,
    /// Whether its apiserver answered the last probe.
    pub reachable: bool,
    /// Its warm pools (SANDBOX_WARM_POOL); absent without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_pools: Vec<WarmPoolInfo>,
}

/// One warm pool of a cluster: started Pods of one size, kept ready for creates to take.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WarmPoolInfo {
    /// The size its Pods have.
    pub size: String,
    /// How many unclaimed Pods it keeps.
    pub target: u32,
    /// Unclaimed Pods ready to be taken now.
    pub ready: usize,
    /// Unclaimed Pods still starting.
    pub starting: usize,
}

/// One cluster's part of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterListing {
    pub name: String,
    /// Whether it could be read; when not, its sandboxes are missing from the list.
    pub reachable: bool,
    /// Sandboxes listed from it.
    pub sandboxes: usize,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Every cluster's sandboxes, and how each cluster answered.
pub struct Listing {
    pub sandboxes: Vec<Arc<Listed>>,
    pub clusters: Vec<ClusterListing>,
}

/// Whose sandboxes a request sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The admin key: every tenant's.
    All,
    Tenant(String),
}

impl Scope {
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(t) => t == tenant,
        }
    }
}

/// The clusters of the service and the admission of new sandboxes. Cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    clusters: Arc<[Cluster]>,
    admission: Admission,
    /// The registry every cluster's metrics go to (unscoped: the HTTP families).
    metrics: Metrics,
    /// Quota locks in the first cluster (none in tests that need no cluster).
    arbiter: Option<Arc<cluster::Arbiter>>,
}

impl Fleet {
    /// A fleet of at least one cluster.
    pub fn new(clusters: Vec<Cluster>, admission: Admission, metrics: Metrics) -> Fleet {
        assert!(!clusters.is_empty(), "a fleet has at least one cluster");
        Fleet {
            clusters: clusters.into(),
            admission,
            metrics,
            arbiter: None,
        }
    }

    /// Takes quota locks through this arbiter, so that limits hold across replicas.
    pub fn with_arbiter(mut self, arbiter: cluster::Arbiter) -> Fleet {
        self.arbiter = Some(Arc::new(arbiter));
        self
    }

    /// A fleet of one cluster that takes every sandbox, open to anyone (tests and benchmarks).
    pub fn single(cluster: Cluster) -> Fleet {
        let metrics = cluster.metrics().clone();
        let admission = Admission::open(None, metrics.clone());
        Fleet::new(vec![cluster], admission, metrics)
    }

    /// The metrics registry, for `/metrics` and the request log.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// Every sandbox the caches hold, as quotas count it.
    pub fn held(&self) -> Vec<(String, Held)> {
        self.clusters.iter().flat_map(Cluster::held).collect()
    }

    /// What the caches hold for admission: `tenant`'s sandboxes and the count of all.
    pub fn snapshot(&self, tenant: &str) -> Snapshot {
        let mut seen = Snapshot::default();
        for cluster in self.clusters.iter() {
            cluster.tally(tenant, &mut seen);
        }
        seen
    }

    /// Whether a cache shows the sandbox `id`.
    pub fn holds_id(&self, id: &str) -> bool {
        let Ok(id) = SandboxId::parse(id) else {
            return false;
        };
        self.cached_holder(&id).is_some()
    }

    /// Updates the per-tenant sandbox gauge from the caches.
    pub fn refresh_tenant_gauge(&self) {
        let mut counts: BTreeMap<String, usize> = self
            .admission
            .tenants()
            .tenants
            .iter()
            .map(|t| (t.name.clone(), 0))
            .collect();
        for (_, held) in self.held() {
            *counts.entry(held.tenant).or_default() += 1;
        }
        self.metrics.tenant_sandboxes(counts);
    }

    pub fn clusters(&self) -> &[Cluster] {
        &self.clusters
    }

    fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|s| s.name() == name)
    }

    /// The cluster whose cache holds the sandbox (also a stale cache of an unreachable
    /// cluster: where a sandbox lives does not change while its cluster is out of reach).
    fn cached_holder(&self, id: &SandboxId) -> Option<&Cluster> {
        self.clusters.iter().find(|s| s.holds(id))
    }

    /// Every cluster as a create sees it: placement's state and whether it holds `id` (from
    /// its cache; with `confirm`, a reachable cluster whose cache is not synced is asked).
    async fn views(&self, id: &SandboxId, confirm: bool) -> Vec<plan::ClusterView<'_>> {
        let holds = join_all(self.clusters.iter().map(|c| async move {
            c.holds(id)
                || (confirm
                    && c.unreachable().is_none()
                    && c.count().is_none()
                    && c.exists(id).await)
        }))
        .await;
        self.clusters
            .iter()
            .zip(holds)
            .map(|(c, holds)| plan::ClusterView {
                placement: state(c),
                labels: c.labels(),
                holds,
                suspended: c.holds_suspended(id),
            })
            .collect()
    }

    /// Creates the sandbox, or returns it from the cluster that already holds it, as
    /// [`plan::plan`] decides from a snapshot of the clusters and the tenant's quota. A create
    /// a limit governs runs under that limit's lock across replicas.
    pub async fn create(
        &self,
        request: &SandboxRequest,
        size: &str,
        target: &Target,
        tenant: &Tenant,
    ) -> Result<Provisioned> {
        self.create_or_resume(request, size, target, tenant, ResumeTrigger::Create)
            .await
    }

    /// [`Fleet::create`]; a suspended sandbox is resumed, counted under `trigger`.
    async fn create_or_resume(
        &self,
        request: &SandboxRequest,
        size: &str,
        target: &Target,
        tenant: &Tenant,
        trigger: ResumeTrigger,
    ) -> Result<Provisioned> {
        let (cpu, memory) = cluster::cpu_and_memory(&request.resources.limits);
        let ask = Ask {
            tenant: &tenant.name,
            user: request.user.as_str(),
            cpu,
            memory,
        };
        let facts = plan::Request {
            id: request.id.as_str(),
            thread: request.thread.as_str(),
            size,
            ask: ask.clone(),
            target,
        };
        // The caller's mistakes are answered before any Kubernetes call.
        let cached = self.views(&request.id, false).await;
        plan::candidates(&facts, tenant, &cached)?;
        // A suspended sandbox is made again: the quota's lock applies as to a new one.
        let exists = cached.iter().any(|v| v.holds && !v.suspended);
        let lock = match (
            &self.arbiter,
            crate::admission::lock_name(tenant, self.admission.max_total()),
        ) {
            (Some(arbiter), Some(name)) if !exists => Some(arbiter.acquire(&name).await?),
            _ => None,
        };
        let unseen = match &lock {
            Some(held) => self.unseen(&held.last_created).await,
            None => Vec::new(),
        };
        let views = self.views(&request.id, true).await;
        let decided = self.admission.decide(
            tenant,
            (request.id.as_str(), &ask),
            |name| {
                let mut seen = self.snapshot(name);
                // A suspended sandbox being resumed is counted as the one it asks for.
                let before = seen.tenant.len();
                seen.tenant.retain(|(id, _)| id != request.id.as_str());
                seen.total -= before - seen.tenant.len();
                seen.total += unseen.len();
                seen.tenant
                    .extend(unseen.into_iter().filter(|(_, h)| h.tenant == name));
                seen
            },
            |id| self.holds_id(id),
            |quota| plan::plan(&facts, tenant, &views, Some(quota)),
            plan::Plan::is_new,
        );
        if let Err(FleetError::Quota(refusal)) = &decided {
            self.admission.refused(&tenant.name, refusal.limit);
        }
        let result = match decided {
            Ok(plan::Plan::Existing(name) | plan::Plan::Place(name)) => {
                let chosen = self
                    .cluster(&name)
                    .expect("planned among the fleet's own clusters");
                chosen.create(request).await.map_err(FleetError::from)
            }
            Ok(plan::Plan::Resume(name)) => {
                let chosen = self
                    .cluster(&name)
                    .expect("planned among the fleet's own clusters");
                chosen
                    .resume_for(request, trigger)
                    .await
                    .map_err(FleetError::from)
            }
            Err(e) => Err(e),
        };
        let created = result.as_ref().is_ok_and(|p| p.created);
        if let (Some(arbiter), Some(held)) = (&self.arbiter, lock) {
            let made = result
                .as_ref()
                .ok()
                .filter(|p| p.created)
                .map(|p| (p.sandbox.cluster.as_str(), p.pod_name.as_str()));
            arbiter.release(held, made).await;
        }
        self.admission
            .settled(&tenant.name, request.id.as_str(), created);
        result
    }

    /// The pods earlier lock holders created that our caches do not show yet, read from their
    /// apiservers (a pod deleted since counts for nothing either way).
    async fn unseen(&self, last_created: &[(String, String)]) -> Vec<(String, Held)> {
        let mut found = Vec::new();
        for (cluster, pod_name) in last_created {
            if let Some(cluster) = self.cluster(cluster) {
                found.extend(cluster.read_held(pod_name).await.ok().flatten());
            }
        }
        found
    }

    /// One sandbox of the scope, from whichever cluster holds it; another tenant's is not
    /// found.
    pub async fn get(&self, id: &SandboxId, scope: &Scope) -> Result<Sandbox> {
        let sandbox = if let Some(seat) = self.cached_holder(id) {
            reachable(seat, "the sandbox is there")?;
            seat.get(id).await?
        } else {
            self.find(id).await?.1
        };
        visible(sandbox, scope)
    }

    /// A sandbox no cache holds: asked of every reachable cluster (each confirms a miss with
    /// its apiserver). Not found anywhere is 404 only when every cluster could answer.
    async fn find(&self, id: &SandboxId) -> Result<(&Cluster, Sandbox)> {
        let found = self
            .ask_every_cluster(|seat| async move {
                match seat.get(id).await {
                    Ok(sandbox) => Ok(Some(sandbox)),
                    Err(cluster::Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        found.ok_or_else(|| cluster::Error::NotFound(id.to_string()).into())
    }

    /// Asks every cluster at once; the first that has an answer gives it. None only when every
    /// cluster answered that it has none: an unreachable cluster, or any failure, is an error
    /// then, never "none".
    async fn ask_every_cluster<'a, T, F, Fut>(&'a self, ask: F) -> Result<Option<(&'a Cluster, T)>>
    where
        F: Fn(&'a Cluster) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let answers = join_all(self.clusters.iter().map(|s| {
            let asked = ask(s);
            async move {
                reachable(s, "the sandbox may be there")?;
                Ok::<_, FleetError>(asked.await?.map(|found| (s, found)))
            }
        }))
        .await;
        let mut failure = None;
        for answer in answers {
            match answer {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        failure.map_or(Ok(None), Err)
    }

    /// Whether the sandbox's Pod exists in any cluster (the Service is not looked at), and
    /// its UID. Another tenant's reads as absent; absent is said only when every cluster that
    /// may hold it answered.
    pub async fn presence(&self, id: &SandboxId, scope: &Scope) -> Result<Option<PodPresence>> {
        let found = match self.cached_holder(id) {
            Some(seat) => {
                reachable(seat, "the sandbox is there")?;
                seat.presence(id).await?
            }
            None => self
                .ask_every_cluster(|seat| async move { Ok(seat.presence(id).await?) })
                .await?
                .map(|(_, found)| found),
        };
        Ok(found.filter(|pod| scope.allows(&pod.tenant)))
    }

    /// The cluster that holds the sandbox (its cache, or else asked of every cluster), and
    /// whether it is visible in `scope`.
    async fn holder(&self, id: &SandboxId, scope: &Scope) -> Result<&Cluster> {
        let seat = match self.cached_holder(id) {
            Some(seat) => {
                reachable(seat, "the sandbox is there")?;
                visible(seat.get(id).await?, scope)?;
                seat
            }
            None => {
                let (seat, sandbox) = self.find(id).await?;
                visible(sandbox, scope)?;
                seat
            }
        };
        Ok(seat)
    }

    /// Suspends the sandbox of the scope (see `Cluster::suspend`).
    pub async fn suspend(&self, id: &SandboxId, scope: &Scope) -> Result<Sandbox> {
        let seat = self.holder(id, scope).await?;
        Ok(seat.suspend(id, cluster::SuspendTrigger::Api).await?)
    }

    /// Resumes the suspended sandbox of the scope in its cluster, within its tenant's quota
    /// (an awake one is returned as it is).
    pub async fn resume(
        &self,
        id: &SandboxId,
        scope: &Scope,
        trigger: ResumeTrigger,
    ) -> Result<Provisioned> {
        let seat = self.holder(id, scope).await?;
        let Some(record) = seat.suspended_record(id).await? else {
            return Ok(Provisioned {
                sandbox: seat.get(id).await?,
                created: false,
                pod_name: String::new(),
            });
        };
        let request = record
            .request
            .as_deref()
            .ok_or_else(|| cluster::Error::NotSuspendable(id.to_string()))?;
        let tenants = self.admission.tenants();
        let tenant = match tenants.get(&request.tenant) {
            Some(tenant) => tenant.clone(),
            // A tenant removed from the file since: its sandbox resumes without limits, as
            // its live sandboxes keep running.
            None => Arc::new(Tenant::unlimited(&request.tenant, None)),
        };
        // Creates record the size they were admitted under.
        let size = request.size.clone().unwrap_or_else(|| "default".into());
        let target = Target::Named(seat.name().to_string());
        self.create_or_resume(request, &size, &target, &tenant, trigger)
            .await
    }

    /// Counts as activity and returns the sandbox with its new deadline.
    pub async fn keepalive(&self, id: &SandboxId, scope: &Scope) -> Result<Sandbox> {
        self.get(id, scope).await
    }

    /// Waits for the sandbox in the cluster that holds it (see `Cluster::wait_ready`).
    pub async fn wait_ready(
        &self,
        id: &SandboxId,
        limit: Duration,
        scope: &Scope,
    ) -> Result<Sandbox> {
        let seat = self.holder(id, scope).await?;
        visible(seat.wait_ready(id, limit).await?, scope)
    }

    /// Deletes the sandbox of the scope wherever it is (another tenant's is not found).
    /// Returns whether anything existed. With no cache holding it, it is deleted in every
    /// cluster, which needs every cluster reachable.
    pub async fn delete(&self, id: &SandboxId, scope: &Scope) -> Result<bool> {
        let deleted = self.delete_in_scope(id, scope).await;
        if deleted.is_ok() {
            self.admission.forget(id.as_str());
        }
        deleted
    }

    async fn delete_in_scope(&self, id: &SandboxId, scope: &Scope) -> Result<bool> {
        if let Some(seat) = self.cached_holder(id) {
            reachable(seat, "the sandbox is there")?;
            if let Some(tenant) = seat.cached_tenant(id) {
                if !scope.allows(&tenant) {
                    return Err(cluster::Error::NotFound(id.to_string()).into());
                }
            }
            return Ok(seat.delete(id).await?);
        }
        match self.find(id).await {
            Ok((seat, sandbox)) => {
                visible(sandbox, scope)?;
                return Ok(seat.delete(id).await?);
            }
            Err(FleetError::Provision(cluster::Error::NotFound(_))) => {}
            Err(e) => return Err(e),
        }
        for seat in self.clusters.iter() {
            reachable(seat, "the sandbox may be there")?;
        }
        let results = join_all(self.clusters.iter().map(|s| s.delete(id))).await;
        let mut existed = false;
        for result in results {
            existed |= result?;
        }
        Ok(existed)
    }

    /// Every cluster's sandboxes of the scope, sorted by id. A cluster that cannot be read is
    /// reported as such instead of failing the list, unless no cluster can be read at all.
    pub async fn list(&self, scope: &Scope) -> Result<Listing> {
        let answers = join_all(self.clusters.iter().map(|s| async move {
            match reachable(s, "its sandboxes are not listed") {
                Ok(()) => s.list().await.map_err(FleetError::from),
                Err(e) => Err(e),
            }
        }))
        .await;
        let mut sandboxes = Vec::new();
        let mut clusters = Vec::new();
        let mut failure = None;
        for (seat, answer) in self.clusters.iter().zip(answers) {
            let name = seat.name().to_string();
            match answer {
                Ok(mut listed) => {
                    listed.retain(|s| scope.allows(&s.tenant));
                    clusters.push(ClusterListing {
                        name,
                        reachable: true,
                        sandboxes: listed.len(),
                        error: None,
                    });
                    sandboxes.extend(listed);
                }
                Err(e) => {
                    // An unreachable cluster was logged once by its probe; a LIST polled
                    // through a long outage must not repeat that every time.
                    if !matches!(e, FleetError::Unreachable { .. }) {
                        tracing::warn!(cluster = %name, error = %e, "cannot list a cluster's \
                            sandboxes; they are missing from the answer");
                    }
                    clusters.push(ClusterListing {
                        name,
                        reachable: false,
                        sandboxes: 0,
                        error: Some(e.to_string()),
                    });
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure.filter(|_| clusters.iter().all(|c| !c.reachable)) {
            return Err(e);
        }
        // Each cluster's list is sorted already.
        if self.clusters.len() > 1 {
            sandboxes.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        }
        Ok(Listing {
            sandboxes,
            clusters,
        })
    }

    /// Updates every cluster's sandboxes-by-status gauge from its cache.
    pub fn refresh_status_gauges(&self) {
        for seat in self.clusters.iter() {
            seat.refresh_status_gauge();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::ThreadId;

    /// A cluster's name, weight, capacity and labels.
    type ClusterSpec<'a> = (&'a str, u32, Option<usize>, &'a [(&'a str, &'a str)]);

    /// Clusters whose Kubernetes calls go nowhere (a closed port) and whose caches never sync.
    fn fleet(clusters: &[ClusterSpec]) -> Fleet {
        let config = crate::config::from_flags(&[]);
        let metrics = Metrics::new();
        let clusters = clusters
            .iter()
            .map(|(name, weight, max, labels)| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Cluster::nowhere(name, &config, &metrics).with_placement(*weight, *max, labels)
            })
            .collect();
        Fleet::new(clusters, Admission::open(None, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn nothing_is_created_when_no_cluster_can_take_it() {
        // b drains; a has a capacity but its cache never synced, so its count is unknown.
        let f = fleet(&[("a", 1, Some(5), &[]), ("b", 0, None, &[])]);
        let id = crate::sandbox::SandboxId::parse("s-1").unwrap();
        let request = SandboxRequest::new(id.clone(), ThreadId::of_sandbox(&id));
        let anyone = Tenant::unlimited("default", None);
        match f.create(&request, "default", &Target::Any, &anyone).await {
            Err(FleetError::NoCapacity(skipped)) => {
                let reasons: Vec<(String, String)> = skipped
                    .into_iter()
                    .map(|(name, why)| (name, why.to_string()))
                    .collect();
                assert_eq!(reasons.len(), 2, "{reasons:?}");
                assert!(reasons.contains(&("b".into(), "draining (weight 0)".into())));
                assert!(
                    reasons
                        .iter()
                        .any(|(name, why)| name == "a"
                            && why.contains("its sandbox count is unknown"))
                );
            }
            other => panic!("expected NoCapacity, got {:?}", other.err()),
        }
    }
}
