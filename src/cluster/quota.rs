//! What a cluster holds as quotas count it: each live sandbox's tenant, user and limits (a
//! suspended one counts as a sandbox holding no CPU or memory), from
//! the watch cache (or, for a pod the cache has not delivered yet, one read of it).

use k8s_openapi::api::core::v1::Pod;

use super::{Cluster, Result};
use crate::{
    admission::{Held, Snapshot},
    k8s::{
        manifests,
        record::{PodRecord, SuspendedRecord},
    },
    sandbox::SandboxId,
};

pub use crate::k8s::record::cpu_and_memory;

impl Cluster {
    /// A sandbox pod as quotas count it (none for a pod on its way out); pods made before
    /// limits were recorded count the default size's.
    fn held_of(&self, id: &str, pod: &PodRecord) -> Option<(String, Held)> {
        if pod.terminating {
            return None;
        }
        let (cpu, memory) = pod
            .limits
            .unwrap_or_else(|| cpu_and_memory(&self.spec.default_resources.limits));
        Some((
            id.to_string(),
            Held {
                tenant: pod.tenant.to_string(),
                user: pod.user().to_string(),
                cpu,
                memory,
            },
        ))
    }

    /// A suspended sandbox as quotas count it: a sandbox of its tenant and user, holding no
    /// CPU or memory.
    fn held_suspended(record: &SuspendedRecord) -> Held {
        Held {
            tenant: record.pod.tenant.to_string(),
            user: record.pod.user().to_string(),
            cpu: 0.0,
            memory: 0.0,
        }
    }

    /// Every live or suspended sandbox the cache holds, as quotas count it.
    pub fn held(&self) -> Vec<(String, Held)> {
        let mut held: Vec<_> = self
            .cache
            .pods()
            .iter()
            .filter_map(|(id, pod)| self.held_of(id, pod))
            .collect();
        held.extend(
            self.suspended_candidates()
                .iter()
                .map(|(id, record)| (id.to_string(), Self::held_suspended(record))),
        );
        held
    }

    /// Adds this cluster's live sandboxes to `seen`: all to the total, `tenant`'s in full.
    pub fn tally(&self, tenant: &str, seen: &mut Snapshot) {
        for (id, pod) in self.cache.pods() {
            if pod.terminating {
                continue;
            }
            seen.total += 1;
            if &*pod.tenant == tenant {
                seen.tenant.extend(self.held_of(&id, &pod));
            }
        }
        for (id, record) in self.suspended_candidates() {
            seen.total += 1;
            if &*record.pod.tenant == tenant {
                seen.tenant
                    .push((id.to_string(), Self::held_suspended(&record)));
            }
        }
    }

    /// A pod the cache does not show yet, read from the apiserver, as quotas count it (None
    /// when the cache has it, or it is gone).
    pub async fn read_held(&self, pod_name: &str) -> Result<Option<(String, Held)>> {
        let Some(id) = manifests::id_of_pod_name(pod_name) else {
            return Ok(None);
        };
        if self.cache.pod(id).is_some() {
            return Ok(None);
        }
        let pod = self.calls.get::<Pod>(pod_name).await?;
        Ok(pod
            .as_ref()
            .and_then(PodRecord::of)
            .and_then(|(id, pod)| self.held_of(&id, &pod)))
    }

    /// The tenant of the sandbox as the cache shows it.
    pub fn cached_tenant(&self, id: &SandboxId) -> Option<String> {
        if let Some(pod) = self.cache.pod(id.as_str()) {
            return Some(pod.tenant.to_string());
        }
        Some(self.cache.suspended(id.as_str())?.pod.tenant.to_string())
    }
}
