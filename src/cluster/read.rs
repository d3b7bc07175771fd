//! Reading sandboxes: one, all, or one once it is ready. From the watch cache when it is
//! synced (no apiserver call), otherwise from the apiserver.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};

use super::{Cluster, Error, Result};
use crate::{
    k8s::{
        manifests, read as objects,
        record::{self, PodRecord, ServiceRecord, SuspendedRecord},
    },
    sandbox::{Listed, Phase, Sandbox, SandboxId, SandboxStatus},
};

/// Reasons that mean a sandbox will not become ready by waiting.
const HOPELESS_REASONS: [&str; 9] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CrashLoopBackOff",
    "Unschedulable",
    "CreateContainerConfigError",
    "CreateContainerError",
    "Terminating",
    // Only a resume wakes it, and reading it is not one.
    "Suspended",
];

/// Ready, or never going to be without someone changing something.
fn done_waiting(status: &SandboxStatus) -> bool {
    status.ready
        || matches!(status.phase, Phase::Failed | Phase::Succeeded)
        || status
            .reason
            .as_deref()
            .is_some_and(|r| HOPELESS_REASONS.contains(&r))
}

/// A sandbox's Pod as the presence check reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPresence {
    /// The Pod's UID (a new one for every Pod the sandbox gets).
    pub uid: Option<String>,
    pub tenant: String,
    /// No Pod: the sandbox is suspended (its record exists).
    pub suspended: bool,
}

impl PodPresence {
    fn of(pod: &PodRecord) -> PodPresence {
        PodPresence {
            uid: (!pod.uid.is_empty()).then(|| pod.uid.to_string()),
            tenant: pod.tenant.to_string(),
            suspended: false,
        }
    }

    fn suspended(record: &SuspendedRecord) -> PodPresence {
        PodPresence {
            uid: None,
            tenant: record.pod.tenant.to_string(),
            suspended: true,
        }
    }
}

/// How a read counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// A caller asked about this sandbox: activity.
    Touch,
    /// Part of a listing: not activity.
    Look,
}

impl Cluster {
    /// The API's view of a sandbox from its objects, with its deadline; a `Touch` counts as
    /// activity. Time-to-ready is recorded the first time it is seen Ready.
    pub(super) fn view(
        &self,
        id: &str,
        pod: &PodRecord,
        service: Option<&ServiceRecord>,
        read: Read,
    ) -> Sandbox {
        let mut sandbox = record::sandbox_view(id, pod, service, &self.spec);
        sandbox.cluster = self.name().to_string();
        if read == Read::Touch {
            self.touch(id, pod);
        }
        let timers = pod.timers(self.lifecycle.timers.ready);
        let created = pod.created.unwrap_or_else(Timestamp::now);
        sandbox.expires_at = timers
            .expires_at(created, self.idle_since(id, pod))
            .map(|t| t.to_string());
        self.note_readiness(&sandbox, pod);
        sandbox
    }

    /// The view of a sandbox from its objects as the apiserver returned them.
    pub(super) fn view_of(&self, pod: &Pod, service: Option<&Service>, read: Read) -> Sandbox {
        let id = objects::sandbox_id_of(&pod.metadata).unwrap_or_default();
        let service = service.map(ServiceRecord::from_service);
        self.view(&id, &PodRecord::from_pod(pod), service.as_ref(), read)
    }

    /// Records time-to-ready (and its steps) the first time this process sees a sandbox Ready.
    fn note_readiness(&self, sandbox: &Sandbox, pod: &PodRecord) {
        if !sandbox.ready || !self.memory.first_ready(&sandbox.sandbox_id) {
            return;
        }
        let created = sandbox
            .created_at
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok());
        if let Some(created) = created {
            if let Ok(waited) = Duration::try_from(Timestamp::now().duration_since(created)) {
                self.metrics.sandbox_ready(waited, pod.start_steps);
            }
        }
    }

    /// One sandbox: from the cache when it is synced and has the pod (no apiserver call),
    /// otherwise from the apiserver (so a miss is confirmed before answering 404).
    pub async fn get(&self, id: &SandboxId) -> Result<Sandbox> {
        let service_name = manifests::service_name(id);
        if self.cache.state().usable() {
            // Suspended: no Pod, or only the one it is leaving.
            if let Some(record) = self.cache.suspended(id.as_str()) {
                if self.holds_suspended(id) {
                    return Ok(self.suspended_view(id.as_str(), &record));
                }
            }
            if let Some(pod) = self.cache.pod(id.as_str()) {
                let service = match self.cache.service(id.as_str()) {
                    Some(s) => Some(s),
                    None => self
                        .calls
                        .get::<Service>(&service_name)
                        .await?
                        .map(|s| Arc::new(ServiceRecord::from_service(&s))),
                };
                return Ok(self.view(id.as_str(), &pod, service.as_deref(), Read::Touch));
            }
        }
        let pod_name = self.pod_name_of(id.as_str()).await?;
        let (pod, service) = tokio::join!(
            self.calls.get::<Pod>(&pod_name),
            self.calls.get::<Service>(&service_name),
        );
        match pod? {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                Ok(self.view_of(&pod, service?.as_ref(), Read::Touch))
            }
            pod => match self.suspended_record(id).await? {
                Some(record) => Ok(self.suspended_view(id.as_str(), &record)),
                None => {
                    let pod = pod.ok_or_else(|| Error::NotFound(id.to_string()))?;
                    Ok(self.view_of(&pod, service?.as_ref(), Read::Touch))
                }
            },
        }
    }

    /// Whether the sandbox's Pod exists (also one that is being deleted), looking at the Pod
    /// only: from the cache when it is usable and holds the Pod, otherwise one read of the
    /// apiserver, so that None is a confirmed absence (any failure is an error). Not activity.
    pub async fn presence(&self, id: &SandboxId) -> Result<Option<PodPresence>> {
        if self.cache.state().usable() {
            if let Some(pod) = self.cache.pod(id.as_str()) {
                return Ok(Some(PodPresence::of(&pod)));
            }
            if let Some(record) = self.cache.suspended(id.as_str()) {
                return Ok(Some(PodPresence::suspended(&record)));
            }
        }
        let pod = self
            .calls
            .get::<Pod>(&self.pod_name_of(id.as_str()).await?)
            .await?;
        if let Some(pod) = pod {
            return Ok(Some(PodPresence::of(&PodRecord::from_pod(&pod))));
        }
        Ok(self
            .suspended_record(id)
            .await?
            .map(|record| PodPresence::suspended(&record)))
    }

    /// Whether the apiserver has the sandbox's pod or its suspended record (false when it
    /// cannot say).
    pub async fn exists(&self, id: &SandboxId) -> bool {
        let Ok(name) = self.pod_name_of(id.as_str()).await else {
            return false;
        };
        matches!(self.calls.get::<Pod>(&name).await, Ok(Some(_)))
            || matches!(self.suspended_record(id).await, Ok(Some(_)))
    }

    /// Counts as activity and returns the sandbox with its new deadline.
    pub async fn keepalive(&self, id: &SandboxId) -> Result<Sandbox> {
        self.get(id).await
    }

    /// Returns as soon as the sandbox is ready or cannot become ready (image pull failure,
    /// crash loop, unschedulable, ended), or after `limit` with its current status. Driven by
    /// the watch; only while the cache is not usable does it poll the apiserver.
    pub async fn wait_ready(&self, id: &SandboxId, limit: Duration) -> Result<Sandbox> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let sandbox = self.get(id).await?;
            let status = SandboxStatus {
                phase: sandbox.status,
                ready: sandbox.ready,
                reason: sandbox.reason.clone(),
                message: None,
            };
            let now = tokio::time::Instant::now();
            if done_waiting(&status) || now >= deadline {
                return Ok(sandbox);
            }
            if self.cache.state().usable() {
                self.cache
                    .wait_for(deadline - now, |c| {
                        !c.state().usable()
                            || c.pod(id.as_str()).is_none_or(|p| done_waiting(&p.status))
                    })
                    .await;
            } else {
                tokio::time::sleep((deadline - now).min(Duration::from_millis(250))).await;
            }
        }
    }

    /// The cached sandboxes, sorted by id. Sorted before the views are built (moving pointers,
    /// not views); services come from the cache's own index (no map built per LIST); a view is
    /// built again only for what changed since the last listing, and while neither the cache
    /// nor the activity noted here changed, the last listing is the answer.
    fn list_cached(&self) -> Vec<Arc<Listed>> {
        let stamp = (self.cache.state().generation, self.memory.version());
        if let Some(unchanged) = self.views.unchanged(stamp) {
            return unchanged;
        }
        let mut pods = self.cache.pods();
        pods.retain(|(id, pod)| !(pod.terminating && self.cache.suspended(id).is_some()));
        let suspended = self.suspended_candidates();
        pods.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut listing = self.views.listing(pods.len());
        let mut listed: Vec<Arc<Listed>> = pods
            .into_iter()
            .map(|(id, pod)| {
                let service = self.cache.service(&id);
                let versions = (
                    Some(&*pod.resource_version),
                    service.as_ref().map(|s| &*s.resource_version),
                );
                let activity = self.memory.last_activity(&id);
                let build = || self.view(&id, &pod, service.as_deref(), Read::Look);
                listing.view(id.clone(), versions.0, versions.1, activity, build)
            })
            .collect();
        if !suspended.is_empty() {
            listed.extend(suspended.iter().map(|(id, record)| {
                Arc::new(Listed::new(self.suspended_view(id.as_str(), record)))
            }));
            listed.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        }
        listing.finish(stamp, &listed);
        listed
    }

    /// All managed sandboxes, sorted by id: from the cache when it is synced (plus those just
    /// created here that the watch has not delivered), otherwise from one pod list and one
    /// service list.
    pub async fn list(&self) -> Result<Vec<Arc<Listed>>> {
        let from_cache = self.cache.state().usable();
        let mut sandboxes: Vec<Arc<Listed>> = if from_cache {
            self.list_cached()
        } else {
            let selector = manifests::managed_selector();
            let suspended_selector = manifests::suspended_selector();
            let (pods, services, suspended) = tokio::join!(
                self.calls.list::<Pod>(&selector),
                self.calls.list::<Service>(&selector),
                self.calls.list::<ConfigMap>(&suspended_selector),
            );
            // Without the configmaps permission (a Role from before suspend) there are none.
            let suspended = match suspended {
                Err(e) if e.is_permission_denied() => Vec::new(),
                other => other?,
            };
            let (pods, services) = (pods?, services?);
            let services: HashMap<String, ServiceRecord> =
                services.iter().filter_map(ServiceRecord::of).collect();
            let live: HashMap<String, PodRecord> = pods
                .iter()
                .filter_map(PodRecord::of)
                .filter(|(_, pod)| !pod.terminating)
                .collect();
            let mut views: Vec<Arc<Listed>> = live
                .iter()
                .map(|(id, pod)| self.view(id, pod, services.get(id), Read::Look))
                .map(|view| Arc::new(Listed::new(view)))
                .collect();
            views.extend(
                suspended
                    .iter()
                    .filter_map(SuspendedRecord::of)
                    .filter(|(id, _)| !live.contains_key(id))
                    .map(|(id, record)| Arc::new(Listed::new(self.suspended_view(&id, &record)))),
            );
            views
        };
        let sorted = if from_cache {
            let unwatched = self.memory.unwatched(&sandboxes, std::time::Instant::now());
            let none = unwatched.is_empty();
            sandboxes.extend(unwatched.into_iter().map(|s| Arc::new(Listed::new(s))));
            none
        } else {
            false
        };
        if !sorted {
            sandboxes.sort_by(|a, b| a.sandbox_id.cmp(&b.sandbox_id));
        }
        self.metrics
            .sandboxes_by_status(sandboxes.iter().map(|s| s.status));
        Ok(sandboxes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase, ready: bool, reason: Option<&str>) -> SandboxStatus {
        SandboxStatus {
            phase,
            ready,
            reason: reason.map(str::to_string),
            message: None,
        }
    }

    #[test]
    fn waiting_ends_when_ready_or_hopeless() {
        assert!(done_waiting(&status(Phase::Running, true, None)));
        assert!(done_waiting(&status(Phase::Failed, false, None)));
        assert!(done_waiting(&status(
            Phase::Pending,
            false,
            Some("ImagePullBackOff")
        )));
        assert!(done_waiting(&status(
            Phase::Running,
            false,
            Some("CrashLoopBackOff")
        )));
        assert!(!done_waiting(&status(
            Phase::Pending,
            false,
            Some("ContainerCreating")
        )));
        assert!(!done_waiting(&status(
            Phase::Running,
            false,
            Some("ContainersNotReady")
        )));
    }
}
