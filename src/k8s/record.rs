//! Compact records of a sandbox's Pod and Service: exactly what reads, the reaper, the sweep,
//! quotas and (later) the gateway use, built from watch events, create answers and direct
//! reads alike. A few hundred bytes each, where the API objects take kilobytes: the watch
//! cache keeps nothing else.

use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod, Service},
    jiff::Timestamp,
};

use super::{read as objects, status::status_of};
use crate::spec::keys::{
    POOL_LABEL, POOL_POD_PREFIX, RESUMING_SINCE_ANNOTATION, SUSPENDED_AT_ANNOTATION,
    SUSPENDED_LABEL,
};
use crate::{
    sandbox::{Phase, Sandbox, SandboxRequest, SandboxStatus, StartSteps, Timers, DEFAULT_USER_ID},
    spec::{Exposure, SandboxSpec, SandboxUrls},
};

/// A sandbox's Pod, as the service uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodRecord {
    pub uid: Box<str>,
    /// Changes with every write to the Pod (LIST keeps a sandbox's view until it does).
    pub resource_version: Box<str>,
    /// The apiserver's creation time (the sweep's grace counts from it).
    pub creation: Option<Timestamp>,
    /// When the provisioner created the sandbox (its annotation, else the creation time).
    pub created: Option<Timestamp>,
    /// Being deleted.
    pub terminating: bool,
    pub tenant: Box<str>,
    pub thread: Option<Box<str>>,
    /// None for pods made before user ids were recorded.
    pub user: Option<Box<str>>,
    /// Lifetime and idle timeout in seconds (0: none).
    pub lifetime: u32,
    pub idle: u32,
    /// The last activity a provisioner wrote on the Pod.
    pub activity: Option<Timestamp>,
    /// CPU cores and memory bytes of the sandbox container's limits, as recorded on the Pod
    /// (None for pods made before they were recorded).
    pub limits: Option<(f64, f64)>,
    pub shell_sessions: Option<u32>,
    pub skills_path: Option<Box<str>>,
    pub status: SandboxStatus,
    /// The steps of its start, once it is Ready.
    pub start_steps: Option<StartSteps>,
    /// The Pod's IP on the pod network, once it has one.
    pub ip: Option<Box<str>>,
    /// The Pod's name when it is not `sandbox-{id}`: a claimed warm pool Pod keeps its own.
    pub pool_name: Option<Box<str>>,
}

impl PodRecord {
    /// The sandbox id and the record of a managed Pod (None without a `sandbox-id` label).
    pub fn of(pod: &Pod) -> Option<(String, PodRecord)> {
        Some((
            objects::sandbox_id_of(&pod.metadata)?,
            PodRecord::from_pod(pod),
        ))
    }

    /// The record of a Pod.
    pub fn from_pod(pod: &Pod) -> PodRecord {
        let meta = &pod.metadata;
        let timers = objects::timers_of(pod, std::time::Duration::ZERO);
        let seconds = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let limits = objects::limits_of(pod).map(|l| cpu_and_memory(&l));
        PodRecord {
            uid: meta.uid.as_deref().unwrap_or_default().into(),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            creation: meta.creation_timestamp.as_ref().map(|t| t.0),
            created: objects::created_of(pod),
            terminating: meta.deletion_timestamp.is_some(),
            tenant: objects::tenant_of(meta).into(),
            thread: objects::thread_of(meta).map(Into::into),
            user: objects::user_of(pod).map(Into::into),
            lifetime: seconds(timers.lifetime),
            idle: seconds(timers.idle),
            activity: objects::activity_of(pod),
            limits,
            shell_sessions: objects::shell_sessions_of(pod),
            skills_path: objects::skills_path_of(pod).map(Into::into),
            status: status_of(pod),
            start_steps: objects::start_steps(pod),
            ip: pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .map(Into::into),
            pool_name: meta
                .name
                .as_deref()
                .filter(|name| name.starts_with(POOL_POD_PREFIX))
                .map(Into::into),
        }
    }

    /// The name of the sandbox's Pod.
    pub fn pod_name(&self, id: &str) -> String {
        match &self.pool_name {
            Some(name) => name.to_string(),
            None => crate::k8s::manifests::pod_name(id),
        }
    }

    /// The timers the sandbox was created with (the ready timeout is the service's own).
    pub fn timers(&self, ready: std::time::Duration) -> Timers {
        let secs = |s: u32| std::time::Duration::from_secs(s.into());
        Timers {
            lifetime: secs(self.lifetime),
            idle: secs(self.idle),
            ready,
        }
    }

    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(DEFAULT_USER_ID)
    }
}

/// CPU cores and memory bytes of a set of limits (unparsable or absent: 0).
pub fn cpu_and_memory(limits: &std::collections::BTreeMap<String, String>) -> (f64, f64) {
    let value = |key: &str| {
        limits
            .get(key)
            .and_then(|q| crate::sandbox::parse_quantity(q))
            .unwrap_or(0.0)
    };
    (value("cpu"), value("memory"))
}

/// A warm pool's Pod, claimed or not, as the pool keeper and claims use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPodRecord {
    pub pool: Box<str>,
    pub resource_version: Box<str>,
    pub creation: Option<Timestamp>,
    /// Its containers are running and ready: a claim answers at once.
    pub ready: bool,
    /// It ended, and will not serve (the keeper replaces it).
    pub failed: bool,
    pub terminating: bool,
    /// It belongs to a sandbox now.
    pub claimed: bool,
}

impl PoolPodRecord {
    /// The name and record of a pool Pod (None without the pool label).
    pub fn of(pod: &Pod) -> Option<(String, PoolPodRecord)> {
        let meta = &pod.metadata;
        let pool = meta.labels.as_ref()?.get(POOL_LABEL)?;
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref());
        let containers_ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "ContainersReady" && c.status == "True");
        Some((
            meta.name.clone()?,
            PoolPodRecord {
                pool: pool.as_str().into(),
                resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
                creation: meta.creation_timestamp.as_ref().map(|t| t.0),
                ready: phase == Some("Running") && containers_ready,
                failed: matches!(phase, Some("Failed" | "Succeeded")),
                terminating: meta.deletion_timestamp.is_some(),
                claimed: objects::sandbox_id_of(meta).is_some(),
            },
        ))
    }
}

/// A suspended sandbox's record (its ConfigMap), as reads, resumes and expiry use it.
#[derive(Debug, Clone)]
pub struct SuspendedRecord {
    /// The sandbox as its Pod was: identity, timers, creation, activity, limits. Its uid is
    /// empty (no container), its status `Suspended`.
    pub pod: PodRecord,
    /// The record's own uid and resourceVersion (taking its resume is conditional on it).
    pub uid: Box<str>,
    pub resource_version: Box<str>,
    /// When a replica took its resume, if one did.
    pub resuming_since: Option<Timestamp>,
    pub suspended_at: Timestamp,
    /// What suspended it (`api`, `idle`).
    pub trigger: Box<str>,
    /// The request a resume makes the sandbox from (None when the record cannot be read back:
    /// a resume then says so).
    pub request: Option<Box<SandboxRequest>>,
}

impl SuspendedRecord {
    /// The sandbox id and record of a suspended sandbox's ConfigMap (None without the labels).
    pub fn of(record: &ConfigMap) -> Option<(String, SuspendedRecord)> {
        let meta = &record.metadata;
        let trigger = meta.labels.as_ref()?.get(SUSPENDED_LABEL)?.as_str().into();
        let id = objects::sandbox_id_of(meta)?;
        // The record carries the Pod's metadata: read back through the same functions.
        let as_pod = Pod {
            metadata: meta.clone(),
            ..Pod::default()
        };
        let suspended_at = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SUSPENDED_AT_ANNOTATION))
            .and_then(|t| t.parse().ok())
            .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let mut pod = PodRecord::from_pod(&as_pod);
        pod.uid = Box::default();
        pod.pool_name = None;
        pod.ip = None;
        pod.start_steps = None;
        pod.status = SandboxStatus {
            phase: Phase::Suspended,
            ready: false,
            reason: Some("Suspended".into()),
            message: Some(format!(
                "suspended at {suspended_at}; its next request through the gateway, a POST \
                 /api/sandboxes for it, or POST /api/sandboxes/{id}/resume wakes it"
            )),
        };
        Some((
            id,
            SuspendedRecord {
                pod,
                uid: meta.uid.as_deref().unwrap_or_default().into(),
                resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
                resuming_since: meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(RESUMING_SINCE_ANNOTATION))
                    .and_then(|t| t.parse().ok()),
                suspended_at,
                trigger,
                request: objects::request_of(&as_pod).map(Box::new),
            },
        ))
    }
}

/// A sandbox's Service, as the service uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    pub name: Box<str>,
    pub resource_version: Box<str>,
    pub creation: Option<Timestamp>,
    /// The uids of the Pods it belongs to.
    pub owners: Box<[Box<str>]>,
    pub node_port: Option<i32>,
}

impl ServiceRecord {
    /// The sandbox id and the record of a managed Service (None without a `sandbox-id` label).
    pub fn of(service: &Service) -> Option<(String, ServiceRecord)> {
        let id = objects::sandbox_id_of(&service.metadata)?;
        Some((id, ServiceRecord::from_service(service)))
    }

    /// The record of a Service.
    pub fn from_service(service: &Service) -> ServiceRecord {
        let meta = &service.metadata;
        ServiceRecord {
            name: meta.name.as_deref().unwrap_or_default().into(),
            resource_version: meta.resource_version.as_deref().unwrap_or_default().into(),
            creation: meta.creation_timestamp.as_ref().map(|t| t.0),
            owners: meta
                .owner_references
                .iter()
                .flatten()
                .filter(|r| r.kind == "Pod")
                .map(|r| r.uid.as_str().into())
                .collect(),
            node_port: objects::node_port(service),
        }
    }

    /// Whether it belongs to this incarnation of the Pod (not to one deleted earlier).
    pub fn owned_by(&self, pod: &PodRecord) -> bool {
        self.owners.contains(&pod.uid)
    }

    /// Where the backend reaches the sandbox through it: the node port on NODE_HOST, or its
    /// cluster DNS name.
    fn url(&self, t: &SandboxSpec) -> Option<String> {
        match &t.exposure {
            Exposure::NodePort { node_host } => {
                self.node_port.map(|p| format!("http://{node_host}:{p}"))
            }
            Exposure::ClusterIp => Some(format!(
                "http://{}.{}.svc.cluster.local:{}",
                self.name, t.namespace, t.port
            )),
            Exposure::None => None,
        }
    }
}

/// The creation a gateway token is bound to: the provisioner's creation time of the Pod, in
/// nanoseconds (a re-created id gets another).
pub fn creation_key(pod: &PodRecord) -> String {
    pod.created
        .or(pod.creation)
        .map(|t| t.as_nanosecond().to_string())
        .unwrap_or_default()
}

/// The API's view of a sandbox, from its Pod and (when present) its Service.
pub fn sandbox_view(
    id: &str,
    pod: &PodRecord,
    service: Option<&ServiceRecord>,
    t: &SandboxSpec,
) -> Sandbox {
    let mut status = pod.status.clone();
    let service_url = service.filter(|s| s.owned_by(pod)).and_then(|s| s.url(t));
    let service_missing = t.exposure.has_service() && service_url.is_none();
    let url = match &t.urls {
        SandboxUrls::Direct => service_url,
        SandboxUrls::Gateway(gateway) => Some(gateway.url(&pod.tenant, id, &creation_key(pod))),
    };
    if service_missing && status.reason.is_none() {
        status.reason = Some("ServiceMissing".into());
        status.message =
            Some("the sandbox's Service is missing; POST /api/sandboxes again to repair it".into());
    }
    Sandbox {
        sandbox_id: id.to_string(),
        sandbox_url: url.unwrap_or_default(),
        status: status.phase,
        ready: status.ready,
        reason: status.reason,
        message: status.message,
        thread_id: pod.thread.as_deref().map(str::to_string),
        user_id: pod.user().to_string(),
        max_shell_sessions: pod.shell_sessions,
        container_id: (!pod.uid.is_empty()).then(|| pod.uid.to_string()),
        created_at: pod.created.map(|t| t.to_string()),
        expires_at: None,
        // The cluster names itself.
        cluster: String::new(),
        tenant: pod.tenant.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{
        cache::{CachedPod, CachedService},
        manifests::{self, test_support::*},
    };

    fn record(pod: &Pod) -> PodRecord {
        PodRecord::of(pod).unwrap().1
    }

    fn service_record(service: &Service) -> ServiceRecord {
        ServiceRecord::of(service).unwrap().1
    }

    #[test]
    fn view_builds_the_url_from_the_node_port() {
        let (id, thread) = ids();
        let t = spec(None, None);
        let p = a_pod(&t);
        let mut s = manifests::service(&t, &id, &thread, &p);
        s.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].node_port = Some(32123);
        let v = sandbox_view("abc-123", &record(&p), Some(&service_record(&s)), &t);
        assert_eq!(v.sandbox_url, "http://host.docker.internal:32123");
        assert_eq!(v.thread_id.as_deref(), Some("thread-456"));
        assert_eq!(v.user_id, "default");
        assert_eq!(v.max_shell_sessions, None);
        assert_eq!(v.container_id.as_deref(), Some("uid-1"), "the pod's UID");
        assert_eq!(v.created_at.as_deref(), Some("1970-01-01T00:00:00Z"));
        let missing = sandbox_view("abc-123", &record(&p), None, &t);
        assert_eq!(missing.sandbox_url, "");
        assert_eq!(missing.reason.as_deref(), Some("ServiceMissing"));
        // A Service of an earlier Pod of the same name gives no URL.
        let mut other = p.clone();
        other.metadata.uid = Some("uid-2".into());
        let stale = sandbox_view("abc-123", &record(&other), Some(&service_record(&s)), &t);
        assert_eq!(stale.reason.as_deref(), Some("ServiceMissing"));
    }

    #[test]
    fn cluster_ip_mode_uses_the_dns_name_and_the_configured_port() {
        let (id, thread) = ids();
        let mut t = spec(None, None);
        t.exposure = Exposure::ClusterIp;
        t.port = 9090;
        let p = a_pod(&t);
        let s = manifests::service(&t, &id, &thread, &p);
        let view = sandbox_view("abc-123", &record(&p), Some(&service_record(&s)), &t);
        assert_eq!(
            view.sandbox_url,
            "http://sandbox-abc-123-svc.deer-flow.svc.cluster.local:9090"
        );
    }

    #[test]
    fn a_record_keeps_what_the_reads_use_from_whole_and_cached_objects_alike() {
        let t = spec(None, None);
        let mut request = a_request();
        request.user = crate::sandbox::UserId::parse("alice").unwrap();
        request.max_shell_sessions = Some(24);
        request.tenant = "team-a".into();
        request.skills_path = Some("/mnt/s".into());
        request.timers.lifetime = std::time::Duration::from_secs(90);
        let mut pod = pod_of(&t, &request);
        pod.metadata.resource_version = Some("7".into());
        pod.metadata.annotations.as_mut().unwrap().insert(
            manifests::ACTIVITY_ANNOTATION.into(),
            "2026-01-01T00:00:00Z".into(),
        );
        pod.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
            }))
            .unwrap(),
        );
        let (id, r) = PodRecord::of(&pod).unwrap();
        assert_eq!(id, "abc-123");
        assert_eq!(
            (
                r.uid.as_ref(),
                r.resource_version.as_ref(),
                r.tenant.as_ref()
            ),
            ("uid-1", "7", "team-a")
        );
        assert_eq!(
            (r.thread.as_deref(), r.user()),
            (Some("thread-456"), "alice")
        );
        assert_eq!((r.lifetime, r.idle, r.shell_sessions), (90, 0, Some(24)));
        assert_eq!(r.skills_path.as_deref(), Some("/mnt/s"));
        assert_eq!(r.activity, Some("2026-01-01T00:00:00Z".parse().unwrap()));
        assert_eq!(r.limits, Some((1.0, 1024.0 * 1024.0 * 1024.0)));
        assert_eq!(r.ip.as_deref(), Some("10.0.0.7"));
        assert!(r.status.ready && !r.terminating);
        assert_eq!(r.created, Some(Timestamp::UNIX_EPOCH));
        // The watch cache decodes a slimmed object: its record is the same.
        let json = serde_json::to_value(&pod).unwrap();
        let cached: CachedPod = serde_json::from_value(json).unwrap();
        let (_, from_cache) = PodRecord::of(&cached).unwrap();
        assert_eq!(from_cache, r);
        let service = manifests::service(&t, &request.id, &request.thread, &pod);
        let json = serde_json::to_value(&service).unwrap();
        let cached: CachedService = serde_json::from_value(json).unwrap();
        assert_eq!(ServiceRecord::of(&cached), ServiceRecord::of(&service));
        assert!(service_record(&service).owned_by(&r));
    }

    #[test]
    fn objects_without_a_sandbox_id_are_not_sandboxes() {
        let t = spec(None, None);
        let mut pod = a_pod(&t);
        let mut service = manifests::service(&t, &a_request().id, &a_request().thread, &pod);
        pod.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(manifests::SANDBOX_ID_LABEL);
        service
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(manifests::SANDBOX_ID_LABEL);
        assert!(PodRecord::of(&pod).is_none());
        assert!(ServiceRecord::of(&service).is_none());
    }

    #[test]
    fn annotations_someone_else_garbled_read_as_absent() {
        let mut pod = a_pod(&spec(None, None));
        let annotations = pod.metadata.annotations.as_mut().unwrap();
        for (key, garbage) in [
            (manifests::ACTIVITY_ANNOTATION, "yesterday"),
            (manifests::TTL_ANNOTATION, "-1"),
            (manifests::IDLE_ANNOTATION, "soon"),
        ] {
            annotations.insert(key.into(), garbage.into());
        }
        let r = record(&pod);
        assert_eq!((r.activity, r.lifetime, r.idle), (None, 0, 0));
        // A Pod with nothing but its id reads as a Pending sandbox of the default tenant.
        let bare = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                labels: Some([(manifests::SANDBOX_ID_LABEL.into(), "bare".into())].into()),
                ..Default::default()
            },
            ..Pod::default()
        };
        let (id, r) = PodRecord::of(&bare).unwrap();
        assert_eq!((id.as_str(), r.tenant.as_ref()), ("bare", "default"));
        assert_eq!(
            (r.status.phase, r.status.ready, r.limits, r.ip),
            (crate::sandbox::Phase::Pending, false, None, None)
        );
    }
}
