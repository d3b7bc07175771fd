//! The sweep: repairs or removes what a crash or a third party left behind. A pure plan over
//! a snapshot of the watched objects, then a thin step that applies it.
//!
//! Among managed objects older than SANDBOX_ORPHAN_GRACE: a pod without its Service (or,
//! when configured, its NetworkPolicy) gets it back; a Service or NetworkPolicy without its
//! pod is removed (the garbage collector would, later); a sandbox whose pod ended is removed;
//! a missing baseline policy is restored.

mod plan;

pub use plan::{plan, Action, Owned, OwnedFacts, PodFacts, Snapshot};

use std::{collections::HashSet, sync::Arc};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::Cluster;
use crate::k8s::read as objects;
use crate::{
    k8s::{
        calls::Kind,
        manifests,
        record::{PodRecord, ServiceRecord},
    },
    metrics::DeletionReason as Reason,
    sandbox::{Phase, SandboxId, ThreadId},
};

fn owned_facts(meta: &ObjectMeta) -> OwnedFacts {
    OwnedFacts {
        name: meta.name.clone().unwrap_or_default(),
        owners: meta
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.kind == "Pod")
            .map(|r| r.uid.clone())
            .collect(),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
        per_sandbox: objects::sandbox_id_of(meta).is_some(),
    }
}

fn pod_facts(id: &str, pod: &PodRecord) -> Option<PodFacts> {
    Some(PodFacts {
        id: SandboxId::parse(id).ok()?,
        uid: pod.uid.to_string(),
        thread: pod.thread.as_deref().and_then(|t| ThreadId::parse(t).ok()),
        created: pod.creation,
        ended: matches!(pod.status.phase, Phase::Succeeded | Phase::Failed),
        terminating: pod.terminating,
    })
}

fn service_facts(service: &ServiceRecord) -> OwnedFacts {
    OwnedFacts {
        name: service.name.to_string(),
        owners: service.owners.iter().map(|o| o.to_string()).collect(),
        created: service.creation,
        per_sandbox: true,
    }
}

/// The sweep's view of the watched objects.
pub fn snapshot(
    pods: &[(Arc<str>, Arc<PodRecord>)],
    services: &[(Arc<str>, Arc<ServiceRecord>)],
    policies: Option<&[Arc<NetworkPolicy>]>,
) -> Snapshot {
    Snapshot {
        services_wanted: true,
        pods: pods.iter().filter_map(|(id, p)| pod_facts(id, p)).collect(),
        services: services.iter().map(|(_, s)| service_facts(s)).collect(),
        baseline_present: policies.is_some_and(|ps| {
            ps.iter()
                .any(|p| p.metadata.name.as_deref() == Some(manifests::BASELINE_POLICY_NAME))
        }),
        policies: policies.map(|ps| ps.iter().map(|p| owned_facts(&p.metadata)).collect()),
    }
}

impl Cluster {
    /// Runs one sweep over the cache (see the module). Returns how many objects it acted on.
    /// Stops early once `leading` says this replica lost the lease.
    pub async fn sweep(&self, leading: impl Fn() -> bool) -> usize {
        if !self.cache.state().usable() {
            return 0;
        }
        if !self.policies_on() {
            // Never fails without policies: a stale baseline is removed or left quietly.
            let _ = self.settle_baseline(None).await;
        }
        let policies = self.cache.policies().filter(|_| self.policies_on());
        // Reads every object (about 8 ms for 10,000 sandboxes): on a blocking thread, so that
        // requests never wait behind it on the async workers.
        let (cache, grace) = (self.cache.clone(), self.lifecycle.orphan_grace);
        let services_wanted = self.spec.exposure.has_service();
        let planned = tokio::task::spawn_blocking(move || {
            let mut snapshot = snapshot(&cache.pods(), &cache.services(), policies.as_deref());
            snapshot.services_wanted = services_wanted;
            plan(&snapshot, Timestamp::now(), grace)
        });
        let actions = match planned.await {
            Ok(actions) => actions,
            Err(e) => {
                tracing::error!(error = %e, "planning the sweep failed; retrying next round");
                return 0;
            }
        };
        let mut removed: HashSet<SandboxId> = HashSet::new();
        let mut acted = 0;
        for action in actions {
            if !leading() {
                break;
            }
            acted += usize::from(self.apply(action, &mut removed).await);
        }
        acted
    }

    /// Applies one action; returns whether it changed anything. Actions for a sandbox removed
    /// earlier in the round are skipped.
    async fn apply(&self, action: Action, removed: &mut HashSet<SandboxId>) -> bool {
        match action {
            Action::RemoveOwnerless { kind, name } => match kind {
                Owned::Service => self.remove_ownerless::<Service>(&name, true).await,
                Owned::NetworkPolicy => self.remove_ownerless::<NetworkPolicy>(&name, false).await,
            },
            Action::RestoreBaseline => match self.settle_baseline(Some(false)).await {
                Ok(acted) => {
                    if acted {
                        tracing::warn!("the baseline NetworkPolicy was missing; restored it");
                    }
                    acted
                }
                Err(e) => {
                    if !e.is_permission_denied() {
                        tracing::warn!(error = %e, "restoring the baseline NetworkPolicy failed; \
                            retrying next round");
                    }
                    false
                }
            },
            Action::RemoveEnded(id) => {
                let done = matches!(self.remove(&id, Reason::Orphan).await, Ok(true));
                if done {
                    tracing::warn!(sandbox_id = %id, "removed a sandbox whose pod ended");
                }
                removed.insert(id);
                done
            }
            Action::RestoreService { id, thread } => {
                let repaired = match (&thread, self.live_pod(&id).await) {
                    (Some(thread), Some(pod)) => {
                        self.ensure_service(&id, thread, &pod).await.is_ok()
                    }
                    _ => false,
                };
                if repaired {
                    tracing::warn!(sandbox_id = %id, "gave a pod its missing Service back");
                    return true;
                }
                let done = matches!(self.remove(&id, Reason::Orphan).await, Ok(true));
                if done {
                    tracing::warn!(sandbox_id = %id, "removed a pod whose Service could not be \
                        restored");
                }
                removed.insert(id);
                done
            }
            Action::RestorePolicy { id, thread } => {
                if removed.contains(&id) {
                    return false;
                }
                let Some(pod) = self.live_pod(&id).await else {
                    return false;
                };
                match self.ensure_network_policy(&id, &thread, &pod).await {
                    Ok(()) => {
                        tracing::warn!(sandbox_id = %id, "gave a pod its missing NetworkPolicy \
                            back");
                        true
                    }
                    Err(e) => {
                        if !e.is_permission_denied() {
                            tracing::warn!(sandbox_id = %id, error = %e, "restoring a missing \
                                NetworkPolicy failed; retrying next round");
                        }
                        false
                    }
                }
            }
        }
    }

    /// The sandbox's Pod as the apiserver has it, to repair what it owns (the cache keeps
    /// records, and a repair is rare); None when it is gone or cannot be read now.
    async fn live_pod(&self, id: &SandboxId) -> Option<Pod> {
        let name = self.cache.pod(id.as_str())?.pod_name(id.as_str());
        self.calls.get::<Pod>(&name).await.ok().flatten()
    }

    /// Deletes an object whose pod is gone; a Service counts as an orphaned sandbox.
    async fn remove_ownerless<K: Kind>(&self, name: &str, counted_as_sandbox: bool) -> bool {
        let kind = K::kind(&()).to_lowercase();
        match self.calls.delete::<K>(name).await {
            Ok(true) => {
                if counted_as_sandbox {
                    self.metrics.sandbox_deleted(Reason::Orphan);
                }
                tracing::warn!(%name, %kind, "removed an object whose pod is gone");
                true
            }
            Ok(false) => false,
            Err(e) if e.is_permission_denied() => false,
            Err(e) => {
                tracing::warn!(%name, %kind, error = %e, "removing an orphaned object failed");
                false
            }
        }
    }
}
