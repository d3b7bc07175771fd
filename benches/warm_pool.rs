//! What a warm pool saves a new thread: on the real node (kubelet + containerd, the sandbox
//! image built here and present on the node, the node agent of `scripts/real-node`), through
//! the gateway, one create at a time:
//!
//! DeerFlow's storage layout (thread data below THREADS_HOST_PATH, per-user skills below
//! DEER_FLOW_HOST_BASE_DIR), so that each claim binds three directories.
//!
//! - warm (a pool of 10): POST → its answer with `ready: true`, and POST → the first
//!   successful `POST {sandbox_url}/v1/shell/exec` (targets: answer p50 ≤ 50 ms, p99 ≤ 150 ms;
//!   first exec p50 ≤ 100 ms); each create waits (unmeasured) until the pool holds 8 ready Pods
//!   again, so that every create finds one;
//! - cold (no pool): POST → the first successful exec, polled every 20 ms;
//!
//! both for the image as built here (it serves about 0.1 s after its start) and with a boot as
//! long as DeerFlow's all-in-one image's (`SANDBOX_START_DELAY_MS=3700`, the container start
//! DeerFlow measured), to show the gap a user sees. The pool's Pods boot just as long, but
//! before anyone asks.
//!
//! ```sh
//! eval "$(scripts/local-cluster up)" && cargo bench --bench warm_pool
//! ```
//!
//! BENCH_WARM_CREATES (default 30) and BENCH_COLD_CREATES (default 8) set the counts. It
//! prints; a human reads.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kube::api::ListParams;
use serde_json::{json, Value};
use testkit::{
    bench_env, free_port, percentiles_ms, real_node_pod_template, real_node_running,
    real_node_slot_root, RunningBinary, TestNamespace, REAL_NODE_IMAGE,
};

const SECRET: &str = "bench-warm-secret-0123456789abcdef";
const POOL: usize = 10;

fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The real node's pod template, with the image's start delayed by `boot_ms`.
fn template(dir: &Path, boot_ms: Option<u64>) -> PathBuf {
    let mut text = std::fs::read_to_string(real_node_pod_template()).unwrap();
    if let Some(ms) = boot_ms {
        text.push_str(&format!(
            "        - name: SANDBOX_START_DELAY_MS\n          value: \"{ms}\"\n"
        ));
    }
    let path = dir.join(format!("template-{}.yaml", boot_ms.unwrap_or(0)));
    std::fs::write(&path, text).unwrap();
    path
}

/// The service in gateway mode on the real node, with a pool of `pool` (0: none).
async fn service(ns: &str, host: &Path, template: &Path, pool: usize) -> RunningBinary {
    let port = free_port();
    let mut env = bench_env(ns, REAL_NODE_IMAGE);
    env.extend([
        ("SANDBOX_POD_TEMPLATE", template.display().to_string()),
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

/// Unclaimed pool Pods whose containers are ready.
async fn ready_in_pool(ns: &TestNamespace) -> usize {
    let selector = format!(
        "{},!sandbox-id",
        sandbox_provisioner::spec::keys::POOL_LABEL
    );
    let pods = ns
        .pods()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    pods.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "ContainersReady" && c.status == "True")
                })
        })
        .count()
}

/// Stops the namespace's Pods and waits until the node has let them all go.
async fn emptied(ns: TestNamespace) {
    use kube::api::DeleteParams;
    let pods = ns.pods();
    let _ = pods
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the namespace's Pods did not go in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(ns);
}

async fn until_pool_holds(ns: &TestNamespace, wanted: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while ready_in_pool(ns).await < wanted {
        assert!(
            Instant::now() < deadline,
            "the pool did not refill in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes a measured sandbox: the node has room for about twenty (CPU requests).
async fn delete(http: &reqwest::Client, service: &RunningBinary, id: &str) {
    let response = http
        .delete(format!("{}/api/sandboxes/{id}", service.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn post(http: &reqwest::Client, service: &RunningBinary, id: &str) -> Value {
    let response = http
        .post(format!("{}/api/sandboxes", service.base))
        .json(&json!({"sandbox_id": id, "thread_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Runs `true` in the sandbox until it succeeds, every `every`; returns when it did.
async fn first_exec(http: &reqwest::Client, url: &str, every: Duration) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let answer = http
            .post(format!("{url}/v1/shell/exec"))
            .json(&json!({"command": "true"}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(answer) = answer {
            if answer.status() == 200 {
                let body: Value = answer.json().await.unwrap_or_default();
                if body["data"]["exit_code"] == 0 {
                    return Instant::now();
                }
            }
        }
        assert!(Instant::now() < deadline, "no exec in 120 s: {url}");
        tokio::time::sleep(every).await;
    }
}

struct Figures {
    answer: (f64, f64),
    all_ready: bool,
    warm_exec: (f64, f64),
    cold_exec: (f64, f64),
}

async fn case(label: &str, boot_ms: Option<u64>) -> Figures {
    let (warm_n, cold_n) = (
        count("BENCH_WARM_CREATES", 30),
        count("BENCH_COLD_CREATES", 8),
    );
    let host = std::env::temp_dir().join(format!("bench-warm-{}", testkit::random_suffix()));
    // DeerFlow's layout: per-user skills below the base directory, so that a claim binds the
    // user data and the user's two skills directories.
    for dir in [
        "threads",
        "skills_view/public",
        "users/default/skills_view/custom",
        "users/default/skills_view/legacy",
    ] {
        std::fs::create_dir_all(host.join(dir)).unwrap();
    }
    let template = template(&host, boot_ms);
    let http = reqwest::Client::new();

    // Cold first, on a node with nothing else to do; each namespace is emptied before the next.
    let ns = TestNamespace::new("bench-cold").await;
    let cold = service(&ns.name, &host, &template, 0).await;
    let mut cold_execs = Vec::new();
    for i in 0..cold_n {
        let started = Instant::now();
        let answer = post(&http, &cold, &format!("c-{i}")).await;
        let url = answer["sandbox_url"].as_str().unwrap();
        cold_execs.push(first_exec(&http, url, Duration::from_millis(20)).await - started);
        delete(&http, &cold, &format!("c-{i}")).await;
    }
    drop(cold);
    emptied(ns).await;
    let ns = TestNamespace::new("bench-warm").await;
    let warm = service(&ns.name, &host, &template, POOL).await;
    until_pool_holds(&ns, POOL).await;
    let (mut answers, mut execs, mut all_ready) = (Vec::new(), Vec::new(), true);
    for i in 0..warm_n {
        until_pool_holds(&ns, POOL - 2).await;
        let started = Instant::now();
        let answer = post(&http, &warm, &format!("w-{i}")).await;
        answers.push(started.elapsed());
        all_ready &= answer["ready"] == true;
        let url = answer["sandbox_url"].as_str().unwrap();
        execs.push(first_exec(&http, url, Duration::from_millis(5)).await - started);
        delete(&http, &warm, &format!("w-{i}")).await;
    }
    drop(warm);
    emptied(ns).await;

    let _ = std::fs::remove_dir_all(&host);
    println!("{label}: {warm_n} warm and {cold_n} cold creates, one at a time");
    Figures {
        answer: percentiles_ms(answers),
        all_ready,
        warm_exec: percentiles_ms(execs),
        cold_exec: percentiles_ms(cold_execs),
    }
}

#[tokio::main]
async fn main() {
    if !real_node_running().await {
        println!("warm pool bench skipped: no real node on this machine");
        return;
    }
    let rows = [
        ("the image as built", None),
        ("a 3.7 s boot (DeerFlow's image)", Some(3700)),
    ];
    let mut lines = Vec::new();
    for (label, boot) in rows {
        let f = case(label, boot).await;
        lines.push(format!(
            "| {label} | {:.1} / {:.1} ms{} | {:.1} / {:.1} ms | {:.0} / {:.0} ms | {:.0}× |",
            f.answer.0,
            f.answer.1,
            if f.all_ready { "" } else { " (not all ready!)" },
            f.warm_exec.0,
            f.warm_exec.1,
            f.cold_exec.0,
            f.cold_exec.1,
            f.cold_exec.0 / f.warm_exec.0,
        ));
    }
    println!();
    println!("| sandbox | warm: POST → ready answer (p50 / p99) | warm: POST → first exec (p50 / p99) | cold: POST → first exec (p50 / p99) | cold / warm (p50 to first exec) |");
    println!("| --- | --- | --- | --- | --- |");
    for line in lines {
        println!("{line}");
    }
}
