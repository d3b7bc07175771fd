//! The REST API against the real local apiserver and node simulator.

use sandbox_provisioner::k8s::manifests;
use std::{collections::HashSet, time::Duration};

use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota};
use kube::{
    api::{ListParams, Patch, PatchParams, PostParams},
    Api,
};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::{eventually, serve_args, TestNamespace, TestService};

async fn service_in(ns: &TestNamespace) -> TestService {
    TestService::start(serve_args(&ns.name)).await
}

async fn wait_ready(svc: &TestService, id: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        "the sandbox to be Running and ready",
        || async {
            let (code, body) = svc.get(id).await;
            (code == 200 && body["status"] == "Running" && body["ready"] == true).then_some(body)
        },
    )
    .await
}

#[tokio::test]
async fn health_answers_ok() {
    let ns = TestNamespace::new("health").await;
    let svc = service_in(&ns).await;
    let (code, body) = svc.call(Method::GET, "/health", None).await;
    assert_eq!((code, body), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn end_to_end_create_get_reach_delete() {
    let ns = TestNamespace::new("e2e").await;
    let svc = service_in(&ns).await;

    let (code, created) = svc.create("e2e-1", "thread-1").await;
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["sandbox_id"], "e2e-1");
    assert_eq!(created["thread_id"], "thread-1");
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    let port: u16 = url
        .strip_prefix("http://127.0.0.1:")
        .expect("URL on NODE_HOST")
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&port));
    assert!(["Pending", "Running"].contains(&created["status"].as_str().unwrap()));

    let ready = wait_ready(&svc, "e2e-1").await;
    assert_eq!(ready["sandbox_url"], url.as_str());
    assert!(ready.get("reason").is_none(), "{ready}");

    let http = reqwest::Client::new();
    let answer = eventually(
        Duration::from_secs(10),
        "the sandbox URL to answer",
        || async {
            let r = http.get(format!("{url}/v1/sandbox")).send().await.ok()?;
            (r.status() == 200).then_some(r.status())
        },
    )
    .await;
    assert_eq!(answer, 200);

    let (code, list) = svc.list().await;
    assert_eq!(code, 200);
    assert_eq!(list["count"], 1);
    assert_eq!(list["sandboxes"][0]["sandbox_url"], url.as_str());

    let (code, deleted) = svc.delete("e2e-1").await;
    assert_eq!(
        (code, deleted),
        (200, json!({"ok": true, "sandbox_id": "e2e-1"}))
    );
    let (code, body) = svc.get("e2e-1").await;
    assert_eq!(code, 404, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("not found"));
    eventually(
        Duration::from_secs(30),
        "no pod or service left",
        || async { ns.leftovers().await.is_empty().then_some(()) },
    )
    .await;
    let (_, list) = svc.list().await;
    assert_eq!(
        list,
        json!({"count": 0, "sandboxes": [], "clusters": [{"name": "default", "reachable": true, "sandboxes": 0}]})
    );
}

#[tokio::test]
async fn created_objects_carry_the_documented_shape() {
    let ns = TestNamespace::new("shape").await;
    let svc = service_in(&ns).await;
    let (code, _) = svc.create("shape-1", "thread_A-9").await;
    assert_eq!(code, 200);
    let pod = ns.pods().get("sandbox-shape-1").await.unwrap();
    let labels = pod.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("app", "deer-flow-sandbox"),
        ("sandbox-id", "shape-1"),
        ("app.kubernetes.io/name", "deer-flow"),
        ("app.kubernetes.io/component", "sandbox"),
        ("app.kubernetes.io/managed-by", "sandbox-provisioner"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let annotations = pod.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["sandbox-provisioner.dev/thread-id"],
        "thread_A-9"
    );
    assert!(annotations.contains_key("sandbox-provisioner.dev/created-at"));
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec["containers"][0]["image"], "sandbox:test");
    // The apiserver (1.20) keeps the startup probe the service asks for.
    assert_eq!(
        spec["containers"][0]["startupProbe"],
        json!({"httpGet": {"path": "/v1/sandbox", "port": 8080, "scheme": "HTTP"},
               "periodSeconds": 1, "timeoutSeconds": 3,
               "successThreshold": 1, "failureThreshold": 120})
    );
    // Admission may add a service-account token volume; ours come first.
    let ours: Vec<Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .cloned()
        .collect();
    assert_eq!(
        Value::Array(ours),
        json!([
            {"name": "skills", "hostPath": {"path": "/srv/skills", "type": "Directory"}},
            {"name": "user-data", "hostPath": {"path": "/srv/threads/thread_A-9/user-data", "type": "DirectoryOrCreate"}},
        ])
    );
    let service = ns.services().get("sandbox-shape-1-svc").await.unwrap();
    let owner = &service.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Pod", pod.metadata.uid.as_deref().unwrap())
    );
    let spec = service.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(
        spec.selector.unwrap().get("sandbox-id").map(String::as_str),
        Some("shape-1")
    );
}

#[tokio::test]
async fn hostile_and_malformed_input_is_422_and_creates_nothing() {
    let ns = TestNamespace::new("hostile").await;
    let svc = service_in(&ns).await;
    let long_id = "a".repeat(52);
    let long_thread = "t".repeat(65);
    let bodies = [
        json!({"sandbox_id": "ok-1", "thread_id": "../../etc"}),
        json!({"sandbox_id": "ok-1", "thread_id": "a/b"}),
        json!({"sandbox_id": "ok-1", "thread_id": ""}),
        json!({"sandbox_id": "ok-1", "thread_id": "a\u{0}b"}),
        json!({"sandbox_id": "ok-1", "thread_id": ".."}),
        json!({"sandbox_id": "ok-1", "thread_id": long_thread}),
        json!({"sandbox_id": "../x", "thread_id": "t"}),
        json!({"sandbox_id": "UPPER", "thread_id": "t"}),
        json!({"sandbox_id": "", "thread_id": "t"}),
        json!({"sandbox_id": "-a", "thread_id": "t"}),
        json!({"sandbox_id": long_id, "thread_id": "t"}),
        json!({"sandbox_id": "ok-1", "user_id": "a/b"}),
        json!({"sandbox_id": "ok-1", "thread_id": null, "user_id": ""}),
        json!({"sandbox_id": "ok-1", "user_id": "u".repeat(129)}),
        json!({"thread_id": "t"}),
        json!({"sandbox_id": 5, "thread_id": "t"}),
        json!(["ok-1", "t"]),
        json!("text"),
    ];
    for body in bodies {
        let (code, answer) = svc
            .call(Method::POST, "/api/sandboxes", Some(body.clone()))
            .await;
        assert_eq!(code, 422, "{body} -> {answer}");
        let detail = answer["detail"].as_str().expect("a detail string");
        assert!(
            ["sandbox_id", "thread_id", "user_id"]
                .iter()
                .any(|field| detail.contains(field)),
            "{detail}"
        );
    }
    let raw = svc
        .http
        .post(svc.url("/api/sandboxes"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 422);
    let empty = svc
        .http
        .post(svc.url("/api/sandboxes"))
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 422);
    for path in [
        "/api/sandboxes/UPPER",
        "/api/sandboxes/a_b",
        "/api/sandboxes/a%2Fb",
        "/api/sandboxes/%2E%2E%2Fetc",
    ] {
        for method in [Method::GET, Method::DELETE] {
            let (code, answer) = svc.call(method.clone(), path, None).await;
            assert_eq!(code, 422, "{method} {path} -> {answer}");
        }
    }
    assert!(
        ns.leftovers().await.is_empty(),
        "nothing may be created for rejected input"
    );
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let ns = TestNamespace::new("unknown").await;
    let svc = service_in(&ns).await;
    let (code, body) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "u-1", "thread_id": "t", "extra": {"x": 1}})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn create_is_idempotent_per_thread_and_conflicts_across_threads() {
    let ns = TestNamespace::new("idem").await;
    let svc = service_in(&ns).await;
    let (c1, first) = svc.create("idem-1", "thread-a").await;
    let (c2, second) = svc.create("idem-1", "thread-a").await;
    assert_eq!((c1, c2), (200, 200));
    assert_eq!(first["sandbox_url"], second["sandbox_url"]);
    let (code, conflict) = svc.create("idem-1", "thread-b").await;
    assert_eq!(code, 409, "{conflict}");
    let detail = conflict["detail"].as_str().unwrap();
    assert!(
        detail.contains("thread-a") && detail.contains("thread-b"),
        "{detail}"
    );
    assert_eq!(
        ns.pods()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn fifty_concurrent_creates_make_one_sandbox() {
    let ns = TestNamespace::new("fifty").await;
    let svc = service_in(&ns).await;
    let answers =
        futures::future::join_all((0..50).map(|_| svc.create("same-1", "thread-1"))).await;
    let urls: HashSet<String> = answers
        .iter()
        .map(|(code, body)| {
            assert_eq!(*code, 200, "{body}");
            body["sandbox_url"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(urls.len(), 1, "all 50 answers carry the same URL: {urls:?}");
    assert!(!urls.iter().next().unwrap().is_empty());
    let lp = ListParams::default();
    assert_eq!(ns.pods().list(&lp).await.unwrap().items.len(), 1);
    assert_eq!(ns.services().list(&lp).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn failed_service_creation_removes_the_pod() {
    let ns = TestNamespace::new("rollback").await;
    // A quota that allows no node ports makes the apiserver refuse the Service.
    let quotas: Api<ResourceQuota> = Api::namespaced(ns.client.clone(), &ns.name);
    let quota: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "no-nodeports"}, "spec": {"hard": {"services.nodeports": "0"}}})).unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let status = json!({"status": {"hard": {"services.nodeports": "0"}, "used": {"services.nodeports": "0"}}});
    quotas
        .patch_status(
            "no-nodeports",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();

    let svc = service_in(&ns).await;
    let (code, body) = svc.create("rb-1", "thread-1").await;
    assert_eq!(code, 502, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("service"),
        "{body}"
    );
    eventually(
        Duration::from_secs(30),
        "the pod to be removed again",
        || async {
            ns.pods()
                .get_opt("sandbox-rb-1")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(ns.leftovers().await.is_empty());
}

#[tokio::test]
async fn a_pod_without_its_service_is_repaired_by_the_next_post() {
    let ns = TestNamespace::new("repair").await;
    let svc = service_in(&ns).await;
    let (code, _) = svc.create("fix-1", "thread-1").await;
    assert_eq!(code, 200);
    ns.services()
        .delete("sandbox-fix-1-svc", &Default::default())
        .await
        .unwrap();
    let (code, broken) = svc.get("fix-1").await;
    assert_eq!(code, 200);
    assert_eq!(broken["sandbox_url"], "");
    assert_eq!(broken["reason"], "ServiceMissing");
    let (code, repaired) = svc.create("fix-1", "thread-1").await;
    assert_eq!(code, 200, "{repaired}");
    assert!(repaired["sandbox_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(ns
        .services()
        .get_opt("sandbox-fix-1-svc")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn failure_reasons_reach_the_caller() {
    let ns = TestNamespace::new("reasons").await;
    for (image, id, reason, phase) in [
        (
            "sandbox:sim-image-pull-failure",
            "pull-1",
            "ImagePullBackOff",
            "Pending",
        ),
        (
            "sandbox:sim-crash-loop",
            "crash-1",
            "CrashLoopBackOff",
            "Running",
        ),
        (
            "sandbox:sim-unschedulable",
            "sched-1",
            "Unschedulable",
            "Pending",
        ),
        (
            "sandbox:sim-never-ready",
            "never-1",
            "ContainersNotReady",
            "Running",
        ),
    ] {
        let mut args = serve_args(&ns.name);
        args.sandbox.sandbox_image = image.into();
        let svc = TestService::start(args).await;
        let (code, _) = svc.create(id, "thread-1").await;
        assert_eq!(code, 200);
        let body = eventually(Duration::from_secs(30), reason, || async {
            let (_, body) = svc.get(id).await;
            (body["reason"] == reason).then_some(body)
        })
        .await;
        assert_eq!(body["status"], phase, "{body}");
        assert_eq!(body["ready"], false);
        assert!(body["message"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn list_shows_only_managed_sandboxes() {
    let ns = TestNamespace::new("list").await;
    let svc = service_in(&ns).await;
    assert_eq!(svc.create("l-1", "t1").await.0, 200);
    assert_eq!(svc.create("l-2", "t2").await.0, 200);
    let stranger: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stranger", "labels": {"app": "deer-flow-sandbox", "sandbox-id": "stranger"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }))
    .unwrap();
    ns.pods()
        .create(&PostParams::default(), &stranger)
        .await
        .unwrap();
    let (code, list) = svc.list().await;
    assert_eq!(code, 200);
    assert_eq!(list["count"], 2);
    let ids: Vec<&str> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["l-1", "l-2"]);
    // DELETE never touches what the service does not manage either.
    assert_eq!(svc.delete("stranger").await.0, 200);
    assert!(ns.pods().get_opt("stranger").await.unwrap().is_some());
}

#[tokio::test]
async fn deleting_an_absent_sandbox_is_ok() {
    let ns = TestNamespace::new("absent").await;
    let svc = service_in(&ns).await;
    let (code, body) = svc.delete("never-was").await;
    assert_eq!(
        (code, body),
        (200, json!({"ok": true, "sandbox_id": "never-was"}))
    );
}

#[tokio::test]
async fn missing_namespace_is_created_with_labels_and_again_when_it_disappears() {
    let ns = TestNamespace::uncreated("lazy").await;
    let namespaces: Api<Namespace> = Api::all(ns.client.clone());
    let svc = service_in(&ns).await;
    let (code, body) = svc.create("lazy-1", "thread-1").await;
    assert_eq!(code, 200, "{body}");
    let created = namespaces.get(&ns.name).await.unwrap();
    let labels = created.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/name"], "deer-flow");
    assert_eq!(labels["app.kubernetes.io/component"], "sandbox");

    ns.delete_and_wait("the namespace to be gone").await;
    let (code, body) = svc.create("lazy-2", "thread-1").await;
    assert_eq!(code, 200, "{body}");
    assert!(ns.pods().get_opt("sandbox-lazy-2").await.unwrap().is_some());
}

#[tokio::test]
async fn unreachable_apiserver_is_503_for_every_call() {
    let ns = TestNamespace::uncreated("down").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_server = Some(format!("https://127.0.0.1:{port}"));
    let svc = TestService::start(args).await;
    let create = json!({"sandbox_id": "d-1", "thread_id": "t"});
    for (method, path, body) in [
        (Method::POST, "/api/sandboxes", Some(create)),
        (Method::GET, "/api/sandboxes/d-1", None),
        (Method::GET, "/api/sandboxes", None),
        (Method::DELETE, "/api/sandboxes/d-1", None),
        // Never "absent" while the cluster cannot say.
        (Method::GET, "/api/sandboxes/d-1/presence", None),
    ] {
        let (code, answer) = svc.call(method.clone(), path, body).await;
        assert_eq!(code, 503, "{method} {path} -> {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(
            detail.contains("cannot reach the Kubernetes API"),
            "{detail}"
        );
    }
}

#[tokio::test]
async fn silent_apiserver_times_out_with_503() {
    let ns = TestNamespace::uncreated("silent").await;
    let (silent, url) = testkit::silent_apiserver();
    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_server = Some(url);
    args.cluster.k8s_api_timeout_seconds = 1.0;
    let svc = TestService::start(args).await;
    let started = std::time::Instant::now();
    let (code, answer) = svc.get("s-1").await;
    assert_eq!(code, 503, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(
        detail.contains("did not answer") || detail.contains("timed out"),
        "{detail}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "bounded by the configured timeout"
    );
    // Once the reachability probe has given up too, the answer says the same.
    testkit::eventually(Duration::from_secs(10), "the probe to give up", || async {
        let (_, caps) = svc.call(Method::GET, "/api/capabilities", None).await;
        (caps["clusters"][0]["reachable"] == false).then_some(())
    })
    .await;
    let (code, answer) = svc.get("s-1").await;
    assert_eq!(code, 503, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.contains("did not answer within 1s"), "{detail}");
    drop(silent);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let ns = TestNamespace::uncreated("routes").await;
    let svc = service_in(&ns).await;
    assert_eq!(
        svc.call(Method::GET, "/nope", None).await,
        (404, json!({"detail": "Not Found"}))
    );
    assert_eq!(
        svc.call(Method::PUT, "/api/sandboxes", None).await,
        (405, json!({"detail": "Method Not Allowed"}))
    );
}

/// The presence answer: status, whether the Pod exists, and its UID.
async fn presence(svc: &TestService, id: &str) -> (u16, Value) {
    svc.call(Method::GET, &format!("/api/sandboxes/{id}/presence"), None)
        .await
}

async fn pod_uid(ns: &TestNamespace, id: &str) -> String {
    let pod: Pod = ns.pods().get(&manifests::pod_name(id)).await.unwrap();
    pod.metadata.uid.unwrap()
}

#[tokio::test]
async fn container_id_is_the_pods_uid_and_presence_looks_at_the_pod_only() {
    use kube::api::DeleteParams;
    let ns = TestNamespace::new("presence").await;
    let svc = service_in(&ns).await;
    svc.synced().await;
    let (code, absent) = presence(&svc, "pres-1").await;
    assert_eq!(
        (code, absent),
        (
            200,
            json!({"sandbox_id": "pres-1", "exists": false, "container_id": null})
        )
    );

    // Every answer carries the Pod's UID.
    let (code, created) = svc.create("pres-1", "t").await;
    assert_eq!(code, 200, "{created}");
    let uid = pod_uid(&ns, "pres-1").await;
    assert_eq!(created["container_id"], uid.as_str());
    assert_eq!(svc.get("pres-1").await.1["container_id"], uid.as_str());
    let (_, listed) = svc.list().await;
    assert_eq!(listed["sandboxes"][0]["container_id"], uid.as_str());
    let (_, kept) = svc
        .call(Method::POST, "/api/sandboxes/pres-1/keepalive", None)
        .await;
    assert_eq!(kept["container_id"], uid.as_str());
    let (_, waited) = svc.get("pres-1?wait_ready=30").await;
    assert_eq!(waited["container_id"], uid.as_str());
    assert_eq!(
        presence(&svc, "pres-1").await,
        (
            200,
            json!({"sandbox_id": "pres-1", "exists": true, "container_id": uid})
        )
    );

    // A Pod without its Service still exists.
    ns.services()
        .delete("sandbox-pres-1-svc", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(presence(&svc, "pres-1").await.1["exists"], true);

    // A Pod that is being deleted still exists (a finalizer of the test holds it).
    let hold = json!({"metadata": {"finalizers": ["example.com/test-hold"]}});
    ns.pods()
        .patch(
            "sandbox-pres-1",
            &PatchParams::default(),
            &Patch::Merge(&hold),
        )
        .await
        .unwrap();
    ns.pods()
        .delete("sandbox-pres-1", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the cache to see the pod terminating",
        || async { (svc.get("pres-1").await.1["reason"] == "Terminating").then_some(()) },
    )
    .await;
    assert_eq!(
        presence(&svc, "pres-1").await,
        (
            200,
            json!({"sandbox_id": "pres-1", "exists": true, "container_id": uid})
        )
    );
    let release = json!({"metadata": {"finalizers": null}});
    ns.pods()
        .patch(
            "sandbox-pres-1",
            &PatchParams::default(),
            &Patch::Merge(&release),
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the pod to be gone", || async {
        (presence(&svc, "pres-1").await.1["exists"] == false).then_some(())
    })
    .await;

    // A Service without its Pod does not exist; the next POST repairs it with a new Pod.
    let (_, first) = svc.create("pres-2", "t").await;
    ns.pods()
        .delete("sandbox-pres-2", &DeleteParams::orphan().grace_period(0))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the pod to be gone", || async {
        ns.pods()
            .get_opt("sandbox-pres-2")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(ns
        .services()
        .get_opt("sandbox-pres-2-svc")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        presence(&svc, "pres-2").await,
        (
            200,
            json!({"sandbox_id": "pres-2", "exists": false, "container_id": null})
        )
    );
    let (code, repaired) = svc.create("pres-2", "t").await;
    assert_eq!(code, 200, "{repaired}");
    let repaired_uid = pod_uid(&ns, "pres-2").await;
    assert_eq!(repaired["container_id"], repaired_uid.as_str());
    assert_ne!(repaired["container_id"], first["container_id"]);

    // DELETE and create again: a new generation, and presence says so at once.
    assert_eq!(svc.delete("pres-2").await.0, 200);
    assert_eq!(presence(&svc, "pres-2").await.1["exists"], false);
    let (_, again) = svc.create("pres-2", "t").await;
    assert_ne!(again["container_id"], repaired["container_id"]);
    assert_eq!(again["container_id"], pod_uid(&ns, "pres-2").await.as_str());
    assert_eq!(
        presence(&svc, "pres-2").await.1["container_id"],
        again["container_id"]
    );

    // A bad id is 422 JSON, as on every route.
    let (code, body) = presence(&svc, "Bad_Id").await;
    assert_eq!(code, 422, "{body}");
}
