//! Suspending and resuming a sandbox.
//!
//! ```text
//!  suspend:  record (ConfigMap: the Pod's labels + annotations) ─► delete Pod, Service, policy
//!  resume:   record ─► the request ─► create (warm or cold, the sandbox's own creation time)
//!                                      ─► delete the record
//! ```
//!
//! The record is written before the Pod goes and removed only after the new Pod exists, so a
//! crash in between leaves at worst both: reads prefer the Pod, and the next suspend or the
//! sweep removes the stale record. Files under host paths or claims stay where they are.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};

use super::{expiry, Cluster, Error, Provisioned, Result};
use crate::{
    k8s::{
        manifests::{self, SuspendTrigger},
        read as objects,
        record::{self, SuspendedRecord},
    },
    sandbox::{Sandbox, SandboxId, SandboxRequest},
};

/// What woke a suspended sandbox (the metrics' `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeTrigger {
    /// `POST /api/sandboxes/{id}/resume`.
    Api,
    /// A request through the gateway.
    Traffic,
    /// A `POST /api/sandboxes` for the suspended id.
    Create,
}

impl ResumeTrigger {
    pub fn label(self) -> &'static str {
        match self {
            ResumeTrigger::Api => "api",
            ResumeTrigger::Traffic => "traffic",
            ResumeTrigger::Create => "create",
        }
    }
}

/// How long a suspend or resume waits for the watch to show its change, so that a read right
/// after it from this service sees it.
const CACHE_CATCH_UP: Duration = Duration::from_secs(2);

/// How long a resume waits for the suspended Pod to leave (it is deleted at once; the watch
/// delivers that within moments).
const POD_LEAVING_WAIT: Duration = Duration::from_secs(10);

/// How long the replica that took a resume has before another one takes it over (it may have
/// stopped half-way); a cold resume creates its Pod within seconds.
const RESUME_TAKEN_FOR: Duration = Duration::from_secs(30);

/// How long after a resume its sandbox is watched for readiness, for the resume histogram.
const RESUME_OBSERVED_FOR: Duration = Duration::from_secs(300);

impl Cluster {
    /// The suspended sandbox's record: from the cache when it is usable, otherwise from the
    /// apiserver (so that None is a confirmed absence, or a record this service may not read).
    pub async fn suspended_record(&self, id: &SandboxId) -> Result<Option<Arc<SuspendedRecord>>> {
        if self.cache.state().usable() {
            return Ok(self.cache.suspended(id.as_str()));
        }
        let name = manifests::suspended_record_name(id);
        let found = match self.calls.get::<ConfigMap>(&name).await {
            Ok(found) => found,
            // A Role from before suspend (no configmaps): there can be no records to read,
            // and creates and reads must go on. The refusal is logged and on /readyz.
            Err(e) if e.is_permission_denied() => None,
            Err(e) => return Err(e.into()),
        };
        Ok(found
            .as_ref()
            .and_then(SuspendedRecord::of)
            .map(|(_, record)| Arc::new(record)))
    }

    /// The API's view of a suspended sandbox: its URL (in gateway mode; the Service is gone in
    /// direct mode), `Suspended`, no container, and when it will be deleted.
    pub(super) fn suspended_view(&self, id: &str, record: &SuspendedRecord) -> Sandbox {
        let mut sandbox = record::sandbox_view(id, &record.pod, None, &self.spec);
        sandbox.cluster = self.name().to_string();
        sandbox.expires_at = expiry::suspended_deadline(record, self.lifecycle.suspended_max_age)
            .map(|t| t.to_string());
        sandbox
    }

    /// Suspends the sandbox: writes its record, then removes its Pod, Service and
    /// NetworkPolicy. Suspending a suspended sandbox answers the same again.
    pub async fn suspend(&self, id: &SandboxId, trigger: SuspendTrigger) -> Result<Sandbox> {
        let pod_name = self.pod_name_of(id.as_str()).await?;
        let Some(pod) = self.calls.get::<Pod>(&pod_name).await? else {
            return match self.suspended_record(id).await? {
                Some(record) => Ok(self.suspended_view(id.as_str(), &record)),
                None => Err(Error::NotFound(id.to_string())),
            };
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Err(Error::Terminating(id.to_string()));
        }
        if objects::request_of(&pod).is_none() {
            return Err(Error::NotSuspendable(id.to_string()));
        }
        let now = Timestamp::now();
        let mut wanted = manifests::suspended_record(id, &pod, now, trigger);
        // The latest activity seen here goes with it (a restarted replica reads it there).
        if let Some(seen) = self.memory.last_activity(id.as_str()) {
            let written = objects::activity_of(&pod);
            if written.is_none_or(|w| w < seen) {
                wanted
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(manifests::ACTIVITY_ANNOTATION.to_string(), seen.to_string());
            }
        }
        let created = match self.calls.create(&wanted).await {
            Ok(created) => created,
            // Left by an earlier suspend whose resume did not finish: this one replaces it.
            Err(e) if e.is_already_exists() => {
                let name = manifests::suspended_record_name(id);
                self.calls.delete::<ConfigMap>(&name).await?;
                self.calls.create(&wanted).await?
            }
            Err(e) => return Err(e.into()),
        };
        let service_name = manifests::service_name(id);
        let (service, pod) = tokio::join!(
            self.calls.delete::<Service>(&service_name),
            self.calls.delete::<Pod>(&pod_name),
        );
        service?;
        pod?;
        if self.policies_on() {
            self.calls
                .delete::<k8s_openapi::api::networking::v1::NetworkPolicy>(
                    &manifests::network_policy_name(id),
                )
                .await?;
        }
        self.metrics.suspended(trigger.label());
        tracing::info!(sandbox_id = %id, trigger = trigger.label(), "sandbox suspended");
        if self.cache.state().usable() {
            self.cache
                .wait_for(CACHE_CATCH_UP, |c| {
                    c.pod(id.as_str()).is_none() && c.suspended(id.as_str()).is_some()
                })
                .await;
        }
        self.memory.forget(id.as_str());
        let record = match self.cache.suspended(id.as_str()) {
            Some(record) => record,
            None => SuspendedRecord::of(&created)
                .map(|(_, r)| Arc::new(r))
                .ok_or_else(|| Error::NotFound(id.to_string()))?,
        };
        Ok(self.suspended_view(id.as_str(), &record))
    }

    /// Whether the sandbox has a live Pod (from the cache when usable).
    pub(super) async fn awake(&self, id: &SandboxId) -> Result<bool> {
        if self.cache.state().usable() {
            return Ok(self.cache.pod(id.as_str()).is_some_and(|p| !p.terminating));
        }
        let pod = self
            .calls
            .get::<Pod>(&self.pod_name_of(id.as_str()).await?)
            .await?;
        Ok(pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none()))
    }

    /// Gives a suspended sandbox a Pod again, from its record: warm when its size has a ready
    /// pool Pod, cold otherwise, with its own creation time (so its URL and lifetime stay),
    /// and then removes the record. Concurrent resumes here wait for one; across replicas, the
    /// one that takes the record (a conditional patch) resumes and the others wait for its
    /// Pod. A sandbox that is awake is returned as it is.
    pub(crate) async fn resume(
        &self,
        id: &SandboxId,
        trigger: ResumeTrigger,
    ) -> Result<Provisioned> {
        let started = Instant::now();
        let turn = self.memory.resume_turn(id.as_str());
        let _turn = turn.lock().await;
        let mut taken = false;
        // Twice: a replica that took the resume and then vanished is waited for once.
        for _ in 0..2 {
            if self.awake(id).await? {
                return self.as_it_is(id).await;
            }
            let record = self
                .suspended_record(id)
                .await?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            if self.take_resume(id, &record).await? {
                taken = true;
                break;
            }
            // Another replica resumes it: its Pod is the answer.
            if self.wait_awake(id, RESUME_TAKEN_FOR).await {
                return self.as_it_is(id).await;
            }
        }
        if !taken {
            return Err(Error::Terminating(id.to_string()));
        }
        // Read again: the record as taken (the cache may be a moment behind).
        let name = manifests::suspended_record_name(id);
        let record = self
            .calls
            .get::<ConfigMap>(&name)
            .await?
            .as_ref()
            .and_then(SuspendedRecord::of)
            .map(|(_, r)| r)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let request = record
            .request
            .as_deref()
            .ok_or_else(|| Error::NotSuspendable(id.to_string()))?;
        // The suspended Pod was deleted at once, but the watch may not have delivered that:
        // until it has, the cache would mix the two Pods of one id.
        if self.cache.state().usable()
            && !self
                .cache
                .wait_for(POD_LEAVING_WAIT, |c| c.pod(id.as_str()).is_none())
                .await
        {
            return Err(Error::Terminating(id.to_string()));
        }
        let created_at = record.pod.created.unwrap_or(record.suspended_at);
        let provisioned = self.create_at(request, created_at).await?;
        if let Err(e) = self.calls.delete::<ConfigMap>(&name).await {
            // Reads prefer the Pod; the next suspend replaces the record.
            tracing::warn!(sandbox_id = %id, error = %e, "the resumed sandbox's record could not \
                be removed; reads show its Pod");
        } else if self.cache.state().usable() {
            self.cache
                .wait_for(CACHE_CATCH_UP, |c| c.suspended(id.as_str()).is_none())
                .await;
        }
        tracing::info!(sandbox_id = %id, trigger = trigger.label(), warm = provisioned.sandbox.ready,
            "sandbox resumed");
        self.observe_resume(id, trigger, started);
        Ok(provisioned)
    }

    /// The sandbox as it is, for a resume that found it awake.
    async fn as_it_is(&self, id: &SandboxId) -> Result<Provisioned> {
        Ok(Provisioned {
            sandbox: self.get(id).await?,
            created: false,
            pod_name: self.pod_name_of(id.as_str()).await?,
        })
    }

    /// Takes the suspended sandbox's resume for this replica: one patch of its record,
    /// conditional on the version read, marks it. False when another replica has it (taken
    /// less than [`RESUME_TAKEN_FOR`] ago) or the record is gone (resumed meanwhile).
    async fn take_resume(&self, id: &SandboxId, record: &SuspendedRecord) -> Result<bool> {
        let name = manifests::suspended_record_name(id);
        let mut version = record.resource_version.to_string();
        let mut since = record.resuming_since;
        for _ in 0..3 {
            let now = Timestamp::now();
            let fresh = |t: Timestamp| {
                Duration::try_from(now.duration_since(t)).is_ok_and(|age| age < RESUME_TAKEN_FOR)
            };
            if since.is_some_and(fresh) {
                return Ok(false);
            }
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": version,
                "annotations": {manifests::RESUMING_SINCE_ANNOTATION: now.to_string()},
            }});
            match self.calls.patch::<ConfigMap>(&name, &patch).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_not_found() => return Ok(false),
                // Changed since it was read: read it again and look.
                Err(e) if e.is_conflict() => {
                    let Some((_, now)) = self
                        .calls
                        .get::<ConfigMap>(&name)
                        .await?
                        .as_ref()
                        .and_then(SuspendedRecord::of)
                    else {
                        return Ok(false);
                    };
                    version = now.resource_version.to_string();
                    since = now.resuming_since;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Waits until the sandbox has a live Pod (watch-driven; polled while the cache is not
    /// usable). Returns whether it does within `limit`.
    async fn wait_awake(&self, id: &SandboxId, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.awake(id).await.unwrap_or(false) {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.cache.state().usable() {
                self.cache
                    .wait_for(left, |c| {
                        !c.state().usable() || c.pod(id.as_str()).is_some_and(|p| !p.terminating)
                    })
                    .await;
            } else {
                tokio::time::sleep(left.min(Duration::from_millis(250))).await;
            }
        }
    }

    /// Counts a resume, and records its time to ready once the watch shows it (in the
    /// background: a resume answers before a cold Pod is ready).
    fn observe_resume(&self, id: &SandboxId, trigger: ResumeTrigger, started: Instant) {
        self.metrics.resumed(trigger.label());
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let ready = cache
                .wait_for(RESUME_OBSERVED_FOR, |c| {
                    c.pod(&id).is_some_and(|p| p.status.ready)
                })
                .await;
            if ready {
                metrics.resume_ready(started.elapsed());
            }
        });
    }
}

impl Cluster {
    /// A create for a suspended sandbox: resumed when it is the same tenant's, thread's and
    /// user's (the create's other fields are those the sandbox was created with).
    pub(crate) async fn resume_for(
        &self,
        request: &SandboxRequest,
        trigger: ResumeTrigger,
    ) -> Result<Provisioned> {
        let id = &request.id;
        if let Some(record) = self.suspended_record(id).await? {
            let pod = &record.pod;
            if *pod.tenant != *request.tenant {
                return Err(Error::Taken(id.to_string()));
            }
            let existing = pod.thread.as_deref().unwrap_or_default();
            if existing != request.thread.as_str() {
                return Err(Error::ThreadConflict {
                    id: id.to_string(),
                    existing: existing.to_string(),
                    requested: request.thread.to_string(),
                });
            }
            if pod.user() != request.user.as_str() {
                return Err(Error::UserConflict {
                    id: id.to_string(),
                    existing: pod.user().to_string(),
                    requested: request.user.to_string(),
                });
            }
        }
        self.resume(id, trigger).await
    }
}
