//! A watch-backed, in-memory copy of the sandboxes' Pods and Services, so that reads cost no
//! apiserver call and waiters learn about changes the moment the watch delivers them.
//!
//! Only what the API needs is kept: managed fields are dropped, and pods lose their spec.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::permissions::Refusals;

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
    /// Bumped on every applied event, so that waiters can wake up on any change.
    pub generation: u64,
}

impl CacheState {
    fn watches(&self) -> impl Iterator<Item = WatchState> {
        [Some(self.pods), Some(self.services), self.policies]
            .into_iter()
            .flatten()
    }

    /// Synced and watching: reads from the cache are as fresh as the watch. Policies only
    /// need their first listing: no read of the API depends on them, the sweep's actions on
    /// them are checked by the apiserver, and a quiet watch that failed once would otherwise
    /// count as broken until the next policy changes (kube's watcher reports no restart).
    pub fn usable(&self) -> bool {
        self.pods.usable() && self.services.usable() && self.policies.is_none_or(|p| p.synced)
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

/// Read access to the cached objects and their state. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    namespace: String,
    pods: Store<Pod>,
    services: Store<Service>,
    policies: Option<Store<NetworkPolicy>>,
    state: watch::Receiver<CacheState>,
}

/// What the cache watches, and where.
pub struct CacheScope<'a> {
    pub namespace: &'a str,
    /// Label selector of the managed objects.
    pub selector: &'a str,
    /// Whether sandboxes get NetworkPolicies (they are then watched too).
    pub network_policies: bool,
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
            ..CacheState::default()
        };
        let (state_tx, state) = watch::channel(initial);
        let watch = Watch {
            client,
            namespace: scope.namespace,
            selector: scope.selector,
            state: Arc::new(state_tx),
            refusals,
            shutdown,
        };
        let pods = watch.run::<Pod>(|pod| pod.spec = None, |s| &mut s.pods);
        let services = watch.run::<Service>(|_| {}, |s| &mut s.services);
        let policies = scope.network_policies.then(|| {
            watch.run::<NetworkPolicy>(
                |_| {},
                |s| s.policies.get_or_insert_with(WatchState::default),
            )
        });
        Cache {
            namespace: scope.namespace.to_string(),
            pods,
            services,
            policies,
            state,
        }
    }

    /// A cache that watches nothing and never syncs, so that every read goes to the
    /// apiserver: for tests of the HTTP layer that must not reach a cluster.
    pub fn unwatched(namespace: &str) -> Cache {
        let (_, state) = watch::channel(CacheState::default());
        Cache {
            namespace: namespace.to_string(),
            pods: reflector::store().0,
            services: reflector::store().0,
            policies: None,
            state,
        }
    }

    pub fn state(&self) -> CacheState {
        *self.state.borrow()
    }

    pub fn pod(&self, name: &str) -> Option<Arc<Pod>> {
        self.pods.get(&ObjectRef::new(name).within(&self.namespace))
    }

    pub fn service(&self, name: &str) -> Option<Arc<Service>> {
        self.services
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.pods.state()
    }

    pub fn services(&self) -> Vec<Arc<Service>> {
        self.services.state()
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

/// What every watch of the cache shares.
struct Watch<'a> {
    client: Client,
    namespace: &'a str,
    selector: &'a str,
    state: Arc<watch::Sender<CacheState>>,
    refusals: Refusals,
    shutdown: watch::Receiver<bool>,
}

/// Failures of one watch that are not refusals: logged when they start and then at most once
/// a minute while they last (a watch retries about once a second).
const WATCH_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl Watch<'_> {
    /// Runs one reflector in the background and returns its store.
    fn run<K>(&self, trim: fn(&mut K), mine: fn(&mut CacheState) -> &mut WatchState) -> Store<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (reader, writer) = reflector::store();
        let config = watcher::Config::default().labels(self.selector);
        let kind = K::kind(&()).to_string();
        let plural = K::plural(&()).to_string();
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let stream = watcher(api, config)
            .default_backoff()
            .modify(move |obj: &mut K| {
                obj.meta_mut().managed_fields = None;
                trim(obj);
            })
            .reflect(writer);
        let (state, refusals, mut shutdown) = (
            Arc::clone(&self.state),
            self.refusals.clone(),
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut last_logged: Option<tokio::time::Instant> = None;
            loop {
                tokio::select! {
                    event = stream.next() => match event {
                        Some(Ok(event)) => {
                            let synced = matches!(event, watcher::Event::InitDone);
                            if synced {
                                refusals.allowed("list", &plural);
                            }
                            // Only these come from the watch itself (the others from the listing).
                            if matches!(event, watcher::Event::Apply(_) | watcher::Event::Delete(_)) {
                                refusals.allowed("watch", &plural);
                            }
                            if last_logged.take().is_some() {
                                tracing::info!(kind, "watch works again; reads come from memory");
                            }
                            state.send_modify(|s| {
                                let w = mine(s);
                                w.synced |= synced;
                                w.healthy = true;
                                w.forbidden = false;
                                s.generation += 1;
                            });
                        }
                        Some(Err(e)) => {
                            let forbidden = refused_permission(&e);
                            match &forbidden {
                                Some((verb, message)) => refusals.refused(verb, &plural, message),
                                None if last_logged.is_none_or(|t| t.elapsed() >= WATCH_FAILURE_LOG_EVERY) => {
                                    last_logged = Some(tokio::time::Instant::now());
                                    tracing::warn!(kind, error = %e, "watch failed; reads fall back to the apiserver until it recovers (logged again at most once a minute)");
                                }
                                None => tracing::debug!(kind, error = %e, "watch failed again"),
                            }
                            state.send_modify(|s| {
                                let w = mine(s);
                                w.healthy = false;
                                w.forbidden = forbidden.is_some();
                            });
                        }
                        None => break,
                    },
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            break;
                        }
                    }
                }
            }
            tracing::debug!(kind, "watch stopped");
        });
        reader
    }
}

/// The verb a watch failure was refused for (403), with the apiserver's message.
fn refused_permission(e: &watcher::Error) -> Option<(&'static str, String)> {
    let (verb, status) = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s)) => ("list", s),
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => ("watch", s),
        watcher::Error::WatchError(s) => ("watch", s),
        _ => return None,
    };
    // The apiserver names the verb it refused ("... cannot watch resource ..."): a listing
    // may be refused for watch when it streams.
    let named = status
        .message
        .split_once(" cannot ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|named| ["list", "watch"].into_iter().find(|v| *v == named));
    (status.code == 403).then(|| (named.unwrap_or(verb), status.message.clone()))
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
        assert_eq!(s.summary(), CacheSummary::Broken);
        s.pods.healthy = true;
        s.services.healthy = true;
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
            policies: Some(WatchState::default()),
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
}
