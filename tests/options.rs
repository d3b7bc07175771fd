//! Sandbox options read back from the real apiserver: service modes and the container port.

mod common;

use std::time::Duration;

use common::{eventually, serve_args, TestNamespace, TestService};

#[tokio::test]
async fn cluster_ip_mode_gives_cluster_dns_urls_and_opens_no_node_port() {
    let ns = TestNamespace::new("clusterip").await;
    let mut args = serve_args(&ns.name);
    args.sandbox_service_type = "ClusterIP".into();
    args.sandbox_container_port = 9090;
    let svc = TestService::start(args).await;
    let (code, created) = svc.create("cip-1", "t").await;
    assert_eq!(code, 200, "{created}");
    let expected = format!(
        "http://sandbox-cip-1-svc.{}.svc.cluster.local:9090",
        ns.name
    );
    assert_eq!(created["sandbox_url"], expected.as_str());
    assert_eq!(svc.get("cip-1").await.1["sandbox_url"], expected.as_str());

    let service = ns.services().get("sandbox-cip-1-svc").await.unwrap();
    let spec = service.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!((port.port, port.node_port), (9090, None));
    assert_eq!(serde_json::to_value(&port.target_port).unwrap(), 9090);
    let pod =
        serde_json::to_value(ns.pods().get("sandbox-cip-1").await.unwrap().spec.unwrap()).unwrap();
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 9090);
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["port"],
        9090
    );
    assert_eq!(
        pod["containers"][0]["livenessProbe"]["httpGet"]["port"],
        9090
    );
}

#[tokio::test]
async fn node_port_mode_with_another_container_port_is_reachable() {
    let ns = TestNamespace::new("port9090").await;
    let mut args = serve_args(&ns.name);
    args.sandbox_container_port = 9090;
    let svc = TestService::start(args).await;
    let (code, created) = svc.create("np-1", "t").await;
    assert_eq!(code, 200, "{created}");
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:3"), "{url}");
    let service = ns.services().get("sandbox-np-1-svc").await.unwrap();
    let port = &service.spec.unwrap().ports.unwrap()[0];
    assert_eq!(port.port, 9090);
    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(30),
        "the sandbox URL to answer",
        || async {
            let r = http.get(format!("{url}/v1/sandbox")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}
