//! The sandbox rules the API promises, on top of the cluster operations: idempotent creates,
//! no half-made sandboxes, repair of a sandbox missing one of its objects, reads from the
//! watch cache, and the background decisions (expiry, sweep, baseline policy).
//!
//! ```text
//!   api ──► Provisioner ──► create / read / delete        (one file each)
//!               │      └──► expiry / sweep / baseline       (plan: pure; apply: thin)
//!               ├── Cluster  (timed, retried, counted Kubernetes calls)
//!               ├── Cache    (watched Pods, Services, NetworkPolicies)
//!               └── Memory   (what this process remembers per sandbox)
//! ```

mod baseline;
mod create;
mod delete;
pub mod expiry;
mod memory;
mod read;
mod startup;
pub mod sweep;
mod views;

use std::sync::{atomic::AtomicBool, Arc};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

use crate::k8s::read as objects;
use crate::k8s::status::status_of;
pub use memory::Memory;
pub use read::PodPresence;

use crate::{
    config::Lifecycle,
    k8s::refusals::Refusals,
    k8s::{cache::CacheSummary, calls, manifests},
    member::Member,
    metrics::Metrics,
    sandbox::{InvalidId, Sandbox, Timers},
    spec::SandboxSpec,
};

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
    #[error("sandbox {id:?} already exists for user {existing:?}, but this request names user {requested:?}; use another sandbox_id, or delete the existing sandbox first")]
    UserConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error("sandbox {id:?} exists with a shell-session capacity of {existing}{default}, below the {requested} this request asks for; its pod was left alone: delete the sandbox and create it again to get the larger capacity", default = if *.existing_is_default { " (the image's default)" } else { "" })]
    ShellCapacity {
        id: String,
        existing: u32,
        existing_is_default: bool,
        requested: u32,
    },
    #[error("sandbox {id:?} exists with skills at {existing}, but this request names {requested} (skills_container_path); its pod was left alone: delete the sandbox and create it again to move its skills")]
    SkillsPathConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error("sandbox {id:?} exists {existing} the Lark CLI broker sidecar, but this request asks {requested} it (provision_lark_cli_broker); its pod was left alone: delete the sandbox and create it again", existing = if *.existing_has_broker { "with" } else { "without" }, requested = if *.existing_has_broker { "without" } else { "for" })]
    LarkConflict {
        id: String,
        existing_has_broker: bool,
    },
    #[error("the request asks for the Lark CLI broker (provision_lark_cli_broker), but this provisioner has no broker image: set LARK_CLI_BROKER_IMAGE on the provisioner, or create the sandbox without the broker")]
    LarkBrokerUnavailable,
    #[error("the sandbox id {0:?} is taken; choose another sandbox_id")]
    Taken(String),
    #[error("sandbox {0:?} is being deleted; retry in a moment")]
    Terminating(String),
    #[error("cannot create {kind} {name}: another {kind} of that name kept reappearing; retry in a moment")]
    KeptReappearing { kind: String, name: String },
    #[error(transparent)]
    Kubernetes(#[from] calls::Error),
}

impl Error {
    /// A refused permission: already logged (rate-limited) and counted where it happened.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Kubernetes(e) if e.is_permission_denied())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The sandbox service: one per process, shared by all requests. Cheap to clone.
#[derive(Clone)]
pub struct Provisioner {
    member: Member,
    spec: SandboxSpec,
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

/// Activity writes in flight at once, per cluster.
const ACTIVITY_WRITES_AT_ONCE: usize = 8;

/// A created or found sandbox, and whether this call created it.
pub struct Provisioned {
    pub sandbox: Sandbox,
    pub created: bool,
}

impl Provisioner {
    pub fn new(member: Member, spec: SandboxSpec, lifecycle: Lifecycle, metrics: Metrics) -> Self {
        Provisioner {
            member,
            spec,
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
    pub fn cache_summary(&self) -> CacheSummary {
        self.member.cache.state().summary()
    }

    /// The cluster this provisioner works in.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The permissions the apiserver refused and that have not worked since.
    pub fn refusals(&self) -> &Refusals {
        self.member.refusals()
    }

    pub fn namespace(&self) -> &str {
        self.member.namespace()
    }

    /// Updates the sandboxes-by-status gauge from the cache (no apiserver call).
    pub fn refresh_status_gauge(&self) {
        self.metrics
            .cache_synced(self.member.cache.state().usable());
        if self.member.cache.state().usable() {
            let phases = self
                .member
                .cache
                .pods()
                .iter()
                .map(|p| status_of(p).phase)
                .collect::<Vec<_>>();
            self.metrics.sandboxes_by_status(phases);
        }
    }

    /// The timers of a new sandbox: the request's, within the configured ceilings.
    /// The request's extra mounts, checked against DeerFlow's rules and the base directory.
    pub fn check_extra_mounts(
        &self,
        requested: &[crate::sandbox::mounts::ExtraMountRequest],
        skills_path: Option<&str>,
    ) -> Result<Vec<crate::sandbox::ExtraMount>, crate::sandbox::InvalidMount> {
        crate::sandbox::mounts::check_extra_mounts(requested, &self.spec.host_base, skills_path)
    }

    pub fn timers_for(&self, ttl_seconds: Option<u32>, idle_seconds: Option<u32>) -> Timers {
        self.lifecycle.timers.for_request(ttl_seconds, idle_seconds)
    }

    /// Notes activity on a sandbox: kept in memory, and written to the pod at most once per
    /// SANDBOX_ACTIVITY_PERSIST_INTERVAL (in the background, so a GET costs no write).
    fn touch(&self, id: &str, pod: &Pod) {
        let now = Timestamp::now();
        // Creation counts as written activity: a create costs no extra write.
        let written = objects::activity_of(pod)
            .or_else(|| objects::created_of(pod))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        if !self
            .memory
            .touch(id, now, written, self.lifecycle.activity_persist_interval)
        {
            return;
        }
        let cluster = self.member.calls.clone();
        let name = pod.metadata.name.clone().unwrap_or_default();
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
                tracing::debug!(pod = %name, error = %e, "recording activity failed; it stays in memory");
            }
        });
    }

    /// Where the idle timer starts: the latest known activity (in memory here, written on the
    /// pod, or the creation), plus the grace that covers activity other replicas saw but have
    /// not written yet. The published `expires_at` and the reaper both use it, so a sandbox
    /// goes when its answer said it would.
    fn idle_since(&self, id: &str, pod: &Pod) -> Timestamp {
        self.idle_since_created(id, pod, objects::created_of(pod))
    }

    /// [`Provisioner::idle_since`] for a caller that has parsed the creation already.
    fn idle_since_created(&self, id: &str, pod: &Pod, created: Option<Timestamp>) -> Timestamp {
        let last = [
            self.memory.last_activity(id),
            objects::activity_of(pod),
            created,
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_else(Timestamp::now);
        last + self.lifecycle.idle_grace()
    }
}
