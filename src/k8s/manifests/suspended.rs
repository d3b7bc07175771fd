//! A suspended sandbox's record: a ConfigMap named like its Pod, carrying the Pod's labels and
//! annotations (identity, timers, creation, the request) so that a resume makes the same
//! sandbox again, under the same URL.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};
use serde::{Deserialize, Serialize};

use super::{
    pod_name, BINDS_ANNOTATION, POOL_LABEL, REQUEST_ANNOTATION, SUSPENDED_AT_ANNOTATION,
    SUSPENDED_LABEL,
};
use crate::sandbox::{ExtraMount, LarkRequest, Resources, SandboxId, SandboxRequest};

/// What a create asked for that the Pod's other annotations do not say.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<String>,
    resources: Resources,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    extra_mounts: Vec<ExtraMount>,
    #[serde(default)]
    lark: LarkRequest,
}

/// The request annotation's value.
pub(super) fn stored_request(request: &SandboxRequest) -> String {
    serde_json::to_string(&StoredRequest {
        size: request.size.clone(),
        resources: request.resources.clone(),
        extra_mounts: request.extra_mounts.clone(),
        lark: request.lark,
    })
    .expect("a request serializes")
}

/// The stored part of a request, from an object's annotations (None for objects made before
/// requests were recorded).
pub(crate) fn stored_part(
    meta: &ObjectMeta,
) -> Option<(Option<String>, Resources, Vec<ExtraMount>, LarkRequest)> {
    let text = meta.annotations.as_ref()?.get(REQUEST_ANNOTATION)?;
    let stored: StoredRequest = serde_json::from_str(text).ok()?;
    Some((
        stored.size,
        stored.resources,
        stored.extra_mounts,
        stored.lark,
    ))
}

/// The record's name: the sandbox's Pod name (another kind, so no clash).
pub fn suspended_record_name(id: &SandboxId) -> String {
    pod_name(id.as_str())
}

/// What suspended a sandbox (the record's label value and the metrics' `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendTrigger {
    /// `POST /api/sandboxes/{id}/suspend`.
    Api,
    /// The idle timeout, with SANDBOX_IDLE_ACTION=suspend.
    Idle,
}

impl SuspendTrigger {
    pub fn label(self) -> &'static str {
        match self {
            SuspendTrigger::Api => "api",
            SuspendTrigger::Idle => "idle",
        }
    }
}

/// The record of a sandbox whose Pod is about to go: the Pod's labels and annotations (less
/// the warm pool's), and when and why it was suspended. The ConfigMap's data stays empty.
pub fn suspended_record(
    id: &SandboxId,
    pod: &Pod,
    at: Timestamp,
    trigger: SuspendTrigger,
) -> ConfigMap {
    let mut labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
    labels.remove(POOL_LABEL);
    labels.insert(SUSPENDED_LABEL.to_string(), trigger.label().to_string());
    let mut annotations = pod.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(BINDS_ANNOTATION);
    annotations.insert(SUSPENDED_AT_ANNOTATION.to_string(), at.to_string());
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(suspended_record_name(id)),
            namespace: pod.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

/// The selector of suspended sandboxes' records.
pub fn suspended_selector() -> String {
    format!("{},{SUSPENDED_LABEL}", super::managed_selector())
}

#[cfg(test)]
mod tests {
    use super::{super::test_support::*, *};
    use crate::{
        k8s::{read as objects, record::SuspendedRecord},
        sandbox::{ExtraMount, Phase, Timers},
    };

    fn full_request() -> SandboxRequest {
        SandboxRequest {
            size: Some("large".into()),
            user: crate::sandbox::UserId::parse("u-1").unwrap(),
            tenant: "team-a".into(),
            timers: Timers {
                lifetime: std::time::Duration::from_secs(3600),
                idle: std::time::Duration::from_secs(60),
                ready: std::time::Duration::ZERO,
            },
            extra_mounts: vec![ExtraMount {
                host_path: "/srv/base/acp".into(),
                below_base: "acp".into(),
                container_path: "/mnt/acp-workspace".into(),
                read_only: true,
            }],
            lark: LarkRequest {
                runtime: true,
                broker: false,
            },
            max_shell_sessions: Some(4),
            skills_path: Some("/mnt/my-skills".into()),
            ..a_request()
        }
    }

    #[test]
    fn a_pod_records_its_request_and_a_record_gives_it_back() {
        let t = spec(None, None);
        let wanted = full_request();
        let created: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut pod = crate::k8s::manifests::pod(&t, &wanted, created);
        pod.metadata.namespace = Some("ns".into());
        let back = objects::request_of(&pod).expect("the request is on the pod");
        assert_eq!(
            (&back.id, &back.thread, &back.user, &back.tenant, &back.size),
            (
                &wanted.id,
                &wanted.thread,
                &wanted.user,
                &wanted.tenant,
                &wanted.size
            )
        );
        assert_eq!(back.resources, wanted.resources);
        assert_eq!(back.extra_mounts, wanted.extra_mounts);
        assert_eq!(back.lark, wanted.lark);
        assert_eq!(
            (back.max_shell_sessions, &back.skills_path),
            (wanted.max_shell_sessions, &wanted.skills_path)
        );
        assert_eq!(
            (back.timers.lifetime, back.timers.idle),
            (wanted.timers.lifetime, wanted.timers.idle)
        );

        let at: Timestamp = "2026-12-01T01:00:00Z".parse().unwrap();
        let record = suspended_record(&wanted.id, &pod, at, SuspendTrigger::Idle);
        assert_eq!(record.metadata.name, Some(format!("sandbox-{}", wanted.id)));
        assert_eq!(record.metadata.namespace.as_deref(), Some("ns"));
        let (id, kept) = SuspendedRecord::of(&record).expect("a suspended record");
        assert_eq!(id, wanted.id.as_str());
        assert_eq!(kept.suspended_at, at);
        assert_eq!(&*kept.trigger, "idle");
        assert_eq!(
            kept.pod.created,
            Some(created),
            "the creation stays: the URL and lifetime"
        );
        assert_eq!(kept.pod.status.phase, Phase::Suspended);
        assert!(kept.pod.uid.is_empty() && !kept.pod.status.ready);
        assert_eq!(&*kept.pod.tenant, "team-a");
        let request = kept.request.expect("the request comes back");
        assert_eq!(request.extra_mounts, wanted.extra_mounts);
        assert_eq!(kept.resuming_since, None);
    }

    #[test]
    fn a_pod_made_before_requests_were_recorded_cannot_be_made_again() {
        let t = spec(None, None);
        let mut pod = a_pod(&t);
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(REQUEST_ANNOTATION);
        assert!(objects::request_of(&pod).is_none());
        // And a record is only what carries the label.
        let mut plain = suspended_record(
            &a_request().id,
            &a_pod(&t),
            Timestamp::UNIX_EPOCH,
            SuspendTrigger::Api,
        );
        plain
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(SUSPENDED_LABEL);
        assert!(SuspendedRecord::of(&plain).is_none());
    }

    #[test]
    fn a_claimed_pool_pod_leaves_its_pool_label_and_binds_behind() {
        let t = spec(None, None);
        let mut pod = a_pod(&t);
        pod.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(POOL_LABEL.into(), "default".into());
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(BINDS_ANNOTATION.into(), "[]".into());
        let record = suspended_record(
            &a_request().id,
            &pod,
            Timestamp::UNIX_EPOCH,
            SuspendTrigger::Api,
        );
        assert!(!record
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(POOL_LABEL));
        assert!(!record
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(BINDS_ANNOTATION));
        assert_eq!(
            record
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get(SUSPENDED_LABEL)
                .map(String::as_str),
            Some("api")
        );
    }
}
