//! The apiserver as the arbiter of quotas across replicas: a create that a limit governs runs
//! under a short Lease (one per tenant, or one for the whole deployment with
//! SANDBOX_MAX_TOTAL; `admission::lock_name`) in the first cluster's namespace. The holder
//! that created a pod names it on the Lease when it lets go, so the next holder counts that pod
//! even before its own watch has delivered it. Every earlier create is in the watch before that
//! one (one watch per cluster delivers in order), so counting is exact across replicas.

use std::time::{Duration, Instant};

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use tokio::sync::Mutex;

use crate::{
    k8s::lease::{Attempt, Backoff, Leases},
    spec::keys::LAST_CREATED_PREFIX,
};

/// How long a lock is held at most when its holder goes away without letting go.
const LOCK_FOR: Duration = Duration::from_secs(5);

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the quota lock {name} stayed busy for {waited:?}; retry in a moment")]
    Busy { name: String, waited: Duration },
    #[error("the quota lock {name} cannot be taken: {cause}")]
    Kubernetes { name: String, cause: String },
}

/// The quota locks of one process.
pub struct Arbiter {
    leases: Leases,
    /// How long a create waits for a lock another replica holds.
    timeout: Duration,
    /// One create at a time per lock within this process, so that it never races itself.
    local: Mutex<std::collections::HashMap<String, std::sync::Arc<Mutex<()>>>>,
}

/// A quota lock held; give it back with [`Arbiter::release`].
pub struct QuotaLock {
    lease: Lease,
    _local: tokio::sync::OwnedMutexGuard<()>,
    /// Pods the previous holders created, by cluster, that our caches may not show yet.
    pub last_created: Vec<(String, String)>,
}

impl Arbiter {
    pub fn new(leases: Leases, timeout: Duration) -> Arbiter {
        Arbiter {
            leases,
            timeout,
            local: Mutex::default(),
        }
    }

    /// Takes the lock `name`, waiting (with a growing backoff, never past the holder's expiry)
    /// while another replica holds it, at most the call timeout.
    pub async fn acquire(&self, name: &str) -> Result<QuotaLock, LockError> {
        let local = {
            let mut locks = self.local.lock().await;
            locks.entry(name.to_string()).or_default().clone()
        };
        let guard = local.lock_owned().await;
        let started = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            let attempt =
                self.leases
                    .try_take(name, LOCK_FOR)
                    .await
                    .map_err(|e| LockError::Kubernetes {
                        name: name.into(),
                        cause: e.to_string(),
                    })?;
            let until = match attempt {
                Attempt::Held(lease) => {
                    let last_created = lease
                        .metadata
                        .annotations
                        .iter()
                        .flatten()
                        .filter_map(|(k, v)| {
                            Some((k.strip_prefix(LAST_CREATED_PREFIX)?.to_string(), v.clone()))
                        })
                        .collect();
                    return Ok(QuotaLock {
                        lease: *lease,
                        _local: guard,
                        last_created,
                    });
                }
                Attempt::Busy { until } => until,
            };
            let wait = backoff.wait(until, Timestamp::now());
            if started.elapsed() + wait > self.timeout {
                return Err(LockError::Busy {
                    name: name.into(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Lets go of the lock, naming the pod this holder created (cluster, pod name), if any.
    /// A lock that expired and was taken over meanwhile is left to its new holder.
    pub async fn release(&self, held: QuotaLock, created: Option<(&str, &str)>) {
        let QuotaLock { mut lease, .. } = held;
        let name = lease.metadata.name.clone().unwrap_or_default();
        if let Some((cluster, pod)) = created {
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(format!("{LAST_CREATED_PREFIX}{cluster}"), pod.to_string());
        }
        if let Err(e) = self.leases.give_up(lease).await {
            tracing::warn!(lock = %name, error = %e, "letting go of a quota lock failed; it \
                expires by itself within 5 s");
        }
    }
}
