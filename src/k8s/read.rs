//! From the objects back to the domain: a pod's timers, creation and activity, which sandbox
//! and thread an object belongs to, and the API's view of a sandbox.

use k8s_openapi::{
    api::core::v1::{Pod, Service},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};

use super::manifests::{
    ACTIVITY_ANNOTATION, CREATED_ANNOTATION, IDLE_ANNOTATION, LARK_BROKER_CONTAINER,
    LIMITS_ANNOTATION, SANDBOX_ID_LABEL, SHELL_SESSIONS_ANNOTATION, SKILLS_PATH_ANNOTATION,
    TENANT_LABEL, THREAD_ANNOTATION, TTL_ANNOTATION, USER_ANNOTATION,
};
use crate::sandbox::Timers;

/// The timers a pod was created with (the ready timeout is the service's own).
pub fn timers_of(pod: &Pod, ready: std::time::Duration) -> Timers {
    let seconds = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.parse::<u64>().ok())
            .map(std::time::Duration::from_secs)
            .unwrap_or_default()
    };
    Timers {
        lifetime: seconds(TTL_ANNOTATION),
        idle: seconds(IDLE_ANNOTATION),
        ready,
    }
}

/// When the pod was created, by the provisioner's annotation or the apiserver's timestamp.
pub fn created_of(pod: &Pod) -> Option<Timestamp> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CREATED_ANNOTATION))
        .and_then(|t| t.parse().ok())
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The steps of a Ready pod's start (creation, scheduled, sandbox container running, Ready),
/// from its status; None while any of them is not recorded.
pub fn start_steps(pod: &Pod) -> Option<crate::sandbox::StartSteps> {
    let status = pod.status.as_ref()?;
    let since = |type_: &str| {
        status
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    };
    let started = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == super::manifests::SANDBOX_CONTAINER)?
        .state
        .as_ref()?
        .running
        .as_ref()?
        .started_at
        .as_ref()?
        .0;
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    let (scheduled, ready) = (since("PodScheduled")?, since("Ready")?);
    let between = |from: Timestamp, to: Timestamp| {
        std::time::Duration::try_from(to.duration_since(from)).unwrap_or_default()
    };
    Some(crate::sandbox::StartSteps {
        scheduled: between(created, scheduled),
        started: between(scheduled, started),
        ready: between(started, ready),
    })
}

/// The last activity written on the pod, if any.
pub fn activity_of(pod: &Pod) -> Option<Timestamp> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ACTIVITY_ANNOTATION))
        .and_then(|t| t.parse().ok())
}

/// The sandbox a managed object belongs to (its `sandbox-id` label).
pub fn sandbox_id_of(meta: &ObjectMeta) -> Option<String> {
    meta.labels.as_ref()?.get(SANDBOX_ID_LABEL).cloned()
}

/// The thread a sandbox object was created for.
pub fn thread_of(meta: &ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()?
        .get(THREAD_ANNOTATION)
        .map(String::as_str)
}

/// The user a sandbox pod was created for, when it says (pods made before user ids did not).
pub fn user_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(USER_ANNOTATION)
        .map(String::as_str)
}

/// The shell-session capacity set on the sandbox container (MAX_SHELL_SESSIONS), if any, as
/// the pod's annotation records it.
pub fn shell_sessions_of(pod: &Pod) -> Option<u32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(SHELL_SESSIONS_ANNOTATION)?
        .parse()
        .ok()
}

/// The skills path the sandbox was created with, when it named its own (None: /mnt/skills).
pub fn skills_path_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(SKILLS_PATH_ANNOTATION)
        .map(String::as_str)
}

/// Whether the pod runs the Lark CLI broker sidecar (read from its spec: a whole pod, not a
/// cached one).
pub fn has_lark_broker(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .any(|c| c.name == LARK_BROKER_CONTAINER)
}

/// Whether an object belongs to this incarnation of the Pod.
pub fn meta_owned_by(meta: &ObjectMeta, pod: &Pod) -> bool {
    let uid = pod.metadata.uid.as_deref();
    meta.owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "Pod" && Some(r.uid.as_str()) == uid)
}

/// The node port the backend reaches the sandbox on.
pub fn node_port(service: &Service) -> Option<i32> {
    service
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))?
        .node_port
}

/// The tenant a sandbox object belongs to; objects made before tenants existed are `default`'s.
pub fn tenant_of(meta: &ObjectMeta) -> &str {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(TENANT_LABEL))
        .map_or("default", String::as_str)
}

/// The request a sandbox was created with, from its Pod's (or its suspended record's)
/// labels and annotations: what a resume makes again. None for objects made before requests
/// were recorded, or whose ids no longer parse.
pub fn request_of(object: &Pod) -> Option<crate::sandbox::SandboxRequest> {
    use crate::sandbox::{SandboxId, SandboxRequest, ThreadId, UserId};
    let meta = &object.metadata;
    let (size, resources, extra_mounts, lark) = super::manifests::stored_part(meta)?;
    let id = SandboxId::parse(&sandbox_id_of(meta)?).ok()?;
    let thread = ThreadId::parse(thread_of(meta)?).ok()?;
    let user = match user_of(object) {
        Some(user) => UserId::parse(user).ok()?,
        None => UserId::default(),
    };
    Some(SandboxRequest {
        size,
        tenant: tenant_of(meta).to_string(),
        user,
        resources,
        timers: timers_of(object, std::time::Duration::ZERO),
        extra_mounts,
        lark,
        max_shell_sessions: shell_sessions_of(object),
        skills_path: skills_path_of(object).map(str::to_string),
        ..SandboxRequest::new(id, thread)
    })
}

/// The sandbox container's limits as the pod records them (None for pods made before they
/// were recorded).
pub fn limits_of(pod: &Pod) -> Option<std::collections::BTreeMap<String, String>> {
    let text = pod.metadata.annotations.as_ref()?.get(LIMITS_ANNOTATION)?;
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifests::test_support::*;

    #[test]
    fn timers_and_times_are_read_from_the_annotations() {
        let t = spec(None, None);
        let mut p = a_pod(&t);
        let annotations = p.metadata.annotations.as_mut().unwrap();
        annotations.insert(TTL_ANNOTATION.into(), "90".into());
        annotations.insert(ACTIVITY_ANNOTATION.into(), "2026-01-01T00:00:00Z".into());
        let timers = timers_of(&p, std::time::Duration::from_secs(5));
        assert_eq!(timers.lifetime, std::time::Duration::from_secs(90));
        assert_eq!(timers.idle, std::time::Duration::ZERO);
        assert_eq!(timers.ready, std::time::Duration::from_secs(5));
        assert_eq!(created_of(&p), Some(Timestamp::UNIX_EPOCH));
        assert_eq!(
            activity_of(&p),
            Some("2026-01-01T00:00:00Z".parse().unwrap())
        );
        assert_eq!(sandbox_id_of(&p.metadata).as_deref(), Some("abc-123"));
        assert_eq!(thread_of(&p.metadata), Some("thread-456"));
    }

    #[test]
    fn start_steps_come_from_the_pod_status() {
        let t = spec(None, None);
        let mut p = a_pod(&t);
        let at = |s: u64| format!("2026-01-01T00:00:{s:02}Z");
        p.metadata.creation_timestamp =
            Some(serde_json::from_value(serde_json::json!(at(0))).unwrap());
        assert_eq!(start_steps(&p), None);
        p.status = Some(
            serde_json::from_value(serde_json::json!({
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": at(1)},
                    {"type": "Ready", "status": "True", "lastTransitionTime": at(24)},
                ],
                "containerStatuses": [{"name": "sandbox", "image": "i", "imageID": "",
                    "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": at(21)}}}],
            }))
            .unwrap(),
        );
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            start_steps(&p),
            Some(crate::sandbox::StartSteps {
                scheduled: secs(1),
                started: secs(20),
                ready: secs(3)
            })
        );
    }

    #[test]
    fn user_and_shell_capacity_are_read_back() {
        let t = spec(None, None);
        let mut request = a_request();
        request.user = crate::sandbox::UserId::parse("alice").unwrap();
        request.max_shell_sessions = Some(24);
        let p = pod_of(&t, &request);
        assert_eq!(user_of(&p), Some("alice"));
        assert_eq!(shell_sessions_of(&p), Some(24));
        // The watch cache keeps no spec: the annotation is enough.
        let mut cached = p.clone();
        cached.spec = None;
        assert_eq!(shell_sessions_of(&cached), Some(24));
        let mut old = a_pod(&t);
        old.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(USER_ANNOTATION);
        assert_eq!(user_of(&old), None, "made before user ids were recorded");
    }
}
