//! Creating a sandbox: its Pod, Service and (when configured) NetworkPolicy, idempotently,
//! with the pod removed again when the rest cannot be made.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};

use super::{read::Read, Cluster, Error, Provisioned, Result};
use crate::k8s::read as objects;
use crate::k8s::record::ServiceRecord;
use crate::{
    k8s::{
        calls::{self, Kind},
        manifests,
    },
    sandbox::{
        mounts::DEFAULT_SKILLS_PATH, SandboxId, SandboxRequest, ThreadId,
        IMAGE_DEFAULT_SHELL_SESSIONS,
    },
};

impl Cluster {
    /// Creates the sandbox, or returns the existing one when it belongs to the same thread and
    /// user and has at least the shell capacity asked for (repairing a missing Service or
    /// NetworkPolicy; a Service left without its Pod gets a new Pod).
    ///
    /// Callers should not cancel this future half-way (run it in its own task): a cancelled
    /// create could leave a Pod without its Service until the next POST repairs it.
    pub async fn create(&self, request: &SandboxRequest) -> Result<Provisioned> {
        // A suspended sandbox the fleet did not see as such (its cache was not synced) is
        // resumed, not made anew beside its record.
        if self.suspended_record(&request.id).await?.is_some() && !self.awake(&request.id).await? {
            return self.resume_for(request, super::ResumeTrigger::Create).await;
        }
        self.create_at(request, Timestamp::now()).await
    }

    /// [`Cluster::create`], with the sandbox's creation time given: a resumed sandbox keeps
    /// its own (its lifetime counts from it, and its gateway URL is bound to it).
    pub(super) async fn create_at(
        &self,
        request: &SandboxRequest,
        created_at: Timestamp,
    ) -> Result<Provisioned> {
        let started = Instant::now();
        let (id, thread) = (&request.id, &request.thread);
        // Asked for, but impossible here: said before anything is written.
        if request.lark.broker && self.spec.lark.broker_image.is_none() {
            return Err(Error::LarkBrokerUnavailable);
        }
        // Before the first pod: whatever happens between the pod and its own policy, the
        // sandbox is then shut off rather than open.
        self.settle_baseline(None).await?;
        // A sandbox that took a pool Pod is found by its label: its Pod has the pool's name.
        let taken_from_pool = self
            .cache
            .pod(id.as_str())
            .and_then(|record| record.pool_name.clone());
        let (mut pod, mut created, mut warm) = match taken_from_pool {
            Some(name) => (self.existing_pod(request, &name).await?, false, false),
            None => match self.claim(request, created_at).await? {
                Some(pod) => (pod, true, true),
                None => {
                    let wanted = manifests::pod(&self.spec, request, created_at);
                    match self.create_pod(&wanted).await {
                        Ok(pod) => (pod, true, false),
                        Err(e) if e.is_already_exists() => (
                            self.existing_pod(request, &manifests::pod_name(id)).await?,
                            false,
                            false,
                        ),
                        Err(e) => return Err(e.into()),
                    }
                }
            },
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        if created && self.spec.warm_pool.on() {
            // Two replicas may have made one Pod each for this id; the one that sees the
            // other's gives its own up and answers with the other's.
            let other = match self.other_holder(id, &pod).await {
                Ok(other) => other,
                Err(e) => {
                    self.roll_back(id, &pod_name).await;
                    return Err(e);
                }
            };
            if let Some(other) = other {
                self.roll_back(id, &pod_name).await;
                let name = other.metadata.name.clone().unwrap_or_default();
                pod = self.existing_pod(request, &name).await?;
                (created, warm) = (false, false);
            }
        }
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let completed = async {
            let service = match self.spec.exposure.has_service() {
                true => Some(self.ensure_service(id, thread, &pod).await?),
                false => None,
            };
            self.ensure_network_policy(id, thread, &pod).await?;
            if warm {
                self.wait_bound(id).await?;
            }
            Ok::<_, Error>(service)
        };
        let service = match completed.await {
            Ok(service) => service,
            Err(e) => {
                if created {
                    self.roll_back(id, &pod_name).await;
                }
                if matches!(e, Error::DataNotBound { .. }) {
                    self.metrics.claim_result("failed", "");
                }
                return Err(e);
            }
        };
        let sandbox = match (warm, self.cache.pod(id.as_str())) {
            // Bound: the watch has the Pod as it is now, ready.
            (true, Some(record)) => {
                let service = service.as_ref().map(ServiceRecord::from_service);
                self.view(id.as_str(), &record, service.as_ref(), Read::Touch)
            }
            _ => self.view_of(&pod, service.as_ref(), Read::Touch),
        };
        if warm {
            self.served_warm(started);
        }
        if created {
            // Until the watch delivers it, LIST shows it from memory (GET confirms a cache
            // miss with the apiserver), so a read right after this write sees it.
            self.memory.created(sandbox.clone(), Instant::now());
            self.metrics.sandbox_created(started.elapsed());
            tracing::info!(sandbox_id = %id, thread_id = %thread, url = %sandbox.sandbox_url,
                warm, "sandbox created");
        }
        Ok(Provisioned {
            sandbox,
            created,
            pod_name,
        })
    }

    /// Creates the pod, creating a missing namespace first and waiting out the moment after a
    /// namespace is created when its default ServiceAccount does not exist yet.
    pub(super) async fn create_pod(&self, pod: &Pod) -> Result<Pod, calls::Error> {
        const SERVICE_ACCOUNT_WAIT: Duration = Duration::from_secs(10);
        let started = Instant::now();
        loop {
            match self.calls.create(pod).await {
                Err(e) if e.is_namespace_missing() && started.elapsed() < SERVICE_ACCOUNT_WAIT => {
                    tracing::info!(
                        namespace = self.namespace(),
                        "namespace is missing; creating it"
                    );
                    self.ensure_namespace().await?;
                }
                Err(e)
                    if e.is_service_account_pending()
                        && started.elapsed() < SERVICE_ACCOUNT_WAIT =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// The pod that a create collided with, if it is this thread's and user's, has the shell
    /// capacity asked for, and is not on its way out.
    async fn existing_pod(&self, request: &SandboxRequest, name: &str) -> Result<Pod> {
        let (id, thread) = (&request.id, &request.thread);
        let pod = self
            .calls
            .get::<Pod>(name)
            .await?
            // Deleted between our create and this read: it is on its way out.
            .ok_or_else(|| Error::Terminating(id.to_string()))?;
        // Before anything else is compared: nothing about another tenant's sandbox is said.
        if objects::tenant_of(&pod.metadata) != request.tenant {
            return Err(Error::Taken(id.to_string()));
        }
        let existing = objects::thread_of(&pod.metadata).unwrap_or_default();
        if existing != thread.as_str() {
            return Err(Error::ThreadConflict {
                id: id.to_string(),
                existing: existing.to_string(),
                requested: thread.to_string(),
            });
        }
        // Pods made before user ids were recorded belong to whoever asks.
        if let Some(existing) = objects::user_of(&pod) {
            if existing != request.user.as_str() {
                return Err(Error::UserConflict {
                    id: id.to_string(),
                    existing: existing.to_string(),
                    requested: request.user.to_string(),
                });
            }
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return Err(Error::Terminating(id.to_string()));
        }
        let skills_path = |path: Option<&str>| path.unwrap_or(DEFAULT_SKILLS_PATH).to_string();
        let (existing, requested) = (
            skills_path(objects::skills_path_of(&pod)),
            skills_path(request.skills_path.as_deref()),
        );
        if existing != requested {
            return Err(Error::SkillsPathConflict {
                id: id.to_string(),
                existing,
                requested,
            });
        }
        let existing_has_broker = objects::has_lark_broker(&pod);
        if existing_has_broker != self.spec.lark.effective(request.lark).broker {
            return Err(Error::LarkConflict {
                id: id.to_string(),
                existing_has_broker,
            });
        }
        if let Some(requested) = request.max_shell_sessions {
            let set = objects::shell_sessions_of(&pod);
            let existing = set.unwrap_or(IMAGE_DEFAULT_SHELL_SESSIONS);
            if existing < requested {
                return Err(Error::ShellCapacity {
                    id: id.to_string(),
                    existing,
                    existing_is_default: set.is_none(),
                    requested,
                });
            }
        }
        Ok(pod)
    }

    /// Returns the pod's Service, creating it when missing and replacing one left over from an
    /// earlier pod of the same name.
    pub(super) async fn ensure_service(
        &self,
        id: &SandboxId,
        thread: &ThreadId,
        pod: &Pod,
    ) -> Result<Service> {
        self.ensure_owned(&manifests::service(&self.spec, id, thread, pod), pod)
            .await
    }

    /// The sandbox's NetworkPolicy, when configured: created when missing, replaced when it was
    /// left over from an earlier pod of the same name.
    pub(super) async fn ensure_network_policy(
        &self,
        id: &SandboxId,
        thread: &ThreadId,
        pod: &Pod,
    ) -> Result<()> {
        match manifests::network_policy(&self.spec, id, thread, pod) {
            Some(wanted) => self.ensure_owned(&wanted, pod).await.map(drop),
            None => Ok(()),
        }
    }

    /// Creates an object that belongs to the pod, or returns the one that exists; an object of
    /// that name owned by an earlier pod of the same sandbox is deleted and made anew.
    async fn ensure_owned<K: Kind>(&self, wanted: &K, pod: &Pod) -> Result<K> {
        let name = wanted.meta().name.clone().unwrap_or_default();
        let kind = K::kind(&()).to_lowercase();
        for _ in 0..3 {
            match self.calls.create(wanted).await {
                Ok(created) => return Ok(created),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
            match self.calls.get::<K>(&name).await? {
                Some(existing) if objects::meta_owned_by(existing.meta(), pod) => {
                    return Ok(existing)
                }
                Some(_) => {
                    tracing::info!(%name, %kind, "replacing an object left over from an earlier \
                        pod");
                    self.calls.delete::<K>(&name).await?;
                }
                None => {}
            }
        }
        Err(Error::KeptReappearing { kind, name })
    }

    /// Removes what this call created when the sandbox could not be completed.
    async fn roll_back(&self, id: &SandboxId, pod_name: &str) {
        let _ = self
            .calls
            .delete::<Service>(&manifests::service_name(id))
            .await;
        match self.calls.delete::<Pod>(pod_name).await {
            Ok(_) => {
                tracing::warn!(sandbox_id = %id, "the sandbox could not be completed; its pod was \
                    removed again")
            }
            Err(e) => {
                tracing::error!(sandbox_id = %id, error = %e, "the sandbox could not be completed \
                    and its pod could not be removed; the next POST for this id repairs it")
            }
        }
    }
}
