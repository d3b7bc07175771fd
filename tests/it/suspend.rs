//! Suspend and resume on the real node: a suspended sandbox keeps its record, URL and files
//! with no Pod, and its next request through the gateway wakes it (once, also when two replicas
//! see the first requests); the idle timeout suspends and the maximum age deletes; a restart
//! keeps suspended sandboxes; a resume the quota refuses is 429 through the API and the
//! gateway.

use std::time::Duration;

use http::Method;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::ListParams;
use sandbox_provisioner::{admission::hex_digest, config::ServeArgs};
use serde_json::{json, Value};
use testkit::{
    eventually, gateway_mode, real_node_gateway_args, real_node_running, warm_pool_mode,
    TestNamespace, TestService,
};

use crate::real_node::{exec, http_client, HostDir};

/// Sizes that ask for a hundredth of a core (the real node has two for every test at once),
/// with a limit of one core each.
fn small_sizes(args: &mut ServeArgs) {
    args.sizes.sandbox_sizes = Some(
        r#"{"default": {"requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"}}}"#
            .into(),
    );
}

/// The live (not terminating) Pods of sandbox `id`.
async fn live_pods(ns: &TestNamespace, id: &str) -> Vec<Pod> {
    ns.pods()
        .list(&ListParams::default().labels(&format!("sandbox-id={id}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The suspended sandbox's record, if it exists.
async fn record(ns: &TestNamespace, id: &str) -> Option<ConfigMap> {
    kube::Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
        .get_opt(&format!("sandbox-{id}"))
        .await
        .unwrap()
}

/// Creates a sandbox and waits until it is ready.
async fn create_ready(service: &TestService, id: &str, thread: &str) -> Value {
    let (status, answer) = service
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": id, "thread_id": thread, "wait_ready_seconds": 90})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], true, "{answer}");
    answer
}

async fn suspend(service: &TestService, id: &str) -> (u16, Value) {
    service
        .call(Method::POST, &format!("/api/sandboxes/{id}/suspend"), None)
        .await
}

/// Asserts what every read says of a suspended sandbox.
async fn reads_suspended(service: &TestService, ns: &TestNamespace, id: &str, url: &str) {
    let (status, got) = service.get(id).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (&got["status"], &got["ready"], &got["container_id"]),
        (&json!("Suspended"), &json!(false), &Value::Null),
        "{got}"
    );
    assert_eq!(got["sandbox_url"], url, "the URL stays");
    let (_, list) = service.list().await;
    let listed = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sandbox_id"] == id)
        .unwrap_or_else(|| panic!("{id} missing from {list}"));
    assert_eq!(listed["status"], "Suspended", "{list}");
    let (_, presence) = service
        .call(Method::GET, &format!("/api/sandboxes/{id}/presence"), None)
        .await;
    assert_eq!(
        (&presence["exists"], &presence["suspended"]),
        (&json!(false), &json!(true)),
        "{presence}"
    );
    assert!(live_pods(ns, id).await.is_empty(), "no Pod while suspended");
    assert!(record(ns, id).await.is_some(), "the record exists");
}

#[tokio::test]
async fn a_suspended_sandbox_keeps_its_url_and_files_and_wakes_on_its_next_request() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("suspend-wake").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    small_sizes(&mut args);
    let service = TestService::start(args).await;
    let created = create_ready(&service, "s-1", "t-1").await;
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    let http = http_client();
    let (out, code) = exec(
        &http,
        &url,
        "echo kept > /mnt/user-data/kept.txt && echo ok",
    )
    .await;
    assert_eq!((out.trim(), code), ("ok", 0));

    let (status, suspended) = suspend(&service, "s-1").await;
    assert_eq!(status, 200, "{suspended}");
    assert_eq!(suspended["status"], "Suspended", "{suspended}");
    reads_suspended(&service, &ns, "s-1", &url).await;
    let kept = record(&ns, "s-1").await.unwrap();
    let labels = kept.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("sandbox-provisioner"),
        "{labels:?}"
    );
    // Suspending again answers the same.
    let (status, again) = suspend(&service, "s-1").await;
    assert_eq!((status, &again["status"]), (200, &json!("Suspended")));

    // The next request through the gateway wakes it; the file is there.
    let (out, code) = exec(&http, &url, "cat /mnt/user-data/kept.txt").await;
    assert_eq!((out.trim(), code), ("kept", 0), "the woken sandbox's files");
    let (status, woken) = service.get("s-1").await;
    assert_eq!(status, 200);
    assert_eq!(
        (&woken["status"], &woken["ready"]),
        (&json!("Running"), &json!(true))
    );
    assert_eq!(woken["sandbox_url"], url);
    assert_ne!(woken["container_id"], created["container_id"], "a new Pod");
    assert!(woken["container_id"].is_string(), "{woken}");
    assert_eq!(live_pods(&ns, "s-1").await.len(), 1);
    eventually(Duration::from_secs(10), "the record removed", || async {
        record(&ns, "s-1").await.is_none().then_some(())
    })
    .await;
    let resumes = r#"sandbox_provisioner_resumes_total{cluster="default",trigger="traffic"}"#;
    eventually(Duration::from_secs(10), "the resume counted", || async {
        (service.metric(resumes).await == 1.0).then_some(())
    })
    .await;

    // The resume endpoint wakes it too, and DELETE of a suspended sandbox removes its record.
    assert_eq!(suspend(&service, "s-1").await.0, 200);
    let (status, resumed) = service
        .call(
            Method::POST,
            "/api/sandboxes/s-1/resume?wait_ready=60",
            None,
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["ready"], true, "{resumed}");
    assert_eq!(resumed["sandbox_url"], url);
    // So does a create of the same thread; another thread's is refused and wakes nothing.
    assert_eq!(suspend(&service, "s-1").await.0, 200);
    let (status, conflict) = service.create("s-1", "t-other").await;
    assert_eq!(status, 409, "{conflict}");
    assert!(record(&ns, "s-1").await.is_some(), "still suspended");
    let (status, recreated) = service.create("s-1", "t-1").await;
    assert_eq!(status, 200, "{recreated}");
    assert_eq!(recreated["sandbox_url"], url);
    assert_eq!(
        recreated["created_at"], created["created_at"],
        "the same sandbox"
    );
    assert_eq!(live_pods(&ns, "s-1").await.len(), 1);
    let by_create = r#"sandbox_provisioner_resumes_total{cluster="default",trigger="create"}"#;
    assert_eq!(service.metric(by_create).await, 1.0);
    assert_eq!(suspend(&service, "s-1").await.0, 200);
    let (status, _) = service.delete("s-1").await;
    assert_eq!(status, 200);
    assert!(
        record(&ns, "s-1").await.is_none(),
        "the record went with it"
    );
    assert_eq!(service.get("s-1").await.0, 404);
    let (status, _) = suspend(&service, "s-1").await;
    assert_eq!(status, 404);
    // The thread's files outlive it all.
    assert_eq!(
        std::fs::read_to_string(host.0.join("threads/t-1/user-data/kept.txt"))
            .unwrap()
            .trim(),
        "kept"
    );
}

#[tokio::test]
async fn concurrent_wakes_through_two_replicas_make_one_pod_from_the_warm_pool() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("suspend-race").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    warm_pool_mode(&mut args, r#"{"default": 1}"#);
    args.lifecycle.sandbox_leader_lease = "3s".into();
    let mut second = args.clone();
    gateway_mode(&mut second);
    let a = TestService::start(args).await;
    let b = TestService::start(second).await;
    let created = create_ready(&a, "r-1", "t-r").await;
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    assert_eq!(suspend(&a, "r-1").await.0, 200);
    // A ready pool Pod to wake into.
    eventually(Duration::from_secs(120), "a ready pool Pod", || async {
        let (_, caps) = a.call(Method::GET, "/api/capabilities", None).await;
        (caps["clusters"][0]["warm_pools"][0]["ready"] == 1).then_some(())
    })
    .await;

    // The same path through either replica (the token is the deployment's, not a replica's).
    let path = &url[url.find("/sandboxes/").unwrap()..];
    let http = http_client();
    let requests = (0..8).map(|i| {
        let base = if i % 2 == 0 { a.url("") } else { b.url("") };
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let http = http.clone();
        async move { exec(&http, &url, "echo awake").await }
    });
    for (out, code) in futures::future::join_all(requests).await {
        assert_eq!((out.trim(), code), ("awake", 0));
    }
    let pods = live_pods(&ns, "r-1").await;
    assert_eq!(pods.len(), 1, "one Pod: {pods:?}");
    let name = pods[0].metadata.name.clone().unwrap();
    assert!(name.starts_with("sandbox-pool-"), "woken warm: {name}");
    eventually(Duration::from_secs(10), "one resume counted", || async {
        (traffic_resumes(&a).await + traffic_resumes(&b).await == 1.0).then_some(())
    })
    .await;
    assert!(record(&ns, "r-1").await.is_none());
}

async fn traffic_resumes(service: &TestService) -> f64 {
    service
        .metric(r#"sandbox_provisioner_resumes_total{cluster="default",trigger="traffic"}"#)
        .await
}

/// The sandbox's status as LIST shows it (a listing is not activity), or None when unlisted.
async fn listed_status(service: &TestService, id: &str) -> Option<String> {
    let (_, list) = service.list().await;
    list["sandboxes"]
        .as_array()?
        .iter()
        .find(|s| s["sandbox_id"] == id)
        .and_then(|s| s["status"].as_str().map(str::to_string))
}

#[tokio::test]
async fn idle_sandboxes_are_suspended_and_deleted_after_the_maximum_age() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("suspend-idle").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    small_sizes(&mut args);
    args.lifecycle.sandbox_idle_timeout = "3s".into();
    args.lifecycle.sandbox_idle_action = "suspend".into();
    args.lifecycle.sandbox_suspended_max_age = "8s".into();
    args.lifecycle.sandbox_reap_interval = "1s".into();
    let service = TestService::start(args).await;
    // Not waited for: with a 3 s idle timeout, a busy node may still be starting it when the
    // reaper finds it idle (which suspends a starting sandbox just the same).
    let (status, created) = service.create("i-1", "t-i").await;
    assert_eq!(status, 200, "{created}");
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(30), "suspended when idle", || async {
        (listed_status(&service, "i-1").await.as_deref() == Some("Suspended")).then_some(())
    })
    .await;
    reads_suspended(&service, &ns, "i-1", &url).await;
    let suspends = r#"sandbox_provisioner_suspends_total{cluster="default",trigger="idle"}"#;
    assert_eq!(service.metric(suspends).await, 1.0);
    eventually(
        Duration::from_secs(30),
        "deleted after the maximum age",
        || async {
            let gone = listed_status(&service, "i-1").await.is_none()
                && record(&ns, "i-1").await.is_none();
            gone.then_some(())
        },
    )
    .await;
    let deleted = r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="suspended-max-age"}"#;
    assert_eq!(service.metric(deleted).await, 1.0);
    assert_eq!(service.get("i-1").await.0, 404);
}

#[tokio::test]
async fn a_restarted_provisioner_keeps_suspended_sandboxes_and_their_urls() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("suspend-restart").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    small_sizes(&mut args);
    let first = TestService::start(args.clone()).await;
    let created = create_ready(&first, "k-1", "t-k").await;
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    let http = http_client();
    let (_, code) = exec(&http, &url, "echo before > /mnt/user-data/restart.txt").await;
    assert_eq!(code, 0);
    assert_eq!(suspend(&first, "k-1").await.0, 200);
    first.stop_gracefully().await;

    // Another process on the same address: everything it knows comes from the cluster.
    let second = TestService::start(args).await;
    second.synced().await;
    reads_suspended(&second, &ns, "k-1", &url).await;
    let (out, code) = exec(&http, &url, "cat /mnt/user-data/restart.txt").await;
    assert_eq!((out.trim(), code), ("before", 0));
    let (_, woken) = second.get("k-1").await;
    assert_eq!(
        (&woken["ready"], &woken["sandbox_url"]),
        (&json!(true), &json!(url))
    );
}

const KEY: &str = "key-of-the-quota-tenant-0123";
const OTHER_KEY: &str = "key-of-another-tenant-01234";

/// A call with the tenant's key.
async fn keyed(
    service: &TestService,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    keyed_as(KEY, service, method, path, body).await
}

/// A call with `key`.
async fn keyed_as(
    key: &str,
    service: &TestService,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = service
        .http
        .request(method, service.url(path))
        .header("x-api-key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_resume_the_quota_refuses_is_429_through_the_api_and_the_gateway() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("suspend-quota").await;
    let host = HostDir::new(&ns);
    let tenants = std::env::temp_dir().join(format!("tenants-{}.json", ns.name));
    let file = json!({"tenants": [{"name": "team", "api_key_sha256": hex_digest(KEY),
                                   "max_cpu": "1", "max_sandboxes": 2},
                                  {"name": "other", "api_key_sha256": hex_digest(OTHER_KEY)}]});
    std::fs::write(&tenants, file.to_string()).unwrap();
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    small_sizes(&mut args);
    args.http.allow_no_api_key = false;
    args.tenancy.tenants = Some(tenants.clone());
    let service = TestService::start(args).await;
    let create = |id: &'static str| {
        keyed(
            &service,
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": id, "thread_id": id, "wait_ready_seconds": 90})),
        )
    };
    let first: Value = create("q-1").await.json().await.unwrap();
    assert_eq!(first["ready"], true, "{first}");
    let url = first["sandbox_url"].as_str().unwrap().to_string();
    let suspended = keyed(&service, Method::POST, "/api/sandboxes/q-1/suspend", None).await;
    assert_eq!(suspended.status(), 200);
    // Suspended, it holds no CPU: the second (one core) fits, and a third sandbox does not.
    let second = create("q-2").await;
    assert_eq!(second.status(), 200, "{:?}", second.text().await);
    let third = create("q-3").await;
    assert_eq!(third.status(), 429, "a suspended sandbox still counts");

    let refused = keyed(&service, Method::POST, "/api/sandboxes/q-1/resume", None).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let detail: Value = refused.json().await.unwrap();
    assert!(
        detail["detail"].as_str().unwrap().contains("max_cpu"),
        "{detail}"
    );
    let through_gateway = http_client()
        .post(format!("{url}/v1/shell/exec"))
        .json(&json!({"command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(through_gateway.status(), 429);
    assert!(through_gateway.headers().contains_key("retry-after"));
    let (status, got) = {
        let r = keyed(&service, Method::GET, "/api/sandboxes/q-1", None).await;
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status, &got["status"]),
        (200, &json!("Suspended")),
        "it stays suspended"
    );
    // Another tenant neither sees nor touches it.
    for (method, path) in [
        (Method::GET, "/api/sandboxes/q-1"),
        (Method::POST, "/api/sandboxes/q-1/resume"),
        (Method::POST, "/api/sandboxes/q-1/suspend"),
        (Method::DELETE, "/api/sandboxes/q-1"),
    ] {
        let answer = keyed_as(OTHER_KEY, &service, method.clone(), path, None).await;
        assert_eq!(answer.status(), 404, "{method} {path}");
    }
    assert!(record(&ns, "q-1").await.is_some());

    // Room again: the resume goes through.
    assert_eq!(
        keyed(&service, Method::DELETE, "/api/sandboxes/q-2", None)
            .await
            .status(),
        200
    );
    let resumed = keyed(&service, Method::POST, "/api/sandboxes/q-1/resume", None).await;
    assert_eq!(resumed.status(), 200);
    let _ = std::fs::remove_file(&tenants);
}
