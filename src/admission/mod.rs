//! Who may call the API and what they may create: tenants (from PROVISIONER_TENANTS, reloaded
//! when the file changes) and quota admission before any Kubernetes write.
//!
//! ```text
//!   request ─► identify (key digest → tenant | admin) ─► handler ─► Fleet::create
//!                                                              └─► Admission::admit
//!                                                                   (caches + creates in flight)
//! ```
//!
//! Counting is exact within one process: admissions take one lock, and a create admitted
//! here counts until the watch cache shows its pod. Across replicas the fleet runs governed
//! creates under a quota lock in the apiserver (`fleet::arbiter`), so the caches plus the pod
//! the previous holder names are the whole truth.

pub mod quota;
pub mod tenants;

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use tokio::sync::watch;

pub use quota::{Ask, Held, Refusal, Usage};

pub use tenants::{hex_digest, Caller, Known, Limits, Tenant, Tenants, DEFAULT_TENANT};

use crate::metrics::Metrics;

/// How often the tenant file is checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// How long an admitted create counts from memory at most (its pod normally shows in the
/// cache within milliseconds).
const PENDING_FOR: Duration = Duration::from_secs(60);

/// Drops the creates that left the last minute's window.
fn drop_older_than_a_minute(creates: &mut VecDeque<Instant>, now: Instant) {
    while creates
        .front()
        .is_some_and(|t| now - *t >= Duration::from_secs(60))
    {
        creates.pop_front();
    }
}

/// The quota lock a create by `tenant` takes across replicas: the deployment's with
/// SANDBOX_MAX_TOTAL, else the tenant's when it has a limit that counts sandboxes, else none.
pub fn lock_name(tenant: &Tenant, max_total: Option<usize>) -> Option<String> {
    use crate::spec::keys::QUOTA_LOCK;
    if max_total.is_some() {
        Some(QUOTA_LOCK.into())
    } else if tenant.limits.counts_sandboxes() {
        Some(format!("{QUOTA_LOCK}-{}", tenant.name))
    } else {
        None
    }
}

/// What quotas see at the moment of a create.
#[derive(Debug, Clone, Default)]
pub struct QuotaView {
    /// The tenant's use: the caches, creates in flight here, and pods a previous lock holder
    /// created that the caches do not show yet.
    pub usage: Usage,
    /// Every tenant's sandboxes together, for SANDBOX_MAX_TOTAL.
    pub total: usize,
    pub max_total: Option<usize>,
    /// How long ago the oldest of the last minute's creates was (for the rate's Retry-After).
    pub oldest_create: Option<Duration>,
}

/// What the caches hold, as admission needs it: the tenant's sandboxes, and how many
/// sandboxes there are in all.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub tenant: Vec<(String, Held)>,
    pub total: usize,
}

/// A create admitted here whose pod the caches may not show yet.
struct Pending {
    held: Held,
    since: Instant,
}

#[derive(Default)]
struct State {
    pending: HashMap<String, Pending>,
    /// When each tenant's creates of the last minute were admitted.
    creates: HashMap<String, VecDeque<Instant>>,
}

/// Tenants and quotas. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    tenants: Arc<RwLock<Arc<Tenants>>>,
    max_total: Option<usize>,
    state: Arc<Mutex<State>>,
    metrics: Metrics,
}

/// Where the tenants come from, for the reload.
pub struct TenantFile {
    pub path: PathBuf,
    /// Added to the file's tenants: PROVISIONER_API_KEY's tenant `default`, if set.
    pub extra: Option<Arc<Tenant>>,
    pub known_sizes: Vec<String>,
    pub known_clusters: Vec<String>,
}

impl TenantFile {
    /// Reads and checks the file.
    pub fn load(&self) -> Result<Tenants, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        self.parse(&text)
    }

    fn parse(&self, text: &str) -> Result<Tenants, String> {
        let known = Known {
            sizes: self.known_sizes.iter().map(String::as_str).collect(),
            clusters: self.known_clusters.iter().map(String::as_str).collect(),
        };
        let mut tenants = tenants::parse(text, &known)?;
        if let Some(extra) = &self.extra {
            if tenants.get(&extra.name).is_some() {
                return Err(format!(
                    "defines a tenant {:?} while PROVISIONER_API_KEY is set, which \
                    is that tenant's key: rename the tenant, or move the key into the file (its \
                    digest from `sandbox-provisioner hash-key`) and unset \
                    PROVISIONER_API_KEY",
                    extra.name
                ));
            }
            tenants.tenants.push(extra.clone());
        }
        Ok(tenants)
    }
}

impl Admission {
    pub fn new(tenants: Tenants, max_total: Option<usize>, metrics: Metrics) -> Admission {
        Admission {
            tenants: Arc::new(RwLock::new(Arc::new(tenants))),
            max_total,
            state: Arc::default(),
            metrics,
        }
    }

    /// Tenants for an API without keys: everyone is tenant `default`.
    pub fn open(max_total: Option<usize>, metrics: Metrics) -> Admission {
        Admission::new(Tenants::anyone(), max_total, metrics)
    }

    pub fn tenants(&self) -> Arc<Tenants> {
        self.tenants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The caller a key belongs to.
    pub fn identify(&self, presented: &[u8]) -> Option<Caller> {
        self.tenants().identify(presented)
    }

    /// The caller of an API without keys.
    pub fn anyone(&self) -> Caller {
        let tenants = self.tenants();
        Caller::Tenant(
            tenants
                .get(DEFAULT_TENANT)
                .cloned()
                .unwrap_or_else(|| Arc::new(Tenant::unlimited(DEFAULT_TENANT, None))),
        )
    }

    /// Checks the file every [`RELOAD_INTERVAL`] until `shutdown`; a changed file that is valid
    /// replaces the tenants, an invalid one is logged (once per content) and ignored.
    pub fn watch_file(&self, file: TenantFile, mut shutdown: watch::Receiver<bool>) {
        let (tenants, metrics) = (self.tenants.clone(), self.metrics.clone());
        tokio::spawn(async move {
            let mut last = std::fs::read_to_string(&file.path).ok();
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let text = match std::fs::read_to_string(&file.path) {
                    Ok(text) => text,
                    Err(e) => {
                        if last.is_some() {
                            tracing::warn!(file = %file.path.display(), error = %e,
                                "PROVISIONER_TENANTS cannot be read; the tenants stay as they \
                                    were");
                            last = None;
                        }
                        metrics.tenant_file_checked("unreadable");
                        continue;
                    }
                };
                if last.as_deref() == Some(text.as_str()) {
                    metrics.tenant_file_checked("unchanged");
                    continue;
                }
                match file.parse(&text) {
                    Ok(new) => {
                        let names: Vec<String> =
                            new.tenants.iter().map(|t| t.name.clone()).collect();
                        *tenants.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                        tracing::info!(file = %file.path.display(), tenants = ?names,
                            "PROVISIONER_TENANTS reloaded");
                        metrics.tenant_file_checked("applied");
                    }
                    Err(problem) => {
                        tracing::warn!(file = %file.path.display(), %problem,
                            "PROVISIONER_TENANTS changed but is invalid; the tenants stay as they \
                                were until it is fixed");
                        metrics.tenant_file_checked("invalid");
                    }
                }
                last = Some(text);
            }
        });
    }

    /// Decides a create for `tenant` under the admission lock, so that concurrent creates in
    /// this process see each other: `decide` gets the quota's view (what the caches hold, from
    /// `snapshot`, asked only when a limit needs counts; plus the creates admitted here that
    /// the caches, asked through `cached`, do not show yet) and answers. When its answer
    /// admits a new sandbox (`is_new`), that create counts from then on, until the caches show
    /// it or [`Admission::settled`] says it failed.
    pub fn decide<T, E>(
        &self,
        tenant: &Tenant,
        (id, ask): (&str, &Ask),
        snapshot: impl FnOnce(&str) -> Snapshot,
        cached: impl Fn(&str) -> bool,
        decide: impl FnOnce(&QuotaView) -> Result<T, E>,
        is_new: impl Fn(&T) -> bool,
    ) -> Result<T, E> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let counts = self.max_total.is_some() || tenant.limits.counts_sandboxes();
        let seen = if counts {
            snapshot(&tenant.name)
        } else {
            Snapshot::default()
        };
        state
            .pending
            .retain(|id, p| now - p.since < PENDING_FOR && !cached(id));
        let creates = state.creates.entry(tenant.name.clone()).or_default();
        drop_older_than_a_minute(creates, now);
        let creates_last_minute = creates.len();
        let oldest_create = creates.front().map(|t| now - *t);
        let mut all: Vec<Held> = seen.tenant.into_iter().map(|(_, h)| h).collect();
        all.extend(state.pending.values().map(|p| p.held.clone()));
        let view = QuotaView {
            usage: quota::usage(&tenant.name, &all, creates_last_minute),
            total: seen.total + state.pending.len(),
            max_total: self.max_total,
            oldest_create,
        };
        let decided = decide(&view)?;
        if is_new(&decided) {
            state
                .creates
                .entry(tenant.name.clone())
                .or_default()
                .push_back(now);
            state.pending.insert(
                id.to_string(),
                Pending {
                    held: Held {
                        tenant: ask.tenant.to_string(),
                        user: ask.user.to_string(),
                        cpu: ask.cpu,
                        memory: ask.memory,
                    },
                    since: now,
                },
            );
        }
        Ok(decided)
    }

    /// Counts a refusal by `limit` of `tenant`'s quota.
    pub fn refused(&self, tenant: &str, limit: &'static str) {
        self.metrics.quota_refused(tenant, limit);
    }

    /// After an admitted create: one that made nothing no longer counts (nor against the
    /// rate), one that made its sandbox counts from memory until the caches show it.
    pub fn settled(&self, tenant: &str, id: &str, created: bool) {
        if created {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = state.pending.remove(id) {
            if let Some(creates) = state.creates.get_mut(tenant) {
                if let Some(i) = creates.iter().rposition(|t| *t == p.since) {
                    creates.remove(i);
                }
            }
        }
    }

    /// A deleted sandbox no longer counts, even before the caches show the deletion.
    pub fn forget(&self, id: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .remove(id);
    }

    /// A tenant's use now, as admission counts it.
    pub fn usage(&self, tenant: &str, seen: Snapshot, cached: impl Fn(&str) -> bool) -> Usage {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut all: Vec<Held> = seen.tenant.into_iter().map(|(_, h)| h).collect();
        all.extend(
            state
                .pending
                .iter()
                .filter(|(id, p)| now - p.since < PENDING_FOR && !cached(id))
                .map(|(_, p)| p.held.clone()),
        );
        let creates = state.creates.entry(tenant.to_string()).or_default();
        drop_older_than_a_minute(creates, now);
        quota::usage(tenant, &all, creates.len())
    }

    pub fn max_total(&self) -> Option<usize> {
        self.max_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extra: Option<&str>) -> TenantFile {
        TenantFile {
            path: "/etc/tenants.yaml".into(),
            extra: extra.map(|key| Arc::new(Tenant::unlimited(DEFAULT_TENANT, Some(key)))),
            known_sizes: vec!["default".into()],
            known_clusters: vec!["default".into()],
        }
    }

    #[test]
    fn the_api_key_adds_tenant_default_unless_the_file_has_one() {
        let text = format!(
            "tenants: [{{name: team-a, api_key_sha256: {}}}]",
            hex_digest("key-a-0123456789")
        );
        let tenants = file(Some("the-old-key-0123456789")).parse(&text).unwrap();
        assert!(matches!(tenants.identify(b"the-old-key-0123456789"),
                Some(Caller::Tenant(t)) if t.name == "default"));
        assert!(matches!(tenants.identify(b"key-a-0123456789"),
                Some(Caller::Tenant(t)) if t.name == "team-a"));
        let clash = format!(
            "tenants: [{{name: default, api_key_sha256: {}}}]",
            hex_digest("key-a-0123456789")
        );
        let error = file(Some("the-old-key-0123456789"))
            .parse(&clash)
            .unwrap_err();
        assert!(
            error.contains("while PROVISIONER_API_KEY is set"),
            "{error}"
        );
        assert!(file(None).parse(&clash).is_ok());
    }

    #[test]
    fn governed_creates_take_a_lock() {
        let mut t = Tenant::unlimited("team-a", None);
        assert_eq!(lock_name(&t, None), None, "no limit that counts sandboxes");
        assert_eq!(
            lock_name(&t, Some(10)).as_deref(),
            Some("sandbox-provisioner-quota")
        );
        t.limits.max_creates_per_minute = Some(5);
        assert_eq!(lock_name(&t, None), None, "the rate is counted per replica");
        t.limits.max_sandboxes_per_user = Some(2);
        assert_eq!(
            lock_name(&t, None).as_deref(),
            Some("sandbox-provisioner-quota-team-a")
        );
    }

    #[test]
    fn an_admitted_create_counts_until_settled_and_a_failed_one_gives_its_slot_back() {
        let admission = Admission::new(Tenants::anyone(), None, Metrics::new());
        let mut tenant = Tenant::unlimited(DEFAULT_TENANT, None);
        tenant.limits.max_sandboxes = Some(1);
        tenant.limits.max_creates_per_minute = Some(2);
        let ask = Ask {
            tenant: DEFAULT_TENANT,
            user: "u",
            cpu: 1.0,
            memory: 1.0,
        };
        let nothing = |_: &str| Snapshot::default();
        let unseen = |_: &str| false;
        let admit = |id: &'static str| {
            admission.decide(
                &tenant,
                (id, &ask),
                nothing,
                unseen,
                |view| {
                    let limits = &tenant.limits;
                    quota::admit(
                        limits,
                        None,
                        &view.usage,
                        view.total,
                        &ask,
                        view.oldest_create,
                    )
                },
                |_| true,
            )
        };
        assert!(admit("s-1").is_ok());
        // Not in the caches yet, but in flight here: the limit holds.
        let refused = admit("s-2").unwrap_err();
        assert_eq!(refused.limit, "max_sandboxes");
        // The first create failed: its slot and its place in the rate come back.
        admission.settled(DEFAULT_TENANT, "s-1", false);
        assert!(admit("s-2").is_ok());
        admission.settled(DEFAULT_TENANT, "s-2", true);
        let usage =
            |seen, cached: &dyn Fn(&str) -> bool| admission.usage(DEFAULT_TENANT, seen, cached);
        assert_eq!(usage(Snapshot::default(), &unseen).sandboxes, 1);
        // Once the caches show it, it counts from there (once).
        let seen = Snapshot {
            tenant: vec![(
                "s-2".to_string(),
                Held {
                    tenant: DEFAULT_TENANT.into(),
                    user: "u".into(),
                    cpu: 1.0,
                    memory: 1.0,
                },
            )],
            total: 1,
        };
        assert_eq!(usage(seen, &|id| id == "s-2").sandboxes, 1);
        admission.forget("s-2");
        assert_eq!(usage(Snapshot::default(), &unseen).sandboxes, 0);
        assert_eq!(usage(Snapshot::default(), &unseen).creates_last_minute, 1);
    }
}
