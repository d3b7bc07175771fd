//! Names, labels and annotations shared by every object of a sandbox: the one place where
//! they are spelled.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use crate::sandbox::{SandboxId, ThreadId};

/// The provisioner's own labels and annotations are named under this prefix (the watch cache
/// keeps only these annotations).
macro_rules! own_key {
    ($name:literal) => {
        concat!("sandbox-provisioner.dev/", $name)
    };
}
pub const ANNOTATION_PREFIX: &str = own_key!("");

/// DeerFlow's `app` label of every sandbox object.
pub const APP_LABEL_VALUE: &str = "deer-flow-sandbox";
/// Label every sandbox object carries with its id (DeerFlow's selector).
pub const SANDBOX_ID_LABEL: &str = "sandbox-id";
/// Marks objects this service manages; nothing without it is ever touched.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "sandbox-provisioner";
/// The thread the sandbox was created for (annotation: thread ids may exceed label rules).
pub const THREAD_ANNOTATION: &str = own_key!("thread-id");
/// The tenant whose API key created the sandbox, on every object of it (`default` without
/// PROVISIONER_TENANTS).
pub const TENANT_LABEL: &str = own_key!("tenant");
/// The sandbox container's limits as JSON (`{"cpu":"1","memory":"1Gi"}`), which quotas sum.
pub const LIMITS_ANNOTATION: &str = own_key!("limits");
/// The user the sandbox was created for (annotation: user ids may be up to 128 characters).
pub const USER_ANNOTATION: &str = own_key!("user-id");
/// The shell-session capacity set on the sandbox container (the watch cache keeps no pod
/// specs, so reads take it from here).
pub const SHELL_SESSIONS_ANNOTATION: &str = own_key!("max-shell-sessions");
/// When the provisioner created the sandbox (RFC 3339).
pub const CREATED_ANNOTATION: &str = own_key!("created-at");
/// The sandbox's lifetime in seconds (absent: none).
pub const TTL_ANNOTATION: &str = own_key!("ttl-seconds");
/// The sandbox's idle timeout in seconds (absent: none).
pub const IDLE_ANNOTATION: &str = own_key!("idle-timeout-seconds");
/// The last activity a provisioner wrote down (RFC 3339), at a bounded rate.
pub const ACTIVITY_ANNOTATION: &str = own_key!("last-activity");

pub fn pod_name(id: &SandboxId) -> String {
    format!("sandbox-{id}")
}

pub fn service_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-svc")
}

pub fn network_policy_name(id: &SandboxId) -> String {
    format!("sandbox-{id}-netpol")
}

/// Label selector matching every object this service manages.
pub fn managed_selector() -> String {
    format!("app={APP_LABEL_VALUE},{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// The labels that select every managed sandbox pod (the baseline policy's selector).
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), APP_LABEL_VALUE.to_string()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ])
}

/// The labels that select one sandbox's pod (Service and policy selectors).
pub fn sandbox_selector(id: &SandboxId) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_string(), APP_LABEL_VALUE.to_string()),
        (SANDBOX_ID_LABEL.to_string(), id.to_string()),
    ])
}

fn labels(id: &SandboxId) -> BTreeMap<String, String> {
    let mut labels = sandbox_selector(id);
    labels.extend(managed_labels());
    labels.insert("app.kubernetes.io/name".into(), "deer-flow".into());
    labels.insert("app.kubernetes.io/component".into(), "sandbox".into());
    labels
}

/// The metadata of one object of a sandbox.
pub(super) fn metadata(
    name: String,
    namespace: &str,
    id: &SandboxId,
    thread: &ThreadId,
    created: Timestamp,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels(id)),
        annotations: Some(BTreeMap::from([
            (THREAD_ANNOTATION.to_string(), thread.to_string()),
            (CREATED_ANNOTATION.to_string(), created.to_string()),
        ])),
        ..ObjectMeta::default()
    }
}

/// The metadata of an object the pod owns, so that the pod's deletion removes it; it carries
/// the pod's annotations (thread, creation, timers).
pub(super) fn owned_metadata(
    name: String,
    namespace: &str,
    id: &SandboxId,
    thread: &ThreadId,
    owner: &Pod,
) -> ObjectMeta {
    let mut metadata = metadata(name, namespace, id, thread, Timestamp::now());
    metadata.annotations = owner.metadata.annotations.clone();
    if let (Some(labels), Some(tenant)) =
        (metadata.labels.as_mut(), owner.labels().get(TENANT_LABEL))
    {
        labels.insert(TENANT_LABEL.to_string(), tenant.clone());
    }
    metadata.owner_references = Some(owner.owner_ref(&()).into_iter().collect());
    metadata
}
