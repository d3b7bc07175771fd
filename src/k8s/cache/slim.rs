//! The cache's own decoding of watched objects: only what the reads use is ever allocated.
//!
//! Decoding a whole Pod and then dropping its spec and managed fields leaves the freed pieces
//! scattered between the kept ones, and the allocator cannot give those pages back: with ten
//! thousand sandboxes that was a third of the process's memory. Decoded this way, the spec,
//! the managed fields and the unread status fields are skipped by the parser itself.

use std::{borrow::Cow, collections::BTreeMap, ops::Deref};

use k8s_openapi::{
    api::core::v1::{Pod, PodStatus, Service, ServiceSpec},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
};
use kube::Resource;
use serde::{Deserialize, Deserializer};

/// A watched object as the cache keeps it: the API type with only the parts the reads use.
/// Reads see the API type through `Deref`.
#[derive(Clone, Debug)]
pub struct Cached<K>(pub K);

pub type CachedPod = Cached<Pod>;
pub type CachedService = Cached<Service>;

impl<K> Deref for Cached<K> {
    type Target = K;

    fn deref(&self) -> &K {
        &self.0
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// The metadata the reads use; the rest (managed fields above all) is skipped unread.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
}

impl From<Meta> for ObjectMeta {
    fn from(m: Meta) -> ObjectMeta {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            ..ObjectMeta::default()
        }
    }
}

impl<'de> Deserialize<'de> for CachedPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: Meta,
            status: Option<PodStatus>,
        }
        let wire = Wire::deserialize(d)?;
        Ok(Cached(Pod {
            metadata: wire.metadata.into(),
            spec: None,
            status: wire.status,
        }))
    }
}

impl<'de> Deserialize<'de> for CachedService {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            metadata: Meta,
            spec: Option<ServiceSpec>,
        }
        let wire = Wire::deserialize(d)?;
        Ok(Cached(Service {
            metadata: wire.metadata.into(),
            spec: wire.spec,
            status: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_decodes_without_its_spec_and_managed_fields() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "sandbox-a", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"sandbox-id": "a"}, "annotations": {"k": "v"},
                "managedFields": [{"manager": "x", "operation": "Apply",
                    "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"containers": [{"name": "sandbox", "image": "img:1"}]},
            "status": {"phase": "Running"},
        });
        let pod: CachedPod = serde_json::from_value(json.clone()).unwrap();
        let whole: Pod = serde_json::from_value(json).unwrap();
        assert!(pod.spec.is_none() && pod.metadata.managed_fields.is_none());
        let mut expected = whole.metadata.clone();
        expected.managed_fields = None;
        assert_eq!(pod.metadata, expected);
        assert_eq!(pod.status, whole.status);
        assert_eq!(CachedPod::plural(&()), "pods");
        assert_eq!(CachedPod::kind(&()), "Pod");
    }

    #[test]
    fn a_service_decodes_its_spec_and_owners() {
        let json = serde_json::json!({
            "metadata": {
                "name": "sandbox-a-svc",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "sandbox-a",
                    "uid": "u1"}],
            },
            "spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 30001}]},
            "status": {"loadBalancer": {}},
        });
        let service: CachedService = serde_json::from_value(json.clone()).unwrap();
        let whole: Service = serde_json::from_value(json).unwrap();
        assert_eq!(service.metadata, whole.metadata);
        assert_eq!(service.spec, whole.spec);
        assert_eq!(CachedService::plural(&()), "services");
    }
}
