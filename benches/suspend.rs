//! What waking a suspended sandbox costs the request that wakes it: on the real node (kubelet +
//! containerd, the sandbox image built here, the node agent of `scripts/real-node`), through
//! the gateway, one sandbox at a time. Each round creates a sandbox (waiting until it is
//! ready), suspends it (`POST .../suspend`), waits (unmeasured) until the pool holds a ready
//! Pod, and then measures one `POST {sandbox_url}/v1/shell/exec` from its send to its answer:
//! the gateway sees the sandbox suspended, resumes it and holds the request until it is ready.
//!
//! - warm: a pool of 3 of the sandbox's size (target: p50 ≤ 300 ms);
//! - cold: no pool, the same image (the resume creates a Pod and waits for its boot).
//!
//! ```sh
//! eval "$(scripts/local-cluster up)" && cargo bench --bench suspend
//! ```
//!
//! DeerFlow's storage layout (thread data below THREADS_HOST_PATH, per-user skills below
//! DEER_FLOW_HOST_BASE_DIR), so that a warm wake binds three directories.
//!
//! BENCH_WARM_WAKES (default 20) and BENCH_COLD_WAKES (default 6) set the counts. It prints;
//! a human reads.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use kube::api::ListParams;
use serde_json::{json, Value};
use testkit::{
    bench_env, free_port, percentiles_ms, real_node_pod_template, real_node_running,
    real_node_slot_root, RunningBinary, TestNamespace, REAL_NODE_IMAGE,
};

const SECRET: &str = "bench-suspend-secret-0123456789abcdef";
const POOL: usize = 3;

fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The service in gateway mode on the real node, with a pool of `pool` (0: none).
async fn service(ns: &str, host: &Path, pool: usize) -> RunningBinary {
    let port = free_port();
    let mut env = bench_env(ns, REAL_NODE_IMAGE);
    env.extend([
        (
            "SANDBOX_POD_TEMPLATE",
            real_node_pod_template().display().to_string(),
        ),
        ("SANDBOX_URL_MODE", "gateway".into()),
        ("PROVISIONER_PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("PROVISIONER_GATEWAY_LISTEN", format!("127.0.0.1:{port}")),
        ("PROVISIONER_GATEWAY_SECRET", SECRET.into()),
        ("SANDBOX_SERVICE_TYPE", "None".into()),
        (
            "THREADS_HOST_PATH",
            host.join("threads").display().to_string(),
        ),
        ("DEER_FLOW_HOST_BASE_DIR", host.display().to_string()),
        (
            "SANDBOX_WARM_POOL_SLOT_ROOT",
            real_node_slot_root().display().to_string(),
        ),
    ]);
    if pool > 0 {
        env.push(("SANDBOX_WARM_POOL", format!("{{\"default\": {pool}}}")));
    }
    let (service, _) = RunningBinary::start_quiet(&env).await;
    service.wait_synced().await;
    service
}

/// Waits until the namespace has a ready, unclaimed pool Pod.
async fn until_pool_ready(ns: &TestNamespace) {
    let selector = format!(
        "{},!sandbox-id",
        sandbox_provisioner::spec::keys::POOL_LABEL
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pods = ns
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        let ready = pods.items.iter().any(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "ContainersReady" && c.status == "True")
                    })
        });
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "no ready pool Pod in 180 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, body: Value) -> Value {
    let response = http.request(method, url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Wakes measured: `rounds` sandboxes, each created, suspended and woken by one exec.
async fn wakes(
    ns: &TestNamespace,
    service: &RunningBinary,
    rounds: usize,
    warm: bool,
) -> Vec<Duration> {
    use reqwest::Method;
    let http = reqwest::Client::new();
    let base = &service.base;
    let mut measured = Vec::new();
    for i in 0..rounds {
        let id = format!("z-{i}");
        let created = call(
            &http,
            Method::POST,
            format!("{base}/api/sandboxes"),
            json!({"sandbox_id": id, "thread_id": id, "wait_ready_seconds": 120}),
        )
        .await;
        assert_eq!(created["ready"], true, "{created}");
        let suspended = call(
            &http,
            Method::POST,
            format!("{base}/api/sandboxes/{id}/suspend"),
            json!({}),
        )
        .await;
        assert_eq!(suspended["status"], "Suspended");
        if warm {
            until_pool_ready(ns).await;
        }
        let url = created["sandbox_url"].as_str().unwrap();
        let started = Instant::now();
        let answer = http
            .post(format!("{url}/v1/shell/exec"))
            .json(&json!({"command": "true"}))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(answer.status(), 200, "the waking request");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["data"]["exit_code"], 0, "{body}");
        measured.push(took);
        let gone = http
            .delete(format!("{base}/api/sandboxes/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 200);
    }
    measured
}

#[tokio::main]
async fn main() {
    if !real_node_running().await {
        println!("suspend bench skipped: no real node on this machine");
        return;
    }
    let (warm_n, cold_n) = (count("BENCH_WARM_WAKES", 20), count("BENCH_COLD_WAKES", 6));
    let host = std::env::temp_dir().join(format!("bench-suspend-{}", testkit::random_suffix()));
    // DeerFlow's layout, as in the warm pool bench: a claim binds three directories.
    for dir in [
        "threads",
        "skills_view/public",
        "users/default/skills_view/custom",
        "users/default/skills_view/legacy",
    ] {
        std::fs::create_dir_all(host.join(dir)).unwrap();
    }

    let ns = TestNamespace::new("bench-wake-cold").await;
    let cold_service = service(&ns.name, &host, 0).await;
    let cold = wakes(&ns, &cold_service, cold_n, false).await;
    drop(cold_service);
    drop(ns);
    let ns = TestNamespace::new("bench-wake-warm").await;
    let warm_service = service(&ns.name, &host, POOL).await;
    until_pool_ready(&ns).await;
    let warm = wakes(&ns, &warm_service, warm_n, true).await;
    drop(warm_service);
    drop(ns);
    let _ = std::fs::remove_dir_all(&host);

    let (warm, cold) = (percentiles_ms(warm), percentiles_ms(cold));
    println!("{warm_n} warm and {cold_n} cold wakes, one at a time, through the gateway");
    println!();
    println!("| wake | request on a suspended sandbox → its answer (p50 / p99) |");
    println!("| --- | --- |");
    println!(
        "| warm (a ready pool Pod) | {:.1} / {:.1} ms |",
        warm.0, warm.1
    );
    println!("| cold (no pool) | {:.0} / {:.0} ms |", cold.0, cold.1);
}
