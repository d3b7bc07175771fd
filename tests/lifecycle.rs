//! Expiry against the real apiserver with short timers: lifetime, idle (with and without
//! keepalive), never-ready, and activity that survives a restart.

mod common;

use std::time::Duration;

use common::{eventually, serve_args, TestNamespace, TestService};
use k8s_openapi::jiff::Timestamp;
use reqwest::Method;
use serde_json::json;

/// Reclaim lag the issue promises: the reap interval plus 5 s.
const LAG: Duration = Duration::from_secs(1 + 5);

async fn pod_exists(ns: &TestNamespace, id: &str) -> bool {
    ns.pods()
        .get_opt(&format!("sandbox-{id}"))
        .await
        .unwrap()
        .is_some()
}

async fn gone_within(ns: &TestNamespace, id: &str, limit: Duration) {
    eventually(limit, &format!("{id} to be removed"), || async {
        (!pod_exists(ns, id).await).then_some(())
    })
    .await;
}

fn fast(ns: &TestNamespace) -> sandbox_provisioner::config::ServeArgs {
    let mut args = serve_args(&ns.name);
    args.sandbox_reap_interval = "1s".into();
    args.sandbox_ready_timeout = "0".into();
    args
}

#[tokio::test]
async fn lifetime_removes_exactly_the_expired_sandbox() {
    let ns = TestNamespace::new("lifetime").await;
    let svc = TestService::start(fast(&ns)).await;
    let (code, short) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "lt-1", "thread_id": "t", "ttl_seconds": 2})),
        )
        .await;
    assert_eq!(code, 200, "{short}");
    let created: Timestamp = short["created_at"].as_str().unwrap().parse().unwrap();
    let expires: Timestamp = short["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(created).as_secs(), 2);
    let (_, kept) = svc.create("keep-1", "t").await;
    assert!(kept["expires_at"].is_null(), "{kept}");

    gone_within(&ns, "lt-1", Duration::from_secs(2) + LAG).await;
    assert_eq!(svc.get("lt-1").await.0, 404);
    assert!(
        pod_exists(&ns, "keep-1").await,
        "a sandbox without a lifetime stays"
    );
    let metrics = svc
        .http
        .get(svc.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"sandbox_provisioner_sandbox_deletions_total{reason="lifetime"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn idle_sandboxes_go_and_kept_alive_ones_stay() {
    let ns = TestNamespace::new("idle").await;
    let mut args = fast(&ns);
    args.sandbox_idle_timeout = "3s".into();
    let svc = TestService::start(args).await;
    assert_eq!(svc.create("idle-1", "t").await.0, 200);
    assert_eq!(svc.create("busy-1", "t").await.0, 200);
    assert_eq!(svc.create("read-1", "t").await.0, 200);
    // busy-1 gets keepalives, read-1 gets GETs, idle-1 nothing, for twice the idle timeout.
    let started = std::time::Instant::now();
    let mut last_expiry = String::new();
    while started.elapsed() < Duration::from_secs(6) {
        let (code, body) = svc
            .call(Method::POST, "/api/sandboxes/busy-1/keepalive", None)
            .await;
        assert_eq!(code, 200, "{body}");
        last_expiry = body["expires_at"].as_str().unwrap().to_string();
        assert_eq!(svc.get("read-1").await.0, 200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        !pod_exists(&ns, "idle-1").await,
        "idle-1 was idle for 6 s with a 3 s timeout"
    );
    assert!(
        pod_exists(&ns, "busy-1").await && pod_exists(&ns, "read-1").await,
        "activity keeps sandboxes"
    );
    let expiry: Timestamp = last_expiry.parse().unwrap();
    assert!(
        expiry > Timestamp::now(),
        "keepalive moves the deadline ahead"
    );
    // Once left alone, they go too.
    gone_within(&ns, "busy-1", Duration::from_secs(3) + LAG).await;
    gone_within(&ns, "read-1", Duration::from_secs(3) + LAG).await;
    assert_eq!(
        svc.call(Method::POST, "/api/sandboxes/busy-1/keepalive", None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn never_ready_sandboxes_are_removed_and_ready_ones_are_not() {
    let ns = TestNamespace::new("neverready").await;
    let with_image = |image: &str| {
        let mut args = fast(&ns);
        args.sandbox_ready_timeout = "2s".into();
        args.sandbox_image = image.into();
        args
    };
    let ready = TestService::start(with_image("sandbox:test")).await;
    let never = TestService::start(with_image("sandbox:sim-never-ready")).await;
    let pull = TestService::start(with_image("sandbox:sim-image-pull-failure")).await;
    assert_eq!(ready.create("ok-1", "t").await.0, 200);
    assert_eq!(never.create("nr-1", "t").await.0, 200);
    assert_eq!(pull.create("pull-1", "t").await.0, 200);
    gone_within(&ns, "nr-1", Duration::from_secs(2) + LAG).await;
    gone_within(&ns, "pull-1", Duration::from_secs(2) + LAG).await;
    assert!(
        pod_exists(&ns, "ok-1").await,
        "a ready sandbox is not touched by the ready timeout"
    );
    let mut removed = 0.0;
    for svc in [&ready, &never, &pull] {
        let metrics = svc
            .http
            .get(svc.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        removed += metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"sandbox_provisioner_sandbox_deletions_total{reason="never-ready"} "#,
                )
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    }
    assert!(
        removed >= 2.0,
        "never-ready deletions are counted: {removed}"
    );
}

#[tokio::test]
async fn activity_is_written_to_the_pod_and_survives_a_restart() {
    let ns = TestNamespace::new("activity").await;
    let mut args = fast(&ns);
    args.sandbox_idle_timeout = "10m".into();
    args.sandbox_activity_persist_interval = "0".into();
    let first = TestService::start(args.clone()).await;
    assert_eq!(first.create("act-1", "t").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, seen) = first.get("act-1").await;
    let seen_expiry: Timestamp = seen["expires_at"].as_str().unwrap().parse().unwrap();
    let activity = seen_expiry
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(600))
        .unwrap();
    // The GET's activity is written to the pod in the background.
    let recorded = eventually(
        Duration::from_secs(10),
        "the GET's activity on the pod",
        || async {
            let pod = ns.pods().get("sandbox-act-1").await.ok()?;
            let value = pod
                .metadata
                .annotations?
                .get("sandbox-provisioner.dev/last-activity")
                .cloned()?;
            (value.parse::<Timestamp>().ok()? == activity).then_some(value)
        },
    )
    .await;
    drop(first);

    let second = TestService::start(args).await;
    let (code, body) = second.call(Method::GET, "/api/sandboxes", None).await;
    assert_eq!(code, 200);
    let listed = body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sandbox_id"] == "act-1")
        .unwrap()
        .clone();
    let recorded: Timestamp = recorded.parse().unwrap();
    let expires: Timestamp = listed["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(recorded).as_secs(), 600, "{listed}");
    assert_eq!(
        listed["expires_at"], seen["expires_at"],
        "a new process sees the deadline the old one computed"
    );
}
