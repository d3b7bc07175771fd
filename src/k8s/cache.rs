//! A watch-backed, in-memory copy of the sandboxes' Pods and Services, so that reads cost no
//! apiserver call and waiters learn about changes the moment the watch delivers them.
//!
//! Only what the API needs is kept: managed fields are dropped, and pods lose their spec.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    runtime::{
        reflector::{self, ObjectRef, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Where the cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheState {
    pub pods_synced: bool,
    pub services_synced: bool,
    pub pods_healthy: bool,
    pub services_healthy: bool,
    /// Bumped on every applied event, so that waiters can wake up on any change.
    pub generation: u64,
}

impl CacheState {
    /// Synced and watching: reads from the cache are as fresh as the watch.
    pub fn usable(&self) -> bool {
        self.pods_synced && self.services_synced && self.pods_healthy && self.services_healthy
    }

    pub fn summary(&self) -> CacheSummary {
        if self.usable() {
            CacheSummary::Synced
        } else if !(self.pods_synced && self.services_synced) {
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
}

/// Read access to the cached objects and their state. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    namespace: String,
    pods: Store<Pod>,
    services: Store<Service>,
    state: watch::Receiver<CacheState>,
}

impl Cache {
    /// Starts watching the managed Pods and Services of `namespace`. The watches run until
    /// `shutdown` turns true (or its sender is dropped).
    pub fn start(
        client: Client,
        namespace: &str,
        selector: &str,
        shutdown: watch::Receiver<bool>,
    ) -> Cache {
        let (state_tx, state) = watch::channel(CacheState::default());
        let state_tx = Arc::new(state_tx);
        let pods = run_reflector::<Pod>(
            Api::namespaced(client.clone(), namespace),
            selector,
            |pod| pod.spec = None,
            Arc::clone(&state_tx),
            |s, synced, healthy| {
                s.pods_synced |= synced;
                s.pods_healthy = healthy;
            },
            shutdown.clone(),
        );
        let services = run_reflector::<Service>(
            Api::namespaced(client, namespace),
            selector,
            |_| {},
            state_tx,
            |s, synced, healthy| {
                s.services_synced |= synced;
                s.services_healthy = healthy;
            },
            shutdown,
        );
        Cache {
            namespace: namespace.to_string(),
            pods,
            services,
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

/// Runs one reflector in the background and returns its store.
fn run_reflector<K>(
    api: Api<K>,
    selector: &str,
    trim: fn(&mut K),
    state: Arc<watch::Sender<CacheState>>,
    mark: fn(&mut CacheState, bool, bool),
    mut shutdown: watch::Receiver<bool>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default().labels(selector);
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |obj: &mut K| {
            obj.meta_mut().managed_fields = None;
            trim(obj);
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(event)) => {
                        let synced = matches!(event, watcher::Event::InitDone);
                        state.send_modify(|s| {
                            mark(s, synced, true);
                            s.generation += 1;
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!(kind, error = %e, "watch failed; reads fall back to the apiserver until it recovers");
                        state.send_modify(|s| mark(s, false, false));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_needs_both_synced_and_healthy() {
        let mut s = CacheState::default();
        assert_eq!(s.summary(), CacheSummary::Syncing);
        s.pods_synced = true;
        s.services_synced = true;
        assert_eq!(s.summary(), CacheSummary::Broken);
        s.pods_healthy = true;
        s.services_healthy = true;
        assert!(s.usable());
        assert_eq!(s.summary(), CacheSummary::Synced);
        s.services_healthy = false;
        assert_eq!(s.summary(), CacheSummary::Broken);
    }
}
