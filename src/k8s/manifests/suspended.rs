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
