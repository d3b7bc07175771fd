//! What a cluster holds as quotas count it: each live sandbox's tenant, user and limits, from
//! the watch cache (or, for a pod the cache has not delivered yet, one read of it).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::{Cluster, Result};
use crate::{
    admission::{Held, Snapshot},
    k8s::{manifests, read as objects},
    sandbox::{parse_quantity, SandboxId, DEFAULT_USER_ID},
};

/// CPU cores and memory bytes of a set of limits (unparsable or absent: 0).
pub fn cpu_and_memory(limits: &BTreeMap<String, String>) -> (f64, f64) {
    let value = |key: &str| {
        limits
            .get(key)
            .and_then(|q| parse_quantity(q))
            .unwrap_or(0.0)
    };
    (value("cpu"), value("memory"))
}

impl Cluster {
    /// A sandbox pod as quotas count it (none for a pod on its way out); pods made before
    /// limits were recorded count the default size's.
    fn held_of(&self, pod: &Pod) -> Option<(String, Held)> {
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let id = objects::sandbox_id_of(&pod.metadata)?;
        let limits = objects::limits_of(pod);
        let defaults = &self.spec.default_resources.limits;
        let (cpu, memory) = cpu_and_memory(limits.as_ref().unwrap_or(defaults));
        Some((
            id,
            Held {
                tenant: objects::tenant_of(&pod.metadata).to_string(),
                user: objects::user_of(pod).unwrap_or(DEFAULT_USER_ID).to_string(),
                cpu,
                memory,
            },
        ))
    }

    /// Every live sandbox the cache holds, as quotas count it.
    pub fn held(&self) -> Vec<(String, Held)> {
        self.cache
            .pods()
            .iter()
            .filter_map(|pod| self.held_of(pod))
            .collect()
    }

    /// Adds this cluster's live sandboxes to `seen`: all to the total, `tenant`'s in full.
    pub fn tally(&self, tenant: &str, seen: &mut Snapshot) {
        for pod in self.cache.pods() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            seen.total += 1;
            if objects::tenant_of(&pod.metadata) == tenant {
                seen.tenant.extend(self.held_of(&pod));
            }
        }
    }

    /// A pod the cache does not show yet, read from the apiserver, as quotas count it (None
    /// when the cache has it, or it is gone).
    pub async fn read_held(&self, pod_name: &str) -> Result<Option<(String, Held)>> {
        if self.cache.pod(pod_name).is_some() {
            return Ok(None);
        }
        let pod = self.calls.get::<Pod>(pod_name).await?;
        Ok(pod.and_then(|pod| self.held_of(&pod)))
    }

    /// The tenant of the sandbox as the cache shows it.
    pub fn cached_tenant(&self, id: &SandboxId) -> Option<String> {
        let pod = self.cache.pod(&manifests::pod_name(id))?;
        Some(objects::tenant_of(&pod.metadata).to_string())
    }
}
