//! A watch-backed, in-memory copy of the sandboxes' Pods and Services, so that reads cost no
//! apiserver call and waiters learn about changes the moment the watch delivers them.
//!
//! Only what the API needs is kept: managed fields are dropped, and pods lose their spec.
//! NetworkPolicies are watched too when sandboxes get them (for the sweep).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::{
    core::v1::{Pod, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    runtime::reflector::{self, ObjectRef, Store},
    Client,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{k8s::manifests, k8s::refusals::Refusals};
use reflect::Watch;

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

/// Keeps of a pod what the reads use (its name, uid, times, the sandbox id and tenant labels,
/// the provisioner's own annotations, phase, conditions, container states), so that ten
/// thousand sandboxes fit in little memory. Cached objects are only read, never written back.
fn slim_pod(pod: &mut Pod) {
    pod.spec = None;
    let meta = &mut pod.metadata;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == manifests::SANDBOX_ID_LABEL || k == manifests::TENANT_LABEL);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k.starts_with(manifests::ANNOTATION_PREFIX));
    }
    if let Some(status) = pod.status.as_mut() {
        status.host_ip = None;
        status.host_ips = None;
        status.pod_ip = None;
        status.pod_ips = None;
        status.qos_class = None;
        status.nominated_node_name = None;
        status.ephemeral_container_statuses = None;
        status.resource_claim_statuses = None;
        status.resize = None;
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_probe_time = None;
        }
        let containers = status
            .container_statuses
            .iter_mut()
            .chain(status.init_container_statuses.iter_mut())
            .flatten();
        for c in containers {
            c.image = String::new();
            c.image_id = String::new();
            c.container_id = None;
            c.last_state = None;
            c.allocated_resources = None;
            c.allocated_resources_status = None;
            c.resources = None;
            c.user = None;
            c.volume_mounts = None;
        }
        // Lists grow by doubling while they are read (a single container status takes room
        // for four, 3 KB); give the spare room back.
        for list in [
            &mut status.container_statuses,
            &mut status.init_container_statuses,
        ] {
            list.as_mut().map(Vec::shrink_to_fit);
        }
        status.conditions.as_mut().map(Vec::shrink_to_fit);
    }
}

/// Keeps of a service what the reads use: its name, owner, creation, sandbox id, type and
/// ports (the URL).
fn slim_service(service: &mut Service) {
    service.status = None;
    let meta = &mut service.metadata;
    meta.annotations = None;
    if let Some(labels) = meta.labels.as_mut() {
        labels.retain(|k, _| k == manifests::SANDBOX_ID_LABEL);
    }
    meta.owner_references.as_mut().map(Vec::shrink_to_fit);
    if let Some(spec) = service.spec.as_mut() {
        spec.ports.as_mut().map(Vec::shrink_to_fit);
        spec.cluster_ips = None;
        spec.ip_families = None;
        spec.ip_family_policy = None;
        spec.session_affinity = None;
        spec.internal_traffic_policy = None;
        spec.external_traffic_policy = None;
        spec.selector = None;
    }
}

/// Read access to the cached objects and their state. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    namespace: String,
    pods: Store<CachedPod>,
    services: Store<CachedService>,
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
        let pods = watch.run::<CachedPod>(|p| slim_pod(&mut p.0), |s| &mut s.pods);
        let services = watch.run::<CachedService>(|s| slim_service(&mut s.0), |s| &mut s.services);
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

    pub fn pod(&self, name: &str) -> Option<Arc<CachedPod>> {
        self.pods.get(&ObjectRef::new(name).within(&self.namespace))
    }

    pub fn service(&self, name: &str) -> Option<Arc<CachedService>> {
        self.services
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    pub fn pods(&self) -> Vec<Arc<CachedPod>> {
        self.pods.state()
    }

    pub fn services(&self) -> Vec<Arc<CachedService>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{manifests::test_support::*, read as objects, status::status_of};

    #[test]
    fn a_slimmed_pod_reads_like_the_whole_pod() {
        let t = spec(None, None);
        let (id, thread) = ids();
        let mut pod = a_pod(&t);
        let meta = &mut pod.metadata;
        meta.uid = Some("uid-1".into());
        meta.labels
            .get_or_insert_default()
            .insert(manifests::TENANT_LABEL.into(), "team-a".into());
        let annotations = meta.annotations.get_or_insert_default();
        annotations.insert(manifests::TTL_ANNOTATION.into(), "90".into());
        annotations.insert(manifests::USER_ANNOTATION.into(), "alice".into());
        pod.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running",
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "sandbox", "image": "img:1", "imageID": "x",
                    "ready": true, "restartCount": 0, "state": {"running": {}}}],
            }))
            .unwrap(),
        );
        let service = manifests::service(&t, &id, &thread, &pod);
        let mut slim = pod.clone();
        slim_pod(&mut slim);
        let mut slim_svc = service.clone();
        slim_service(&mut slim_svc);

        assert!(slim.spec.is_none());
        let view = |p: &Pod, s: &Service| objects::sandbox_view("abc-123", p, Some(s), &t);
        assert_eq!(view(&slim, &slim_svc), view(&pod, &service));
        assert_eq!(status_of(&slim), status_of(&pod));
        assert_eq!(objects::limits_of(&slim), objects::limits_of(&pod));
        assert_eq!(objects::tenant_of(&slim.metadata), "team-a");
        assert_eq!(
            format!("{:?}", objects::timers_of(&slim, Duration::ZERO)),
            format!("{:?}", objects::timers_of(&pod, Duration::ZERO))
        );
        let kept: Vec<&String> = slim
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kept, [manifests::SANDBOX_ID_LABEL, manifests::TENANT_LABEL]);
        assert!(slim
            .metadata
            .annotations
            .iter()
            .flatten()
            .all(|(k, _)| k.starts_with(manifests::ANNOTATION_PREFIX)));
    }

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
