//! What is known about a cluster's health, kept by its probe and by the calls that prepare its
//! namespace, so that readiness only reads: whether its apiserver answers, whether its
//! namespace is usable, its cache, the permissions it refused, its sandbox count.

use std::time::Duration;

use tokio::sync::watch;

use super::Cluster;
use crate::k8s::{cache::CacheSummary, calls, manifests, refusals::MissingPermission};

/// What the probe has found so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Probed {
    /// The first round has run (readiness waits for it).
    pub done: bool,
    /// Why the apiserver did not answer the last probe; None while it answers.
    pub unreachable: Option<String>,
    /// Why the namespace cannot be used, as its last preparation found; None when usable or
    /// not yet known.
    pub namespace: Option<String>,
}

/// The probe's findings of one cluster, shared by its clones.
pub(super) type ProbeState = std::sync::Arc<watch::Sender<Probed>>;

/// A probe state for a cluster without a probe: taken as reachable.
pub(super) fn unprobed() -> ProbeState {
    std::sync::Arc::new(watch::Sender::new(Probed {
        done: true,
        ..Probed::default()
    }))
}

/// A cluster's health, as readiness and capabilities report it.
#[derive(Debug, Clone)]
pub struct Health {
    /// Why it is not usable now (apiserver out of reach, namespace unusable), if it is not.
    pub error: Option<String>,
    pub cache: CacheSummary,
    pub missing_permissions: Vec<MissingPermission>,
    /// Sandboxes the synced cache counts (None while it is not synced).
    pub sandboxes: Option<usize>,
}

impl Cluster {
    /// Why the cluster's apiserver is taken to be unreachable now, if it is.
    pub fn unreachable(&self) -> Option<String> {
        self.probe.borrow().unreachable.clone()
    }

    /// Its health now, once its probe has run a first round (waiting at most `limit`).
    pub async fn health(&self, limit: Duration) -> Health {
        let mut probed = self.probe.subscribe();
        let _ = tokio::time::timeout(limit, probed.wait_for(|p| p.done)).await;
        let probed = probed.borrow().clone();
        let error = match (probed.unreachable, probed.namespace) {
            (Some(cause), _) => Some(format!("cannot reach the Kubernetes API: {cause}")),
            (None, namespace) => namespace,
        };
        Health {
            error,
            cache: self.cache.state().summary(),
            missing_permissions: self.refusals().missing(),
            sandboxes: self.count(),
        }
    }

    pub(super) fn note_reachable(&self, failure: Option<String>) -> bool {
        let mut recovered = false;
        self.probe.send_modify(|p| {
            recovered = p.unreachable.is_some() && failure.is_none();
            match (&p.unreachable, &failure) {
                (None, Some(why)) => {
                    tracing::warn!(cluster = %self.name, cause = %why, "cluster unreachable: its \
                        sandboxes answer 503 and new ones go to other clusters until it answers \
                        again; check that its apiserver runs and is reachable from here")
                }
                (Some(_), None) => tracing::info!(cluster = %self.name, "cluster reachable again"),
                _ => {}
            }
            p.unreachable = failure;
        });
        recovered
    }

    pub(super) fn note_probed(&self) {
        self.probe
            .send_if_modified(|p| !std::mem::replace(&mut p.done, true));
    }

    /// Creates the sandbox namespace when missing (and notes whether it is usable). Returns
    /// whether it was created.
    pub async fn ensure_namespace(&self) -> calls::Result<bool> {
        let result = self
            .calls
            .ensure_namespace(&manifests::namespace(self.namespace()))
            .await;
        let why = result.as_ref().err().map(ToString::to_string);
        self.probe.send_modify(|p| p.namespace = why);
        if matches!(result, Ok(true)) {
            tracing::info!(cluster = %self.name, namespace = self.namespace(), "namespace created");
        }
        result
    }
}
