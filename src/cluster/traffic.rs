//! What the gateway asks of a cluster: the cached record of a sandbox's Pod (never an
//! apiserver call per request), waiting for it to change, and noting traffic as activity.

use std::{sync::Arc, time::Duration};

use super::Cluster;
use crate::k8s::record::{PodRecord, SuspendedRecord};

/// Longest time between two activity notes of a request, stream or WebSocket that stays open.
const HEARTBEAT: Duration = Duration::from_secs(30);

impl Cluster {
    /// The cached record of the sandbox's Pod, also while the watch is broken (where a sandbox
    /// lives does not change meanwhile, and the token check needs only its identity).
    pub fn cached_pod(&self, id: &str) -> Option<Arc<PodRecord>> {
        self.cache.pod(id)
    }

    /// The cached record of the sandbox when it is suspended (no Pod, or only the one it is
    /// leaving): the gateway wakes it.
    pub fn cached_suspended(&self, id: &str) -> Option<Arc<SuspendedRecord>> {
        let record = self.cache.suspended(id)?;
        self.cache
            .pod(id)
            .is_none_or(|pod| pod.terminating)
            .then_some(record)
    }

    /// Whether the cache is synced and watching, so that a miss means the sandbox is not here.
    pub fn cache_usable(&self) -> bool {
        self.cache.state().usable()
    }

    /// Waits until `done` holds for the sandbox's cached Pod record (None once it is gone),
    /// driven by the watch; returns whether it held within `limit`.
    pub async fn wait_for_pod(
        &self,
        id: &str,
        limit: Duration,
        mut done: impl FnMut(Option<&PodRecord>) -> bool,
    ) -> bool {
        self.cache
            .wait_for(limit, |cache| done(cache.pod(id).as_deref()))
            .await
    }

    /// The cluster's Kubernetes client (the gateway's apiserver reach sends through it).
    pub fn kube_client(&self) -> kube::Client {
        self.calls.client()
    }

    /// Notes traffic through the gateway as activity on the sandbox (as a GET does).
    pub fn note_traffic(&self, id: &str) {
        if let Some(pod) = self.cache.pod(id) {
            self.touch(id, &pod);
        }
    }

    /// How often an open request, stream or WebSocket notes activity again: every 30 s, or
    /// every SANDBOX_ACTIVITY_PERSIST_INTERVAL when that is shorter.
    pub fn activity_heartbeat(&self) -> Duration {
        HEARTBEAT.min(
            self.lifecycle
                .activity_persist_interval
                .max(Duration::from_millis(100)),
        )
    }
}
