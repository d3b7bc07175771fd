//! The apiserver as the arbiter of quotas across replicas: a create that a limit governs runs
//! under a short Lease (one per tenant, or one for the whole deployment with
//! SANDBOX_MAX_TOTAL) in the first cluster's namespace. The holder that created a pod names
//! it on the Lease when it lets go, so the next holder counts that pod even before its own
//! watch has delivered it. Every earlier create is in the watch before that one (one watch per
//! cluster delivers in order), so counting is exact across replicas.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

use crate::tasks::leader::{decide, Decision};

/// How long a lock is held at most when its holder goes away without letting go.
const LOCK_FOR: Duration = Duration::from_secs(5);

/// Annotation prefix on a lock Lease: `<prefix><cluster>` names the pod its last holder
/// created in that cluster.
pub const LAST_CREATED_PREFIX: &str = "sandbox-provisioner.dev/last-created.";

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
    leases: Api<Lease>,
    me: String,
    timeout: Duration,
    /// One create at a time per lock within this process, so that it never races itself.
    local: Mutex<std::collections::HashMap<String, std::sync::Arc<Mutex<()>>>>,
}

/// A lock held; give it back with [`Arbiter::release`].
pub struct Held {
    lease: Lease,
    _local: tokio::sync::OwnedMutexGuard<()>,
    /// Pods the previous holders created, by cluster, that our caches may not show yet.
    pub last_created: Vec<(String, String)>,
}

impl Arbiter {
    pub fn new(client: kube::Client, namespace: &str, me: String, timeout: Duration) -> Arbiter {
        Arbiter {
            leases: Api::namespaced(client, namespace),
            me,
            timeout,
            local: Mutex::default(),
        }
    }

    /// Takes the lock `name`, waiting while another replica holds it (at most the call
    /// timeout).
    pub async fn acquire(&self, name: &str) -> Result<Held, LockError> {
        let local = {
            let mut locks = self.local.lock().await;
            locks.entry(name.to_string()).or_default().clone()
        };
        let guard = local.lock_owned().await;
        let started = std::time::Instant::now();
        let failed = |cause: String| LockError::Kubernetes {
            name: name.into(),
            cause,
        };
        loop {
            if started.elapsed() > self.timeout {
                return Err(LockError::Busy {
                    name: name.into(),
                    waited: started.elapsed(),
                });
            }
            let current = tokio::time::timeout(self.timeout, self.leases.get_opt(name))
                .await
                .map_err(|_| failed("timed out".into()))?
                .map_err(|e| failed(e.to_string()))?;
            let now = Timestamp::now();
            let decision = decide(
                current.as_ref().and_then(|l| l.spec.as_ref()),
                &self.me,
                now,
                LOCK_FOR,
            );
            let mut lease = current.unwrap_or_else(|| Lease {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    ..ObjectMeta::default()
                },
                spec: None,
            });
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(self.me.clone()),
                lease_duration_seconds: Some(LOCK_FOR.as_secs() as i32),
                renew_time: Some(MicroTime(now)),
                acquire_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            });
            let pp = PostParams::default();
            let written = match decision {
                Decision::Follow => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Decision::Create => {
                    tokio::time::timeout(self.timeout, self.leases.create(&pp, &lease)).await
                }
                Decision::Take => {
                    tokio::time::timeout(self.timeout, self.leases.replace(name, &pp, &lease)).await
                }
            };
            match written {
                Ok(Ok(lease)) => {
                    let last_created = lease
                        .metadata
                        .annotations
                        .iter()
                        .flatten()
                        .filter_map(|(k, v)| {
                            Some((k.strip_prefix(LAST_CREATED_PREFIX)?.to_string(), v.clone()))
                        })
                        .collect();
                    return Ok(Held {
                        lease,
                        _local: guard,
                        last_created,
                    });
                }
                // Another replica wrote first: read again.
                Ok(Err(kube::Error::Api(e))) if e.code == 409 => continue,
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(_) => return Err(failed("timed out".into())),
            }
        }
    }

    /// Lets go of the lock, naming the pod this holder created (cluster, pod name), if any.
    /// A lock that expired and was taken over meanwhile is left to its new holder.
    pub async fn release(&self, held: Held, created: Option<(&str, &str)>) {
        let Held { mut lease, .. } = held;
        let name = lease.metadata.name.clone().unwrap_or_default();
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        if let Some((cluster, pod)) = created {
            lease
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(format!("{LAST_CREATED_PREFIX}{cluster}"), pod.to_string());
        }
        let pp = PostParams::default();
        let call = self.leases.replace(&name, &pp, &lease);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {}
            Ok(Err(e)) => {
                tracing::warn!(lock = %name, error = %e, "letting go of a quota lock failed; it expires by itself within 5 s")
            }
            Err(_) => {
                tracing::warn!(lock = %name, "letting go of a quota lock timed out; it expires by itself within 5 s")
            }
        }
    }
}

/// The lock a create by `tenant` takes: the deployment's with SANDBOX_MAX_TOTAL, else the
/// tenant's when it has a limit that counts sandboxes, else none.
pub fn lock_name(tenant: &crate::admission::Tenant, max_total: Option<usize>) -> Option<String> {
    if max_total.is_some() {
        Some("sandbox-provisioner-quota".into())
    } else if tenant.limits.counts_sandboxes() {
        Some(format!("sandbox-provisioner-quota-{}", tenant.name))
    } else {
        None
    }
}
