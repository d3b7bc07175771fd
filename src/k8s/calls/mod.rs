//! Cluster operations on sandbox objects: each one bounded by a timeout, each failure typed.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use crate::{k8s::refusals::Refusals, metrics::Metrics};
use k8s_openapi::{
    api::core::v1::{Namespace, PersistentVolumeClaim, Pod},
    NamespaceResourceScope,
};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy},
    Api, Client, Resource,
};
use serde::{de::DeserializeOwned, Serialize};

mod error;

pub use error::{error_chain, is_timeout_cause, Error};
/// The wait before retry number `attempt` (from 0): 50 ms doubling up to 1 s, plus up to 50%
/// jitter so that throttled clients do not retry in lockstep.
fn retry_delay(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = (50u64 << attempt.min(5)).min(1000);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    Duration::from_millis(base + h.finish() % (base / 2 + 1))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The namespaced kinds a sandbox is made of (Pod, Service, NetworkPolicy) and that the
/// service reads (PersistentVolumeClaim): one set of timed, retried, counted calls serves all.
pub trait Kind:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Kind for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Access to the sandbox namespace.
#[derive(Clone)]
pub struct Calls {
    client: Client,
    namespace: String,
    namespaces: Api<Namespace>,
    timeout: Duration,
    metrics: Metrics,
    refusals: Refusals,
    post: PostParams,
    delete: DeleteParams,
}

impl Calls {
    pub fn new(
        client: Client,
        namespace: &str,
        timeout: Duration,
        metrics: Metrics,
        refusals: Refusals,
    ) -> Self {
        Calls {
            client: client.clone(),
            namespace: namespace.to_string(),
            namespaces: Api::all(client.clone()),
            timeout,
            metrics,
            refusals,
            post: PostParams::default(),
            delete: DeleteParams {
                grace_period_seconds: Some(0),
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            },
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The client behind these calls (for the leader election's Lease).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The permissions refused so far (shared with the cache and the election).
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Runs one Kubernetes call with the time limit, retrying 429 and 5xx answers (the
    /// apiserver sheds load that way) with jittered exponential backoff for as long as the
    /// time limit allows, then classifies the failure.
    async fn call<T, F, Fut>(
        &self,
        (verb, resource): (&str, &str),
        action: impl Fn() -> String,
        mut request: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = kube::Result<T>>,
    {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            self.metrics.kube_request(verb, resource);
            let error = match tokio::time::timeout(self.timeout, request()).await {
                Ok(Ok(value)) => {
                    self.refusals.allowed(verb, resource);
                    return Ok(value);
                }
                Ok(Err(e)) => Error::from_kube(action(), e, self.timeout),
                Err(_) => Error::Timeout {
                    action: action(),
                    timeout: self.timeout,
                },
            };
            self.metrics.kube_error(verb, resource, &error.code_label());
            if error.is_permission_denied() {
                if let Error::Refused { message, .. } = &error {
                    self.refusals.refused(verb, resource, message);
                }
            }
            let delay = retry_delay(attempt);
            if !error.is_retryable_answer() || started.elapsed() + delay > self.timeout {
                return Err(error);
            }
            tracing::debug!(error = %error, ?delay, attempt, "retrying a Kubernetes call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Creates the namespace when it does not exist. Returns whether it was created.
    pub async fn ensure_namespace(&self, namespace: &Namespace) -> Result<bool> {
        let name = &self.namespace;
        let found = self
            .call(
                ("get", "namespaces"),
                || format!("read namespace {name}"),
                || self.namespaces.get_opt(name),
            )
            .await?;
        if let Some(found) = found {
            if found.status.and_then(|s| s.phase).as_deref() == Some("Terminating") {
                return Err(Error::Refused {
                    action: format!("use namespace {name}"),
                    code: 409,
                    reason: "NamespaceTerminating".into(),
                    message: format!(
                        "namespace {name} is being deleted; it is created again once it is gone"
                    ),
                    kind: Some("namespaces".into()),
                });
            }
            return Ok(false);
        }
        match self
            .call(
                ("create", "namespaces"),
                || format!("create namespace {name}"),
                || self.namespaces.create(&self.post, namespace),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates one object of a sandbox.
    pub async fn create<K: Kind>(&self, object: &K) -> Result<K> {
        let name = object.meta().name.as_deref().unwrap_or_default();
        let api = self.api::<K>();
        self.call(
            ("create", &K::plural(&())),
            || self.describe::<K>("create", name),
            || api.create(&self.post, object),
        )
        .await
    }

    /// Reads one object; None when it does not exist.
    pub async fn get<K: Kind>(&self, name: &str) -> Result<Option<K>> {
        let api = self.api::<K>();
        self.call(
            ("get", &K::plural(&())),
            || self.describe::<K>("read", name),
            || api.get_opt(name),
        )
        .await
    }

    /// Lists the objects of one kind matching a label selector.
    pub async fn list<K: Kind>(&self, selector: &str) -> Result<Vec<K>> {
        let (api, params) = (self.api::<K>(), ListParams::default().labels(selector));
        self.call(
            ("list", &K::plural(&())),
            || format!("list {} in namespace {}", K::plural(&()), self.namespace),
            || api.list(&params),
        )
        .await
        .map(|l| l.items)
    }

    /// Deletes one object at once (grace period 0, dependents in the background): sandboxes
    /// keep nothing worth a graceful stop (user data lives on the host path or a claim) and the
    /// name becomes free for re-creation. Returns whether it existed.
    pub async fn delete<K: Kind>(&self, name: &str) -> Result<bool> {
        let api = self.api::<K>();
        let deleted = self
            .call(
                ("delete", &K::plural(&())),
                || self.describe::<K>("delete", name),
                || api.delete(name, &self.delete),
            )
            .await;
        absent_is_ok(deleted)
    }

    /// Replaces one object with `object`, which carries the resourceVersion it was read at: a
    /// write in between makes this a 409 (`is_conflict`), so two writers never both win.
    pub async fn replace<K: Kind>(&self, object: &K) -> Result<K> {
        let name = object.meta().name.as_deref().unwrap_or_default();
        let api = self.api::<K>();
        self.call(
            ("update", &K::plural(&())),
            || self.describe::<K>("update", name),
            || api.replace(name, &self.post, object),
        )
        .await
    }

    /// Sets one annotation on a pod (a merge patch: nothing else changes). The apiserver
    /// answers with the pod's metadata only, not the whole pod: activity writes come in bursts,
    /// and decoding thousands of pods would take the cores reads need.
    pub async fn annotate_pod(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        let pods = self.api::<Pod>();
        self.call(
            ("patch", "pods"),
            || format!("annotate pod {name} in namespace {}", self.namespace),
            || pods.patch_metadata(name, &params, &patch),
        )
        .await
        .map(drop)
    }

    /// Applies a merge patch to a pod and returns the pod. A patch that names a
    /// resourceVersion is conditional: a write in between makes it a 409 (`is_conflict`).
    pub async fn patch_pod(&self, name: &str, patch: &serde_json::Value) -> Result<Pod> {
        self.patch::<Pod>(name, patch).await
    }

    /// Applies a merge patch to one object and returns it (conditional as [`Calls::patch_pod`]).
    pub async fn patch<K: Kind>(&self, name: &str, patch: &serde_json::Value) -> Result<K> {
        let (params, patch) = (PatchParams::default(), Patch::Merge(patch));
        let api = self.api::<K>();
        self.call(
            ("patch", &K::plural(&())),
            || self.describe::<K>("patch", name),
            || api.patch(name, &params, &patch),
        )
        .await
    }

    /// Asks the apiserver to validate (and admit) a pod without creating it.
    pub async fn dry_run_pod(&self, pod: &Pod) -> Result<Pod> {
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let pods = self.api::<Pod>();
        self.call(
            ("create", "pods"),
            || format!("dry-run a sandbox pod in namespace {}", self.namespace),
            || pods.create(&params, pod),
        )
        .await
    }

    /// Whether a PersistentVolumeClaim of this namespace exists.
    pub async fn pvc_exists(&self, name: &str) -> Result<bool> {
        let claims = self.api::<PersistentVolumeClaim>();
        self.call(
            ("get", "persistentvolumeclaims"),
            || {
                format!(
                    "read persistentvolumeclaim {name} in namespace {}",
                    self.namespace
                )
            },
            || claims.get_opt(name),
        )
        .await
        .map(|c| c.is_some())
    }

    fn api<K: Kind>(&self) -> Api<K> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// "create service sandbox-x-svc in namespace ns", for errors and logs.
    fn describe<K: Kind>(&self, verb: &str, name: &str) -> String {
        format!(
            "{verb} {} {name} in namespace {}",
            K::kind(&()).to_lowercase(),
            self.namespace
        )
    }
}

fn absent_is_ok<T>(result: Result<T>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: u16, reason: &str, kind: Option<&str>) -> Error {
        Error::Refused {
            action: "x".into(),
            code,
            reason: reason.into(),
            message: "m".into(),
            kind: kind.map(Into::into),
        }
    }

    #[test]
    fn classification() {
        assert!(refused(409, "AlreadyExists", None).is_already_exists());
        assert!(!refused(409, "Conflict", None).is_already_exists());
        assert!(refused(404, "NotFound", Some("namespaces")).is_namespace_missing());
        assert!(!refused(404, "NotFound", Some("pods")).is_namespace_missing());
        assert!(refused(503, "ServiceUnavailable", None).is_unavailable());
        let sa = Error::Refused {
            action: "x".into(),
            code: 403,
            reason: "Forbidden".into(),
            message: "pods \"p\" is forbidden: error looking up service account ns/default: \
                serviceaccount \"default\" not found"
                .into(),
            kind: Some("pods".into()),
        };
        assert!(sa.is_service_account_pending());
        assert!(!refused(403, "Forbidden", None).is_service_account_pending());
        assert!(refused(429, "TooManyRequests", None).is_unavailable());
        assert!(!refused(403, "Forbidden", None).is_unavailable());
        let t = Error::Timeout {
            action: "a".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(t.is_unavailable());
    }

    #[test]
    fn retry_delays_grow_and_stay_bounded() {
        for attempt in 0..20 {
            let d = retry_delay(attempt);
            let base = (50u64 << attempt.min(5)).min(1000);
            assert!(
                d >= Duration::from_millis(base) && d <= Duration::from_millis(base * 3 / 2),
                "{attempt}: {d:?}"
            );
        }
    }

    #[test]
    fn error_chain_shows_the_root_cause() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = kube::Error::ReadEvents(inner);
        let text = error_chain(&outer);
        assert!(text.contains("connection refused"), "{text}");
    }
}
