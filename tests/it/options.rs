//! Sandbox options read back from the real apiserver: service modes and the container port.

use sandbox_provisioner::k8s::manifests;
use std::time::Duration;

use testkit::{eventually, serve_args, TestNamespace, TestService};

#[tokio::test]
async fn cluster_ip_mode_gives_cluster_dns_urls_and_opens_no_node_port() {
    let ns = TestNamespace::new("clusterip").await;
    let mut args = serve_args(&ns.name);
    args.sandbox.sandbox_service_type = "ClusterIP".into();
    args.sandbox.sandbox_container_port = 9090;
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
    args.sandbox.sandbox_container_port = 9090;
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

fn resources_of(pod: &k8s_openapi::api::core::v1::Pod) -> serde_json::Value {
    serde_json::to_value(&pod.spec.as_ref().unwrap().containers[0].resources).unwrap()
}

#[tokio::test]
async fn sizes_and_explicit_resources_are_applied_within_the_maxima() {
    let ns = TestNamespace::new("sizes").await;
    let mut args = serve_args(&ns.name);
    args.sizes.sandbox_sizes = Some(
        r#"{"small": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}}"#.into(),
    );
    args.sizes.sandbox_max_resources =
        r#"{"cpu": "2", "memory": "4Gi", "ephemeral-storage": "2Gi"}"#.into();
    let svc = TestService::start(args).await;

    let (code, caps) = svc
        .call(reqwest::Method::GET, "/api/capabilities", None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(caps["default_size"], "default");
    assert_eq!(caps["sizes"]["small"]["limits"]["cpu"], "500m");
    assert_eq!(caps["sizes"]["default"]["requests"]["memory"], "256Mi");
    assert_eq!(caps["max_resources"]["memory"], "4Gi");
    assert_eq!(caps["service_type"], "NodePort");
    assert_eq!(caps["network_policy"], "none");
    assert_eq!(caps["container_port"], 8080);

    let create =
        |body: serde_json::Value| svc.call(reqwest::Method::POST, "/api/sandboxes", Some(body));
    assert_eq!(
        create(serde_json::json!({"sandbox_id": "sz-default", "thread_id": "t"}))
            .await
            .0,
        200
    );
    let (code, body) =
        create(serde_json::json!({"sandbox_id": "sz-small", "thread_id": "t", "size": "small"}))
            .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = create(serde_json::json!({
        "sandbox_id": "sz-custom", "thread_id": "t", "size": "small",
        "resources": {"limits": {"memory": "1Gi"}, "requests": {"ephemeral-storage": "1Gi"}},
    }))
    .await;
    assert_eq!(code, 200, "{body}");
    let pods = ns.pods();
    assert_eq!(
        resources_of(&pods.get("sandbox-sz-default").await.unwrap()),
        serde_json::json!({
            "requests": {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "500Mi"},
            "limits": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "500Mi"},
        })
    );
    assert_eq!(
        resources_of(&pods.get("sandbox-sz-small").await.unwrap()),
        serde_json::json!({"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}})
    );
    assert_eq!(
        resources_of(&pods.get("sandbox-sz-custom").await.unwrap()),
        serde_json::json!({
            "requests": {"cpu": "50m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
            "limits": {"cpu": "500m", "memory": "1Gi"},
        })
    );

    for (body, needle) in [
        (
            serde_json::json!({"sandbox_id": "sz-bad-1", "thread_id": "t", "size": "huge"}),
            "default, small",
        ),
        (
            serde_json::json!({"sandbox_id": "sz-bad-2", "thread_id": "t", "resources": {"limits": {"memory": "16Gi"}}}),
            "maximum of 4Gi",
        ),
        (
            serde_json::json!({"sandbox_id": "sz-bad-3", "thread_id": "t", "resources": {"limits": {"nvidia.com/gpu": "1"}}}),
            "unknown resource",
        ),
        (
            serde_json::json!({"sandbox_id": "sz-bad-4", "thread_id": "t", "resources": {"requests": {"cpu": "lots"}}}),
            "not a Kubernetes quantity",
        ),
        (
            serde_json::json!({"sandbox_id": "sz-bad-5", "thread_id": "t", "resources": {"requests": {"cpu": "2"}}}),
            "above limits.cpu",
        ),
        (
            serde_json::json!({"sandbox_id": "sz-bad-6", "thread_id": "t", "resources": []}),
            "an object with \"requests\" and/or \"limits\"",
        ),
    ] {
        let (code, answer) = create(body.clone()).await;
        assert_eq!(code, 422, "{body} -> {answer}");
        assert!(
            answer["detail"].as_str().unwrap().contains(needle),
            "{answer}"
        );
    }
    let names: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(
        names.iter().all(|n| !n.contains("sz-bad")),
        "refused creates made pods: {names:?}"
    );
}

#[tokio::test]
async fn pvc_mode_mounts_claims_with_thread_sub_paths() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let ns = TestNamespace::new("pvc").await;
    let claims: kube::Api<PersistentVolumeClaim> =
        kube::Api::namespaced(ns.client.clone(), &ns.name);
    for name in ["skills", "user-data"] {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        claims.create(&Default::default(), &claim).await.unwrap();
    }
    let mut args = serve_args(&ns.name);
    args.storage.skills_host_path = None;
    args.storage.threads_host_path = None;
    args.storage.skills_pvc_name = Some("skills".into());
    args.storage.skills_pvc_subpath = Some("public".into());
    args.storage.userdata_pvc_name = Some("user-data".into());
    let svc = TestService::start(args).await;
    assert_eq!(svc.create("pvc-1", "thread_7").await.0, 200);
    let spec =
        serde_json::to_value(ns.pods().get("sandbox-pvc-1").await.unwrap().spec.unwrap()).unwrap();
    assert_eq!(
        serde_json::Value::Array(
            spec["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .take(2)
                .cloned()
                .collect()
        ),
        serde_json::json!([
            {"name": "skills", "persistentVolumeClaim": {"claimName": "skills", "readOnly": true}},
            {"name": "user-data", "persistentVolumeClaim": {"claimName": "user-data"}},
        ])
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"],
        serde_json::json!([
            {"name": "skills", "mountPath": "/mnt/skills", "readOnly": true, "subPath": "public"},
            {"name": "user-data", "mountPath": "/mnt/user-data", "subPath": "deer-flow/users/default/threads/thread_7/user-data"},
        ])
    );
}

#[tokio::test]
async fn a_missing_claim_stops_the_service_at_start() {
    let ns = TestNamespace::new("pvc-missing").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .env_clear()
        .env("KUBECONFIG_PATH", testkit::kubeconfig_path())
        .env("K8S_NAMESPACE", &ns.name)
        .env("USERDATA_PVC_NAME", "absent-claim")
        .env("PROVISIONER_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("USERDATA_PVC_NAME=absent-claim") && err.contains("no PersistentVolumeClaim"),
        "{err}"
    );
}

#[tokio::test]
async fn placement_fields_reach_the_pod() {
    use k8s_openapi::api::{node::v1::RuntimeClass, scheduling::v1::PriorityClass};
    let ns = TestNamespace::new("placement").await;
    let (pc, rc) = (format!("{}-pc", ns.name), format!("{}-rc", ns.name));
    let priority: PriorityClass =
        serde_json::from_value(serde_json::json!({"metadata": {"name": pc}, "value": 10})).unwrap();
    kube::Api::<PriorityClass>::all(ns.client.clone())
        .create(&Default::default(), &priority)
        .await
        .unwrap();
    let runtime: RuntimeClass =
        serde_json::from_value(serde_json::json!({"metadata": {"name": rc}, "handler": "runsc"}))
            .unwrap();
    kube::Api::<RuntimeClass>::all(ns.client.clone())
        .create(&Default::default(), &runtime)
        .await
        .unwrap();
    let placement = serde_json::json!({
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "sandboxes", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 50,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "deer-flow-sandbox"}}},
        }]}},
        "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app": "deer-flow-sandbox"}}}],
        "priorityClassName": pc,
        "runtimeClassName": rc,
    });
    let mut args = serve_args(&ns.name);
    args.sandbox.sandbox_placement = Some(placement.to_string());
    let svc = TestService::start(args).await;
    let (code, body) = svc.create("pl-1", "t").await;
    assert_eq!(code, 200, "{body}");
    let spec =
        serde_json::to_value(ns.pods().get("sandbox-pl-1").await.unwrap().spec.unwrap()).unwrap();
    for field in [
        "nodeSelector",
        "affinity",
        "topologySpreadConstraints",
        "priorityClassName",
        "runtimeClassName",
    ] {
        assert_eq!(spec[field], placement[field], "{field}");
    }
    // Admission appends the default not-ready/unreachable tolerations after ours.
    assert_eq!(spec["tolerations"][0], placement["tolerations"][0]);
    eventually(
        Duration::from_secs(30),
        "the placed sandbox to be ready",
        || async { (svc.get("pl-1").await.1["ready"] == true).then_some(()) },
    )
    .await;
}

#[test]
fn an_invalid_placement_stops_the_service_naming_the_field() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .env_clear()
        .env(
            "SANDBOX_PLACEMENT",
            r#"{"tolerations": [{"key": "a", "tolerationSeconds": "soon"}]}"#,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SANDBOX_PLACEMENT") && err.contains("invalid type"),
        "{err}"
    );
}

#[tokio::test]
async fn a_placement_the_apiserver_refuses_stops_the_service_at_start() {
    let ns = TestNamespace::new("placement-bad").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .env_clear()
        .env("KUBECONFIG_PATH", testkit::kubeconfig_path())
        .env("K8S_NAMESPACE", &ns.name)
        .env("PROVISIONER_LISTEN", "127.0.0.1:0")
        // Well-formed JSON, but the apiserver requires topologyKey and whenUnsatisfiable.
        .env(
            "SANDBOX_PLACEMENT",
            r#"{"topologySpreadConstraints": [{"maxSkew": 1}]}"#,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topologyKey") && err.contains("SANDBOX_PLACEMENT"),
        "{err}"
    );
    assert!(ns.leftovers().await.is_empty(), "a dry run creates nothing");
}

/// A shipped example file's path.
fn example(name: &str) -> String {
    format!("{}/deploy/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn the_shipped_pod_templates_render_pods_the_apiserver_stores() {
    use k8s_openapi::api::node::v1::RuntimeClass;
    let ns = TestNamespace::new("pod-template").await;
    // The RuntimeClass gvisor.yaml names (as its comment says to create); shared by the runs.
    let runtime: RuntimeClass = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "gvisor"}, "handler": "runsc"}),
    )
    .unwrap();
    match kube::Api::<RuntimeClass>::all(ns.client.clone())
        .create(&Default::default(), &runtime)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating RuntimeClass gvisor: {e}"),
    }
    for (file, id) in [
        ("aio-browser.yaml", "tpl-browser"),
        ("gvisor.yaml", "tpl-gvisor"),
    ] {
        let mut args = serve_args(&ns.name);
        args.sandbox.sandbox_pod_template = Some(example(file).into());
        // Placement fields the template does not set still combine with it.
        args.sandbox.sandbox_placement =
            Some(r#"{"nodeSelector": {"kubernetes.io/os": "linux"}}"#.into());
        let svc = TestService::start(args).await;
        let (code, body) = svc.create(id, "t").await;
        assert_eq!(code, 200, "{file}: {body}");
        let pod = ns.pods().get(&manifests::pod_name(id)).await.unwrap();
        let p = serde_json::to_value(&pod).unwrap();
        assert_eq!(p["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
        let c = &p["spec"]["containers"][0];
        assert_eq!(
            c["image"], "sandbox:test",
            "the provisioner's own fields stay"
        );
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        match file {
            "aio-browser.yaml" => {
                let dshm = p["spec"]["volumes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == "dshm")
                    .expect("the dshm volume");
                assert_eq!(
                    dshm["emptyDir"],
                    serde_json::json!({"medium": "Memory", "sizeLimit": "1Gi"})
                );
                assert!(c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .contains(&serde_json::json!({"name": "dshm", "mountPath": "/dev/shm"})));
                assert!(c["env"].as_array().unwrap().contains(
                    &serde_json::json!({"name": "BROWSER_NO_SANDBOX", "value": "--no-sandbox"})
                ));
            }
            _ => assert_eq!(p["spec"]["runtimeClassName"], "gvisor"),
        }
        eventually(
            Duration::from_secs(30),
            "the templated sandbox to be ready",
            || async { (svc.get(id).await.1["ready"] == true).then_some(()) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_pod_template_the_apiserver_refuses_stops_the_service_at_start() {
    let ns = TestNamespace::new("pod-template-bad").await;
    let file = std::env::temp_dir().join(format!("{}-template.yaml", ns.name));
    // Well-formed, but the apiserver requires dnsConfig with dnsPolicy None.
    std::fs::write(&file, "spec:\n  dnsPolicy: None\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .env_clear()
        .env("KUBECONFIG_PATH", testkit::kubeconfig_path())
        .env("K8S_NAMESPACE", &ns.name)
        .env("PROVISIONER_LISTEN", "127.0.0.1:0")
        .env("SANDBOX_POD_TEMPLATE", &file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dnsConfig") && err.contains("SANDBOX_POD_TEMPLATE"),
        "{err}"
    );
    assert!(ns.leftovers().await.is_empty(), "a dry run creates nothing");

    // One the provisioner refuses itself stops it before any call, naming the field.
    let file = std::env::temp_dir().join(format!("{}-owned.yaml", ns.name));
    std::fs::write(&file, "spec:\n  restartPolicy: Never\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .env_clear()
        .env("KUBECONFIG_PATH", testkit::kubeconfig_path())
        .env("K8S_NAMESPACE", &ns.name)
        .env("SANDBOX_POD_TEMPLATE", &file)
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(out.status.code(), Some(2), "a configuration error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SANDBOX_POD_TEMPLATE")
            && err.contains("spec.restartPolicy is the provisioner's"),
        "{err}"
    );
}

#[tokio::test]
async fn isolated_sandboxes_get_a_network_policy_that_goes_with_the_pod() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = TestNamespace::new("netpol").await;
    let mut args = serve_args(&ns.name);
    args.security.sandbox_network_policy = "isolated".into();
    args.security.sandbox_network_policy_ingress_from = Some(
        r#"[{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "deer-flow-gateway"}}}]"#
            .into(),
    );
    let svc = TestService::start(args).await;
    assert_eq!(svc.create("iso-1", "t").await.0, 200);
    let policies: kube::Api<NetworkPolicy> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let policy = policies.get("sandbox-iso-1-netpol").await.unwrap();
    let pod = ns.pods().get("sandbox-iso-1").await.unwrap();
    // Made before the first pod: every managed sandbox is shut off unless its own policy
    // allows something.
    let baseline = policies.get("sandbox-provisioner-baseline").await.unwrap();
    let baseline = serde_json::to_value(baseline.spec.unwrap()).unwrap();
    assert_eq!(
        baseline["podSelector"]["matchLabels"],
        serde_json::json!({"app": "deer-flow-sandbox", "app.kubernetes.io/managed-by": "sandbox-provisioner"})
    );
    assert_eq!(
        baseline["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert!(baseline.get("ingress").is_none() && baseline.get("egress").is_none());
    assert!(baseline["podSelector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| pod.metadata.labels.as_ref().unwrap().get(k)
            == v.as_str().map(String::from).as_ref()));
    let owner = &policy.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Pod", pod.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(
        serde_json::to_value(policy.spec.unwrap()).unwrap(),
        serde_json::json!({
            "podSelector": {"matchLabels": {"app": "deer-flow-sandbox", "sandbox-id": "iso-1"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "ports": [{"port": 8080, "protocol": "TCP"}],
                "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "deer-flow-gateway"}}}],
            }],
            "egress": [
                {
                    "to": [{
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    }],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                },
                {"to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12",
                        "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "168.63.129.16/32",
                        "100.100.100.200/32"]}},
                    {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10", "fd00:ec2::254/128"]}},
                ]},
            ],
        })
    );

    // Deleting the pod behind the service's back: the garbage collector takes the policy too.
    ns.pods()
        .delete("sandbox-iso-1", &Default::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "the policy to be collected with its pod",
        || async {
            policies
                .get_opt("sandbox-iso-1-netpol")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    // Through the API, DELETE removes it at once.
    assert_eq!(svc.create("iso-2", "t").await.0, 200);
    assert!(policies
        .get_opt("sandbox-iso-2-netpol")
        .await
        .unwrap()
        .is_some());
    assert_eq!(svc.delete("iso-2").await.0, 200);
    assert!(policies
        .get_opt("sandbox-iso-2-netpol")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_network_policy_template_is_used_with_the_sandbox_selector() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = TestNamespace::new("netpol-tpl").await;
    let file = std::env::temp_dir().join(format!("{}-netpol.json", ns.name));
    std::fs::write(&file, r#"{"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"ports": [{"port": 8080}]}]}"#).unwrap();
    let mut args = serve_args(&ns.name);
    args.security.sandbox_network_policy = file.display().to_string();
    let svc = TestService::start(args).await;
    assert_eq!(svc.create("tpl-1", "t").await.0, 200);
    std::fs::remove_file(&file).unwrap();
    let policies: kube::Api<NetworkPolicy> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let spec = serde_json::to_value(
        policies
            .get("sandbox-tpl-1-netpol")
            .await
            .unwrap()
            .spec
            .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    assert_eq!(spec["podSelector"]["matchLabels"]["sandbox-id"], "tpl-1");
    assert_eq!(spec["ingress"][0]["ports"][0]["port"], 8080);
}

#[tokio::test]
async fn a_policy_that_cannot_be_created_rolls_the_sandbox_back() {
    let ns = TestNamespace::new("netpol-rb").await;
    // An account that may manage pods and services but not network policies.
    let kubeconfig = ns
        .service_account_kubeconfig("no-netpol", testkit::provisioner_rules())
        .await;
    let mut args = serve_args(&ns.name);
    args.cluster.kubeconfig_path = kubeconfig;
    args.security.sandbox_network_policy = "isolated".into();
    let svc = TestService::start(args).await;
    let (code, body) = svc.create("rb-1", "t").await;
    assert_eq!(code, 502, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("networkpolic"),
        "{body}"
    );
    eventually(Duration::from_secs(30), "nothing left behind", || async {
        ns.leftovers().await.is_empty().then_some(())
    })
    .await;
}
