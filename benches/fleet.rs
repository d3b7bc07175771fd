//! Benchmark of several clusters and of scale, against the two local clusters. It prints; a
//! human reads (BENCHMARKS.md keeps the figures).
//!
//!     eval "$(scripts/local-cluster up)" && eval "$(scripts/second-cluster up)"
//!     cargo bench --bench fleet
//!
//! Part 1 runs one workload through a provisioner with one cluster and through one with two,
//! side by side. Part 2 puts BENCH_SCALE sandboxes (default 10000, ClusterIP mode) behind one
//! provisioner: memory, GET and LIST latency, a restart's time to synced caches, and the
//! reaper's lag when all of them expire at once. BENCH_ONLY=two-vs-one or BENCH_ONLY=scale runs
//! one part.

use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use kube::api::ListParams;
use serde_json::{json, Value};
use testkit::{
    bench_env, kubeconfig_path, ms, percentiles_ms, second_kubeconfig_path, RunningBinary,
    TestNamespace,
};

async fn start(namespace: &str, env: &[(&str, String)]) -> (RunningBinary, Duration) {
    let mut all = bench_env(namespace, "sandbox:bench");
    all.extend(env.iter().cloned());
    RunningBinary::start_quiet(&all).await
}

/// Until every cluster's cache is synced; returns how long that took.
async fn synced(http: &reqwest::Client, base: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let body: Option<Value> = match http.get(format!("{base}/readyz")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let all = body
            .as_ref()
            .and_then(|b| b["clusters"].as_array())
            .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["cache"] == "synced"));
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "caches not synced within {limit:?}: {body:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates `ids` with `clients` concurrent clients; returns creates per second.
async fn create_all(
    http: &reqwest::Client,
    base: &str,
    ids: &[String],
    clients: usize,
    extra: impl Fn(&str) -> Value,
) -> f64 {
    let started = Instant::now();
    stream::iter(ids)
        .map(|id| {
            let mut body = json!({"sandbox_id": id});
            body.as_object_mut()
                .unwrap()
                .extend(extra(id).as_object().cloned().unwrap_or_default());
            async move {
                let resp = http
                    .post(format!("{base}/api/sandboxes"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                assert_eq!(status, 200, "create {id}: {}", resp.text().await.unwrap());
            }
        })
        .buffer_unordered(clients)
        .collect::<Vec<()>>()
        .await;
    ids.len() as f64 / started.elapsed().as_secs_f64()
}

async fn get_latencies(http: &reqwest::Client, base: &str, ids: &[String], n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let id = &ids[(i * 7919) % ids.len()];
        let started = Instant::now();
        let resp = http
            .get(format!("{base}/api/sandboxes/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        samples.push(started.elapsed());
    }
    percentiles_ms(samples)
}

/// Latencies of a handler that does nothing (`/health`): the floor this machine puts under
/// every answer (scheduling among the clusters' processes on the same cores).
async fn health_latencies(http: &reqwest::Client, base: &str, n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let resp = http.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        samples.push(started.elapsed());
    }
    percentiles_ms(samples)
}

/// GETs of one sandbox the service has answered so far, and how many of them it answered
/// within 1 ms, from its own request-duration histogram (the time inside the service).
async fn gets_within_1ms(http: &reqwest::Client, base: &str) -> (f64, f64) {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let bucket = |le: &str| {
        text.lines()
            .filter(|l| l.starts_with("sandbox_provisioner_http_request_duration_seconds_bucket{"))
            .filter(|l| l.contains(r#"method="GET""#))
            .filter(|l| l.contains(r#"route="/api/sandboxes/{sandbox_id}""#))
            .filter(|l| l.contains(&format!(r#"le="{le}""#)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (bucket("0.001"), bucket("+Inf"))
}

/// LIST latencies; with `touch`, that sandbox is read (activity) before each LIST, so that no
/// LIST can answer with the previous one and each rebuilds what the activity changed.
async fn list_latencies(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    touch: Option<&str>,
) -> (f64, f64, u64) {
    let mut samples = Vec::with_capacity(n);
    let mut count = 0;
    for _ in 0..n {
        if let Some(id) = touch {
            let got = http.get(format!("{base}/api/sandboxes/{id}")).send().await;
            assert_eq!(got.unwrap().status(), 200);
        }
        // Until the last byte arrives; the client's own parsing is not the service's time.
        let started = Instant::now();
        let bytes = http
            .get(format!("{base}/api/sandboxes"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        samples.push(started.elapsed());
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        count = body["count"].as_u64().unwrap();
    }
    let (p50, p99) = percentiles_ms(samples);
    (p50, p99, count)
}

struct Row {
    what: String,
    value: String,
    target: String,
}

fn row(rows: &mut Vec<Row>, what: impl Into<String>, value: String, target: &str) {
    let what = what.into();
    eprintln!("  {what}: {value}");
    rows.push(Row {
        what,
        value,
        target: target.into(),
    });
}

async fn two_vs_one(http: &reqwest::Client) {
    eprintln!("one cluster versus two");
    let count = 300;
    let clients = 30;
    let mut table = Vec::new();
    for clusters in [1, 2] {
        let a = TestNamespace::new("bench-fleet").await;
        let b = a.in_second_cluster().await;
        let mut env = Vec::new();
        if clusters == 2 {
            let file = std::env::temp_dir().join(format!("bench-clusters-{}.yaml", a.name));
            let list = json!({"clusters": [
                {"name": "a", "kubeconfig": kubeconfig_path()},
                {"name": "b", "kubeconfig": second_kubeconfig_path()},
            ]});
            std::fs::write(&file, list.to_string()).unwrap();
            env.push(("SANDBOX_CLUSTERS", file.display().to_string()));
        }
        let (svc, _) = start(&a.name, &env).await;
        synced(http, &svc.base, Duration::from_secs(30)).await;
        let ids: Vec<String> = (0..count).map(|i| format!("f-{i}")).collect();
        let rate = create_all(
            http,
            &svc.base,
            &ids,
            clients,
            |id| json!({"thread_id": format!("t-{id}")}),
        )
        .await;
        let (get_p50, get_p99) = get_latencies(http, &svc.base, &ids, 1000).await;
        let (list_p50, list_p99, listed) = list_latencies(http, &svc.base, 50, None).await;
        let (in_a, in_b) = (
            a.pods()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
            b.pods()
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len(),
        );
        eprintln!("  {clusters} cluster(s): {rate:.1} creates/s, GET p50 {get_p50:.2} ms p99 {get_p99:.2} ms, LIST ({listed}) p50 {list_p50:.2} ms p99 {list_p99:.2} ms; pods a {in_a}, b {in_b}");
        table.push((
            clusters, rate, get_p50, get_p99, list_p50, list_p99, in_a, in_b,
        ));
        drop(svc);
    }
    println!("| clusters | creates/s ({count}, {clients} clients) | GET p50 / p99 | LIST of {count} p50 / p99 | pods per cluster |");
    println!("| --- | --- | --- | --- | --- |");
    for (clusters, rate, g50, g99, l50, l99, a, b) in table {
        println!("| {clusters} | {rate:.1} | {g50:.2} / {g99:.2} ms | {l50:.2} / {l99:.2} ms | {a} / {b} |");
    }
}

async fn scale(http: &reqwest::Client) {
    let total: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    eprintln!("{total} sandboxes behind one provisioner (ClusterIP)");
    let mut rows = Vec::new();
    let ns = TestNamespace::new("bench-scale").await;
    let env = [
        ("SANDBOX_SERVICE_TYPE", "ClusterIP".to_string()),
        ("SANDBOX_REAP_INTERVAL", "1s".to_string()),
    ];
    let (svc, _) = start(&ns.name, &env).await;
    synced(http, &svc.base, Duration::from_secs(30)).await;
    let idle_rss = svc.rss_mib();
    let ids: Vec<String> = (0..total).map(|i| format!("k-{i}")).collect();

    // All lifetimes end at one instant, after the measurements: the first 500 creates set the
    // pace, the rest get lifetimes that end together.
    let clients = 50;
    let started = Instant::now();
    let first = 500.min(total);
    let first_rate = create_all(
        http,
        &svc.base,
        &ids[..first],
        clients,
        |_| json!({"ttl_seconds": 36_000}),
    )
    .await;
    let expected =
        Duration::from_secs_f64(total as f64 / first_rate * 1.5) + Duration::from_secs(120);
    let deadline = k8s_openapi::jiff::Timestamp::now() + expected;
    let rest_rate = create_all(http, &svc.base, &ids[first..], clients, |_| {
        let left = deadline
            .duration_since(k8s_openapi::jiff::Timestamp::now())
            .as_secs_f64();
        json!({"ttl_seconds": left.ceil().max(1.0) as u64})
    })
    .await;
    let created_in = started.elapsed();
    // Reads are measured in the steady state: once the node simulator has started them all
    // (until then, its status updates keep the apiserver, the watch and the cores busy).
    let settle = Instant::now();
    loop {
        let bytes = http
            .get(format!("{}/api/sandboxes", svc.base))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let ready = body["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["ready"] == true)
            .count();
        if ready == total || settle.elapsed() > Duration::from_secs(300) {
            eprintln!(
                "  {ready} of {total} ready {:.0} s after the last create",
                settle.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    row(
        &mut rows,
        format!("creates/s ({clients} clients)"),
        format!(
            "{rest_rate:.1}/s ({total} in {:.0} s)",
            created_in.as_secs_f64()
        ),
        "-",
    );
    row(&mut rows, "RSS idle", format!("{idle_rss:.1} MiB"), "-");
    row(
        &mut rows,
        format!("RSS with {total} sandboxes"),
        format!("{:.1} MiB", svc.rss_mib()),
        "<= 100 MiB",
    );
    let (list_p50, list_p99, listed) = list_latencies(http, &svc.base, 20, None).await;
    row(
        &mut rows,
        format!("LIST of {listed} p50 / p99 (nothing changed in between)"),
        format!("{list_p50:.1} / {list_p99:.1} ms"),
        "p50 <= 30 ms",
    );
    // The GETs that follow are activity: each sandbox's first one is written to its pod (8 at a
    // time), and those writes are still landing while the next LISTs run.
    let before = gets_within_1ms(http, &svc.base).await;
    let (get_p50, get_p99) = get_latencies(http, &svc.base, &ids, 2000).await;
    let after = gets_within_1ms(http, &svc.base).await;
    let (within, count) = (after.0 - before.0, after.1 - before.1);
    row(
        &mut rows,
        "GET p50 / p99, at the client",
        format!("{get_p50:.3} / {get_p99:.3} ms"),
        "p99 <= 1 ms",
    );
    row(
        &mut rows,
        "GETs answered within 1 ms, inside the service (its histogram)",
        format!("{:.2}% of {count}", within / count * 100.0),
        ">= 99% (p99 <= 1 ms)",
    );
    let (health_p50, health_p99) = health_latencies(http, &svc.base, 2000).await;
    row(
        &mut rows,
        "/health p50 / p99 (the machine's floor: a handler that does nothing)",
        format!("{health_p50:.3} / {health_p99:.3} ms"),
        "-",
    );
    let (list_p50, list_p99, _) = list_latencies(http, &svc.base, 20, Some(&ids[0])).await;
    row(
        &mut rows,
        format!("LIST of {listed} p50 / p99 (a sandbox read before each, activity writes landing)"),
        format!("{list_p50:.1} / {list_p99:.1} ms"),
        "p50 <= 30 ms",
    );
    row(
        &mut rows,
        format!("RSS right after 20 LISTs of {listed}"),
        format!("{:.1} MiB", svc.rss_mib()),
        "<= 100 MiB",
    );
    // The allocator returns a LIST's freed pages within about a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    row(
        &mut rows,
        "RSS 2 s after the LISTs",
        format!("{:.1} MiB", svc.rss_mib()),
        "<= 100 MiB",
    );
    drop(svc);

    // A restarted service: time to serve, then to synced caches.
    let (again, serving) = start(&ns.name, &env).await;
    let sync = synced(http, &again.base, Duration::from_secs(120)).await;
    row(
        &mut rows,
        "restart: start to serving",
        format!("{:.0} ms", ms(serving)),
        "-",
    );
    row(
        &mut rows,
        format!("restart: serving to caches synced ({total})"),
        format!("{:.2} s", sync.as_secs_f64()),
        "<= 10 s",
    );
    row(
        &mut rows,
        "RSS after the restart's sync",
        format!("{:.1} MiB", again.rss_mib()),
        "<= 100 MiB",
    );

    // Mass expiry: everything but the first 500 ends at `deadline`.
    let expiring = total - first;
    let wait = deadline.duration_since(k8s_openapi::jiff::Timestamp::now());
    let wait = Duration::try_from(wait).unwrap_or_default();
    eprintln!("  waiting {:.0} s for the mass expiry", wait.as_secs_f64());
    tokio::time::sleep(wait).await;
    let expired_at = Instant::now();
    let pods = ns.pods();
    let mut last_count = usize::MAX;
    let mut half = None;
    loop {
        let left = pods
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=sandbox-provisioner"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count()
            .saturating_sub(first);
        if left != last_count {
            last_count = left;
        }
        if half.is_none() && left <= expiring / 2 {
            half = Some(expired_at.elapsed());
        }
        if left == 0 || expired_at.elapsed() > Duration::from_secs(900) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lag = expired_at.elapsed();
    row(
        &mut rows,
        format!("mass expiry of {expiring}: half gone after"),
        format!("{:.1} s", half.unwrap_or(lag).as_secs_f64()),
        "-",
    );
    row(
        &mut rows,
        format!("mass expiry of {expiring}: all gone after (left {last_count})"),
        format!(
            "{:.1} s ({:.0} deletions/s)",
            lag.as_secs_f64(),
            expiring as f64 / lag.as_secs_f64()
        ),
        "-",
    );
    drop(again);
    println!("| figure | value | target |");
    println!("| --- | --- | --- |");
    for r in rows {
        println!("| {} | {} | {} |", r.what, r.value, r.target);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let http = reqwest::Client::new();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "two-vs-one" {
        two_vs_one(&http).await;
    }
    if only.is_empty() || only == "scale" {
        scale(&http).await;
    }
}
