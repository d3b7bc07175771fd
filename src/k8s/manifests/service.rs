//! The sandbox's Service, owned by its Pod.

use k8s_openapi::{
    api::core::v1::{Pod, Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::labels::{owned_metadata, sandbox_selector, service_name};
use crate::{
    sandbox::{SandboxId, ThreadId},
    spec::SandboxSpec,
};

/// The sandbox's Service (NodePort or ClusterIP), owned by its Pod so that the Pod's deletion
/// removes it.
pub fn service(t: &SandboxSpec, id: &SandboxId, thread: &ThreadId, owner: &Pod) -> Service {
    let port = i32::from(t.port);
    Service {
        metadata: owned_metadata(service_name(id), &t.namespace, id, thread, owner),
        spec: Some(ServiceSpec {
            type_: Some(t.exposure.service_type().into()),
            selector: Some(sandbox_selector(id)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::Int(port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{super::test_support::*, *};
    use crate::{k8s::read::meta_owned_by, spec::Exposure};

    #[test]
    fn service_is_nodeport_owned_by_the_pod() {
        let (id, thread) = ids();
        let t = spec(None, None);
        let mut owner = a_pod(&t);
        let s = service(&t, &id, &thread, &owner);
        assert!(meta_owned_by(&s.metadata, &owner));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["metadata"]["name"], "sandbox-abc-123-svc");
        assert_eq!(v["spec"]["type"], "NodePort");
        assert_eq!(
            v["spec"]["selector"],
            json!({"app": "deer-flow-sandbox", "sandbox-id": "abc-123"})
        );
        assert_eq!(
            v["spec"]["ports"],
            json!([{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}])
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Pod");
        assert_eq!(v["metadata"]["labels"]["sandbox-id"], "abc-123");
        owner.metadata.uid = Some("uid-2".into());
        assert!(!meta_owned_by(&s.metadata, &owner));
    }

    #[test]
    fn cluster_ip_mode_uses_the_configured_port() {
        let (id, thread) = ids();
        let mut t = spec(None, None);
        t.exposure = Exposure::ClusterIp;
        t.port = 9090;
        let p = a_pod(&t);
        let v = serde_json::to_value(service(&t, &id, &thread, &p)).unwrap();
        assert_eq!(v["spec"]["type"], "ClusterIP");
        assert_eq!(v["spec"]["ports"][0]["port"], 9090);
        assert_eq!(v["spec"]["ports"][0]["targetPort"], 9090);
        let pv = serde_json::to_value(&p).unwrap();
        assert_eq!(
            pv["spec"]["containers"][0]["ports"][0]["containerPort"],
            9090
        );
        assert_eq!(
            pv["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
            9090
        );
    }
}
