//! A watch-backed, in-memory copy of the sandboxes' Pods and Services, so that reads cost no
//! apiserver call and waiters learn about changes the moment the watch delivers them.
//!
//! Each watched object is kept only as its compact record ([`PodRecord`], [`ServiceRecord`]),
//! keyed by sandbox id, in a concurrent map that readers use without locks, so that a burst
//! of reads never waits for the watch and the watch never waits for readers. NetworkPolicies
//! are watched too when sandboxes get them (for the sweep); they are few.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    runtime::reflector::{self, Store},
    Client,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record::{PodRecord, PoolPodRecord, ServiceRecord, SuspendedRecord};
use crate::k8s::refusals::Refusals;
use reflect::{Keep, Watch};

mod reflect;
mod slim;

pub use slim::{Cached, CachedPod, CachedService};

/// Where one watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchState {
    /// The first listing has completed.
    pub synced: bool,
    /// The last event was not an error.
    pub healthy: bool,
    /// The last error was a 403: the credential lacks list or watch on this kind.
    pub forbidden: bool,
}

impl WatchState {
    fn usable(&self) -> bool {
        self.synced && self.healthy
    }
}

/// Where the cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheState {
    pub pods: WatchState,
    pub services: WatchState,
    /// Only watched when sandboxes get NetworkPolicies.
    pub policies: Option<WatchState>,
    /// Only watched when the cluster keeps warm pools.
    pub pools: Option<WatchState>,
    /// The records of suspended sandboxes (ConfigMaps).
    pub suspended: WatchState,
    /// Bumped on every applied event, so that waiters can wake up on any change.
    pub generation: u64,
}

impl CacheState {
    fn watches(&self) -> impl Iterator<Item = WatchState> {
        [
            Some(self.pods),
            Some(self.services),
            Some(self.suspended),
            self.policies,
        ]
        .into_iter()
        .flatten()
    }

    /// Synced and watching: reads from the cache are as fresh as the watch. Policies only
    /// need their first listing: no read of the API depends on them, the sweep's actions on
    /// them are checked by the apiserver, and a quiet watch that failed once would otherwise
    /// count as broken until the next policy changes (kube's watcher reports no restart).
    pub fn usable(&self) -> bool {
        self.pods.usable()
            && self.services.usable()
            && self.suspended.usable()
            && self.policies.is_none_or(|p| p.synced)
    }

    pub fn summary(&self) -> CacheSummary {
        // A refused watch is named even where its last listing still serves.
        if self.watches().any(|w| w.forbidden) {
            CacheSummary::Forbidden
        } else if self.usable() {
            CacheSummary::Synced
        } else if !self.watches().all(|w| w.synced) {
            CacheSummary::Syncing
        } else {
            CacheSummary::Broken
        }
    }
}

/// The cache's state as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CacheSummary {
    /// Reads are served from memory.
    Synced,
    /// The first listing has not finished; reads go to the apiserver.
    Syncing,
    /// The watch is failing; reads go to the apiserver until it recovers.
    Broken,
    /// The credential may not list or watch the sandboxes' objects (`/readyz` names the
    /// permission); reads go to the apiserver until it is granted.
    Forbidden,
}

/// Records by sandbox id.
pub(super) type Records<R> = Arc<papaya::HashMap<Arc<str>, Arc<R>>>;

/// Read access to the cached records and their state. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    pods: Records<PodRecord>,
    services: Records<ServiceRecord>,
    /// Suspended sandboxes' records, by sandbox id.
    suspended: Records<SuspendedRecord>,
    policies: Option<Store<NetworkPolicy>>,
    /// Warm pool Pods by name, when the cluster keeps pools.
    pool_pods: Option<Records<PoolPodRecord>>,
    namespace: Arc<str>,
    state: watch::Receiver<CacheState>,
}

/// What the cache watches, and where.
pub struct CacheScope<'a> {
    pub namespace: &'a str,
    /// Label selector of the managed objects.
    pub selector: &'a str,
    /// Whether sandboxes get NetworkPolicies (they are then watched too).
    pub network_policies: bool,
    /// Whether the cluster keeps warm pools (their Pods are then watched too).
    pub pools: bool,
    /// Bound of the probe that confirms a watch has recovered (K8S_API_TIMEOUT_SECONDS).
    pub call_timeout: Duration,
}

impl Cache {
    /// Starts watching the managed objects of the scope. The watches run until `shutdown`
    /// turns true (or its sender is dropped); refusals are reported to `refusals`.
    pub fn start(
        client: Client,
        scope: CacheScope<'_>,
        refusals: Refusals,
        shutdown: watch::Receiver<bool>,
    ) -> Cache {
        let initial = CacheState {
            policies: scope.network_policies.then(WatchState::default),
            pools: scope.pools.then(WatchState::default),
            ..CacheState::default()
        };
        let (state_tx, state) = watch::channel(initial);
        let watch = Watch {
            client,
            namespace: scope.namespace,
            selector: scope.selector,
            call_timeout: scope.call_timeout,
            state: Arc::new(state_tx),
            refusals,
            shutdown,
        };
        let pods: Records<PodRecord> = Arc::default();
        let services: Records<ServiceRecord> = Arc::default();
        let pod_record: fn(&CachedPod) -> _ = |p| PodRecord::of(p);
        watch.run(Keep::Records(pods.clone(), pod_record), |s| &mut s.pods);
        let service_record: fn(&CachedService) -> _ = |s| ServiceRecord::of(s);
        watch.run(Keep::Records(services.clone(), service_record), |s| {
            &mut s.services
        });
        let suspended: Records<SuspendedRecord> = Arc::default();
        let suspended_record: fn(&ConfigMap) -> _ = SuspendedRecord::of;
        let selector = crate::k8s::manifests::suspended_selector();
        Watch {
            client: watch.client.clone(),
            namespace: watch.namespace,
            selector: &selector,
            call_timeout: watch.call_timeout,
            state: Arc::clone(&watch.state),
            refusals: watch.refusals.clone(),
            shutdown: watch.shutdown.clone(),
        }
        .run(Keep::Records(suspended.clone(), suspended_record), |s| {
            &mut s.suspended
        });
        let policies = scope.network_policies.then(|| {
            let (reader, writer) = reflector::store();
            watch.run::<NetworkPolicy, ()>(Keep::Objects(writer), |s| {
                s.policies.get_or_insert_with(WatchState::default)
            });
            reader
        });
        let pool_pods = scope.pools.then(|| {
            let records: Records<PoolPodRecord> = Arc::default();
            let selector = crate::spec::keys::POOL_LABEL;
            let pools = Watch { selector, ..watch };
            let record: fn(&CachedPod) -> _ = |p| PoolPodRecord::of(p);
            pools.run(Keep::Records(records.clone(), record), |s| {
                s.pools.get_or_insert_with(WatchState::default)
            });
            records
        });
        Cache {
            pods,
            services,
            suspended,
            policies,
            pool_pods,
            namespace: scope.namespace.into(),
            state,
        }
    }

    /// A cache that watches nothing and never syncs, so that every read goes to the
    /// apiserver: for tests of the HTTP layer that must not reach a cluster.
    pub fn unwatched(namespace: &str) -> Cache {
        let (_, state) = watch::channel(CacheState::default());
        Cache {
            pods: Arc::default(),
            services: Arc::default(),
            suspended: Arc::default(),
            policies: None,
            pool_pods: None,
            namespace: namespace.into(),
            state,
        }
    }

    /// A synced cache holding these objects (for unit tests of what reads from it).
    pub fn from_objects(namespace: &str, pods: &[Pod], services: &[Service]) -> Cache {
        let synced = WatchState {
            synced: true,
            healthy: true,
            forbidden: false,
        };
        let (_, state) = watch::channel(CacheState {
            pods: synced,
            services: synced,
            suspended: synced,
            ..CacheState::default()
        });
        let cache = Cache {
            pods: Arc::default(),
            services: Arc::default(),
            suspended: Arc::default(),
            policies: None,
            pool_pods: None,
            namespace: namespace.into(),
            state,
        };
        let (p, s) = (cache.pods.pin(), cache.services.pin());
        for (id, record) in pods.iter().filter_map(PodRecord::of) {
            p.insert(id.into(), Arc::new(record));
        }
        for (id, record) in services.iter().filter_map(ServiceRecord::of) {
            s.insert(id.into(), Arc::new(record));
        }
        drop((p, s));
        cache
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn state(&self) -> CacheState {
        *self.state.borrow()
    }

    /// The record of the sandbox's Pod.
    pub fn pod(&self, id: &str) -> Option<Arc<PodRecord>> {
        self.pods.pin().get(id).cloned()
    }

    /// The record of the sandbox's Service.
    pub fn service(&self, id: &str) -> Option<Arc<ServiceRecord>> {
        self.services.pin().get(id).cloned()
    }

    /// The record of the sandbox when it is suspended.
    pub fn suspended(&self, id: &str) -> Option<Arc<SuspendedRecord>> {
        self.suspended.pin().get(id).cloned()
    }

    /// Every suspended sandbox's record, by sandbox id (in no order).
    pub fn all_suspended(&self) -> Vec<(Arc<str>, Arc<SuspendedRecord>)> {
        let records = self.suspended.pin();
        records
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// Every Pod record, by sandbox id (in no order).
    pub fn pods(&self) -> Vec<(Arc<str>, Arc<PodRecord>)> {
        let pods = self.pods.pin();
        pods.iter().map(|(id, r)| (id.clone(), r.clone())).collect()
    }

    /// Every Service record, by sandbox id (in no order).
    pub fn services(&self) -> Vec<(Arc<str>, Arc<ServiceRecord>)> {
        let services = self.services.pin();
        services
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// How many Pods the cache holds.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Every warm pool Pod (claimed or not) by name, once their watch has listed them; None
    /// without pools or before.
    pub fn pool_pods(&self) -> Option<Vec<(Arc<str>, Arc<PoolPodRecord>)>> {
        let records = self.pool_pods.as_ref()?;
        if !self.state().pools.is_some_and(|w| w.synced) {
            return None;
        }
        let pods = records.pin();
        Some(pods.iter().map(|(n, r)| (n.clone(), r.clone())).collect())
    }

    /// The managed NetworkPolicies, when they are watched.
    pub fn policies(&self) -> Option<Vec<Arc<NetworkPolicy>>> {
        self.policies.as_ref().map(Store::state)
    }

    /// Waits until `done` holds for the cache (checked now and after every change), or until
    /// `limit` passes. Returns whether it held.
    pub async fn wait_for(&self, limit: Duration, mut done: impl FnMut(&Cache) -> bool) -> bool {
        let mut changes = self.state.clone();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changes.borrow_and_update();
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return done(self),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_needs_both_synced_and_healthy() {
        let mut s = CacheState::default();
        assert_eq!(s.summary(), CacheSummary::Syncing);
        s.pods.synced = true;
        s.services.synced = true;
        s.suspended.synced = true;
        assert_eq!(s.summary(), CacheSummary::Broken);
        s.pods.healthy = true;
        s.services.healthy = true;
        s.suspended.healthy = true;
        assert!(s.usable());
        assert_eq!(s.summary(), CacheSummary::Synced);
        s.services.healthy = false;
        assert_eq!(s.summary(), CacheSummary::Broken);
        s.services.forbidden = true;
        assert_eq!(s.summary(), CacheSummary::Forbidden);
    }

    #[test]
    fn watched_policies_count_once_present() {
        let healthy = WatchState {
            synced: true,
            healthy: true,
            forbidden: false,
        };
        let mut s = CacheState {
            pods: healthy,
            services: healthy,
            suspended: healthy,
            policies: Some(WatchState::default()),
            pools: None,
            generation: 0,
        };
        assert_eq!(s.summary(), CacheSummary::Syncing);
        s.policies = Some(WatchState {
            forbidden: true,
            ..WatchState::default()
        });
        assert_eq!(s.summary(), CacheSummary::Forbidden);
        s.policies = Some(healthy);
        assert!(s.usable());
        s.policies = Some(WatchState {
            healthy: false,
            ..healthy
        });
        assert!(s.usable(), "a failed policy watch keeps its listing");
    }

    #[test]
    fn a_cache_filled_from_objects_holds_the_sandboxes_only() {
        use crate::k8s::manifests::{self, test_support::*};
        let t = spec(None, None);
        let pod = a_pod(&t);
        let request = a_request();
        let service = manifests::service(&t, &request.id, &request.thread, &pod);
        let mut stranger = pod.clone();
        stranger.metadata.name = Some("someone-elses".into());
        stranger
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(manifests::SANDBOX_ID_LABEL);
        let cache = Cache::from_objects("ns", &[pod, stranger], &[service]);
        assert!(cache.state().usable(), "filled means synced");
        assert_eq!(cache.pod_count(), 1);
        let id = request.id.as_str();
        assert_eq!(cache.pod(id).unwrap().uid.as_ref(), "uid-1");
        assert!(cache.service(id).is_some());
        assert!(cache.pod("someone-elses").is_none());
        assert_eq!(cache.namespace(), "ns");
    }
}
