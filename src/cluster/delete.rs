//! Deleting a sandbox: its Service, Pod, NetworkPolicy and (when suspended) its record, at
//! once, and everything this process remembers about it.

use std::time::Duration;

use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod, Service},
    networking::v1::NetworkPolicy,
};

use super::{Cluster, Result};
use crate::{k8s::manifests, metrics::DeletionReason as Reason, sandbox::SandboxId};

/// How long a delete waits for the cache to drop the sandbox, so that a read right after it
/// from this service does not see it.
const CACHE_CATCH_UP: Duration = Duration::from_secs(2);

impl Cluster {
    /// Deletes the sandbox's Service and Pod at a caller's request. Returns whether anything
    /// existed.
    pub async fn delete(&self, id: &SandboxId) -> Result<bool> {
        self.remove(id, Reason::Api).await
    }

    /// Deletes the sandbox's objects, counting the deletion under `reason`.
    pub(super) async fn remove(&self, id: &SandboxId, reason: Reason) -> Result<bool> {
        let (pod_name, service_name, record_name) = (
            self.pod_name_of(id.as_str()).await?,
            manifests::service_name(id),
            manifests::suspended_record_name(id),
        );
        let (service, pod, suspended) = tokio::join!(
            self.calls.delete::<Service>(&service_name),
            self.calls.delete::<Pod>(&pod_name),
            self.calls.delete::<ConfigMap>(&record_name),
        );
        let existed = service? | pod? | suspended?;
        if self.policies_on() {
            // The garbage collector would remove it with the pod; this makes it immediate.
            self.calls
                .delete::<NetworkPolicy>(&manifests::network_policy_name(id))
                .await?;
        }
        if existed {
            self.metrics.sandbox_deleted(reason);
            tracing::info!(sandbox_id = %id, "sandbox deleted");
            if self.cache.state().usable() {
                self.cache
                    .wait_for(CACHE_CATCH_UP, |c| {
                        c.pod(id.as_str()).is_none()
                            && c.service(id.as_str()).is_none()
                            && c.suspended(id.as_str()).is_none()
                    })
                    .await;
            }
        }
        self.memory.forget(id.as_str());
        Ok(existed)
    }
}
