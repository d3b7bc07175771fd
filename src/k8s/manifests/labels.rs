//! Names, labels and annotations shared by every object of a sandbox, made from the keys of
//! [`crate::spec::keys`] (re-exported here).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta, jiff::Timestamp,
};
use kube::{Resource, ResourceExt};

use crate::sandbox::{SandboxId, ThreadId};

pub use crate::spec::keys::*;

/// Every object of a sandbox is named this, its id, and a suffix per kind (none for the Pod).
const NAME_PREFIX: &str = "sandbox-";

/// The name of a sandbox's Pod (`id` a [`SandboxId`], or one read back from a label).
pub fn pod_name(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("{NAME_PREFIX}{id}")
}

/// The sandbox id a Pod name was made from ([`pod_name`]'s inverse).
pub fn id_of_pod_name(name: &str) -> Option<&str> {
    name.strip_prefix(NAME_PREFIX)
}

pub fn service_name(id: &(impl std::fmt::Display + ?Sized)) -> String {
    format!("{NAME_PREFIX}{id}-svc")
}

pub fn network_policy_name(id: &SandboxId) -> String {
    format!("{NAME_PREFIX}{id}-netpol")
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
    labels.insert(NAME_LABEL.into(), "deer-flow".into());
    labels.insert(COMPONENT_LABEL.into(), "sandbox".into());
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
