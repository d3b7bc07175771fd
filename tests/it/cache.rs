//! Reads from the watch cache, read-your-writes, waiting for readiness without polling, and the
//! number of apiserver writes a create costs, counted by the service's own metrics.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use testkit::{serve_args, TestNamespace, TestService};

#[tokio::test]
async fn get_and_list_make_no_apiserver_calls_once_synced() {
    let ns = TestNamespace::new("cache-reads").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    svc.synced().await;
    for id in ["cr-1", "cr-2"] {
        assert_eq!(svc.create(id, "t").await.0, 200);
    }
    let before = svc.kube_calls().await;
    for _ in 0..20 {
        assert_eq!(svc.get("cr-1").await.0, 200);
    }
    for _ in 0..5 {
        let (code, list) = svc.list().await;
        assert_eq!((code, &list["count"]), (200, &json!(2)));
    }
    let after = svc.kube_calls().await;
    assert_eq!(before, after, "reads went to the apiserver");
}

#[tokio::test]
async fn a_read_right_after_a_write_sees_it() {
    let ns = TestNamespace::new("cache-ryw").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    svc.synced().await;
    for round in 0..10 {
        let id = format!("ryw-{round}");
        let (code, created) = svc.create(&id, "t").await;
        assert_eq!(code, 200);
        let (code, got) = svc.get(&id).await;
        assert_eq!(code, 200, "GET right after POST: {got}");
        assert_eq!(got["sandbox_url"], created["sandbox_url"]);
        assert!(svc.list().await.1["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sandbox_id"] == id.as_str()));
        assert_eq!(svc.delete(&id).await.0, 200);
        assert_eq!(svc.get(&id).await.0, 404, "GET right after DELETE");
        assert!(!svc.list().await.1["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sandbox_id"] == id.as_str()));
    }
}

#[tokio::test]
async fn a_cold_create_costs_exactly_two_writes() {
    let ns = TestNamespace::new("cache-writes").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    svc.synced().await;
    assert_eq!(svc.create("warm-1", "t").await.0, 200);
    let before = svc.kube_calls().await;
    assert_eq!(svc.create("cold-1", "t").await.0, 200);
    let after = svc.kube_calls().await;
    let delta: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    assert_eq!(
        delta,
        vec![
            ("create pods".to_string(), 1),
            ("create services".to_string(), 1)
        ],
        "a create makes the pod and the service write and nothing else"
    );
}

#[tokio::test]
async fn waiting_for_readiness_returns_when_ready() {
    let ns = TestNamespace::new("wait-ready").await;
    let mut args = serve_args(&ns.name);
    args.sandbox.sandbox_image = "sandbox:sim-delay-1500".into();
    let svc = TestService::start(args).await;
    svc.synced().await;
    let started = Instant::now();
    let (code, body) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "w-1", "thread_id": "t", "wait_ready_seconds": 30})),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["ready"].as_bool()),
        (Some("Running"), Some(true)),
        "{body}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "answered before the pod could be ready: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "waited out the whole limit although the pod became ready"
    );

    assert_eq!(svc.create("w-2", "t").await.0, 200);
    let (code, body) = svc
        .call(Method::GET, "/api/sandboxes/w-2?wait_ready=30", None)
        .await;
    assert_eq!((code, body["ready"].as_bool()), (200, Some(true)), "{body}");
}

#[tokio::test]
async fn waiting_stops_at_once_on_failure_and_at_the_limit_otherwise() {
    let ns = TestNamespace::new("wait-fail").await;
    let mut pull = serve_args(&ns.name);
    pull.sandbox.sandbox_image = "sandbox:sim-image-pull-failure".into();
    let pull = TestService::start(pull).await;
    pull.synced().await;
    let started = Instant::now();
    let (code, body) = pull
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "f-1", "thread_id": "t", "wait_ready_seconds": 60})),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["ready"].as_bool(), body["reason"].as_str()),
        (Some(false), Some("ImagePullBackOff")),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a hopeless sandbox must not be waited for"
    );

    let mut never = serve_args(&ns.name);
    never.sandbox.sandbox_image = "sandbox:sim-never-ready".into();
    let never = TestService::start(never).await;
    assert_eq!(never.create("n-1", "t").await.0, 200);
    let started = Instant::now();
    let (code, body) = never
        .call(Method::GET, "/api/sandboxes/n-1?wait_ready=2", None)
        .await;
    assert_eq!(
        (code, body["ready"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "answered before the limit: {:?}",
        started.elapsed()
    );

    for bad in ["-1", "301", "abc", "NaN", "1.5"] {
        let (code, body) = never
            .call(
                Method::GET,
                &format!("/api/sandboxes/n-1?wait_ready={bad}"),
                None,
            )
            .await;
        assert_eq!(code, 422, "wait_ready={bad}: {body}");
    }
    let (code, _) = never
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "n-2", "thread_id": "t", "wait_ready_seconds": -5})),
        )
        .await;
    assert_eq!(code, 422);
    assert!(
        never.get("n-2").await.0 == 404,
        "a refused create makes nothing"
    );
}
