//! Benchmark against the local cluster: the apiserver's own speed (the limit), then the
//! provisioner's, each figure next to its target as a ratio. It prints; a human reads.
//!
//!     eval "$(scripts/local-cluster up)" && cargo bench --bench provisioner
//!
//! BENCH_SANDBOXES (default 1000) sets how many sandboxes are present for the read figures
//! (and, up to 300, how many expire at once); BENCH_ONLY=mass-expiry runs just that part.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    api::{ListParams, Patch, PatchParams, PostParams},
    Api,
};
use serde_json::{json, Value};
use testkit::{bench_env, json_answer, ms, percentiles_ms, RunningBinary, TestNamespace};

async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let started = Instant::now();
    let value = f.await;
    (started.elapsed(), value)
}

struct Report {
    rows: Vec<(String, String, String, String)>,
}

impl Report {
    /// A figure with a target: `lower_is_better` decides which way the ratio reads.
    fn row(&mut self, what: &str, value: f64, unit: &str, target: f64, lower_is_better: bool) {
        let ratio = if lower_is_better {
            value / target
        } else {
            target / value.max(f64::MIN_POSITIVE)
        };
        let verdict = if ratio <= 1.0 { "met" } else { "MISSED" };
        self.rows.push((
            what.into(),
            format!("{value:.2} {unit}"),
            format!(
                "{} {target:.2} {unit}",
                if lower_is_better { "<=" } else { ">=" }
            ),
            format!("{ratio:.2} of the allowance ({verdict})"),
        ));
        eprintln!("  {what}: {value:.2} {unit}");
    }

    fn info(&mut self, what: &str, value: String) {
        eprintln!("  {what}: {value}");
        self.rows.push((what.into(), value, "-".into(), "-".into()));
    }

    fn print(&self) {
        println!("| figure | value | target | ratio |");
        println!("| --- | --- | --- | --- |");
        for (a, b, c, d) in &self.rows {
            println!("| {a} | {b} | {c} | {d} |");
        }
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "raw", "bench-name": name}},
        "spec": {"containers": [{"name": "c", "image": "sandbox:bench"}]},
    }))
    .unwrap()
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-svc"), "labels": {"bench": "raw"}},
        "spec": {"type": "NodePort", "selector": {"bench-name": name}, "ports": [{"port": 8080}]},
    }))
    .unwrap()
}

/// Creates pod+service pairs with `clients` concurrent clients; returns pairs per second.
async fn raw_create_rate(
    pods: &Api<Pod>,
    services: &Api<Service>,
    prefix: &str,
    clients: usize,
    per_client: usize,
) -> f64 {
    let started = Instant::now();
    let work = (0..clients).map(|c| async move {
        let pp = PostParams::default();
        for i in 0..per_client {
            let name = format!("{prefix}-{c}-{i}");
            pods.create(&pp, &pod(&name)).await.unwrap();
            services.create(&pp, &service(&name)).await.unwrap();
        }
    });
    futures::future::join_all(work).await;
    (clients * per_client) as f64 / started.elapsed().as_secs_f64()
}

/// The provisioner binary, started as an operator would (the shared test runner), and its
/// start-up time.
async fn start_provisioner(
    namespace: &str,
    image: &str,
    env: &[(&str, &str)],
) -> (RunningBinary, Duration) {
    let mut all = bench_env(namespace, image);
    all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    RunningBinary::start_quiet(&all).await
}

async fn create(http: &reqwest::Client, base: &str, id: &str) {
    let resp = http
        .post(format!("{base}/api/sandboxes"))
        .json(&json!({"sandbox_id": id, "thread_id": "bench"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "create {id}: {}",
        resp.text().await.unwrap()
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sandboxes: usize = std::env::var("BENCH_SANDBOXES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let http = reqwest::Client::new();
    let mut report = Report { rows: Vec::new() };
    if std::env::var("BENCH_ONLY").as_deref() == Ok("mass-expiry") {
        mass_expiry(&mut report, &http, sandboxes.min(300)).await;
        report.print();
        return;
    }

    // --- The limit: the apiserver itself, through the same client stack (kube + rustls). ---
    eprintln!("measuring the apiserver itself");
    let raw_ns = TestNamespace::new("bench-raw").await;
    let (pods, services) = (raw_ns.pods(), raw_ns.services());
    let pp = PostParams::default();
    let mut pod_posts = Vec::new();
    let mut svc_posts = Vec::new();
    for i in 0..100 {
        let name = format!("seq-{i}");
        pod_posts.push(timed(pods.create(&pp, &pod(&name))).await.0);
        svc_posts.push(timed(services.create(&pp, &service(&name))).await.0);
    }
    let mut pod_gets = Vec::new();
    for _ in 0..500 {
        pod_gets.push(timed(pods.get("seq-0")).await.0);
    }
    let lp = ListParams::default().labels("bench=raw");
    let mut svc_lists = Vec::new();
    for _ in 0..50 {
        svc_lists.push(timed(services.list(&lp)).await.0);
    }
    let (pod_post, _) = percentiles_ms(pod_posts);
    let (svc_post, _) = percentiles_ms(svc_posts);
    let (pod_get, pod_get_p99) = percentiles_ms(pod_gets);
    let (svc_list, _) = percentiles_ms(svc_lists);
    report.info("raw pod POST p50", format!("{pod_post:.2} ms"));
    report.info("raw service POST p50", format!("{svc_post:.2} ms"));
    report.info(
        "raw pod GET p50 / p99",
        format!("{pod_get:.2} / {pod_get_p99:.2} ms"),
    );
    report.info(
        "raw service LIST (100 objects) p50",
        format!("{svc_list:.2} ms"),
    );
    let raw20 = raw_create_rate(&pods, &services, "c20", 20, 10).await;
    let raw50 = raw_create_rate(&pods, &services, "c50", 50, 6).await;
    report.info(
        "raw pod+service pairs/s, 20 clients",
        format!("{raw20:.1}/s"),
    );
    report.info(
        "raw pod+service pairs/s, 50 clients",
        format!("{raw50:.1}/s"),
    );
    drop(raw_ns);

    // --- The provisioner. ---
    eprintln!("measuring the provisioner");
    let ns = TestNamespace::new("bench").await;
    let (svc, _) = start_provisioner(&ns.name, "sandbox:bench", &[]).await;
    svc.wait_synced().await;
    let idle_rss = svc.rss_mib();
    let mut creates = Vec::new();
    let sequential = sandboxes.min(100);
    for i in 0..sequential {
        creates.push(timed(create(&http, &svc.base, &format!("s-{i}"))).await.0);
    }
    let (create_p50, create_p99) = percentiles_ms(creates);
    report.row(
        "create p50 (sequential)",
        create_p50,
        "ms",
        1.3 * (pod_post + svc_post),
        true,
    );
    report.info("create p99 (sequential)", format!("{create_p99:.2} ms"));

    let rate = |clients: usize, count: usize, prefix: &'static str| {
        let (http, base) = (http.clone(), svc.base.clone());
        async move {
            let started = Instant::now();
            let per = count / clients;
            let work = (0..clients).map(|c| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    for i in 0..per {
                        create(&http, &base, &format!("{prefix}-{c}-{i}")).await;
                    }
                }
            });
            futures::future::join_all(work).await;
            (clients * per) as f64 / started.elapsed().as_secs_f64()
        }
    };
    let remaining = sandboxes.saturating_sub(sequential);
    let for_50 = remaining.min(500) / 50 * 50;
    let for_20 = (remaining - for_50) / 20 * 20;
    let c20 = rate(20, for_20.max(20), "c20").await;
    let c50 = rate(50, for_50.max(50), "c50").await;
    report.info(
        "creates/s, 20 clients",
        format!("{c20:.1}/s ({:.2} of raw)", c20 / raw20),
    );
    report.row("creates/s, 50 clients", c50, "/s", 0.8 * raw50, false);

    // Read figures are for the steady state: wait until the node simulator has started them all.
    let settle = Instant::now();
    loop {
        let body: Value = json_answer(http.get(format!("{}/api/sandboxes", svc.base))).await;
        let all = body["sandboxes"].as_array().unwrap();
        if all.iter().all(|s| s["ready"] == true) || settle.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let present = sandboxes;
    let ids: Vec<String> = (0..sequential).map(|i| format!("s-{i}")).collect();
    let mut gets = Vec::new();
    for i in 0..1000 {
        let id = &ids[i % ids.len()];
        let (d, resp) = timed(http.get(format!("{}/api/sandboxes/{id}", svc.base)).send()).await;
        assert_eq!(resp.unwrap().status(), 200);
        gets.push(d);
    }
    let (get_p50, get_p99) = percentiles_ms(gets);
    report.info(
        &format!("GET p50 ({present} sandboxes)"),
        format!("{get_p50:.3} ms"),
    );
    report.row(
        &format!("GET p99 ({present} sandboxes)"),
        get_p99,
        "ms",
        1.0,
        true,
    );
    let mut lists = Vec::new();
    let mut listed = 0;
    for _ in 0..50 {
        let (d, resp) = timed(http.get(format!("{}/api/sandboxes", svc.base)).send()).await;
        let body: Value = resp.unwrap().json().await.unwrap();
        listed = body["count"].as_u64().unwrap();
        lists.push(d);
    }
    let (list_p50, list_p99) = percentiles_ms(lists);
    report.row(
        &format!("LIST p50 ({listed} sandboxes)"),
        list_p50,
        "ms",
        20.0,
        true,
    );
    report.info(
        &format!("LIST p99 ({listed} sandboxes)"),
        format!("{list_p99:.2} ms"),
    );
    report.row("RSS idle", idle_rss, "MiB", 20.0, true);
    report.row(
        &format!("RSS with {listed} sandboxes"),
        svc.rss_mib(),
        "MiB",
        40.0,
        true,
    );
    drop(svc);

    // Start-up: a fresh process against a namespace with all those sandboxes.
    let (again, serving) = start_provisioner(&ns.name, "sandbox:bench", &[]).await;
    report.row(
        "start to serving (apiserver answering)",
        ms(serving),
        "ms",
        200.0,
        true,
    );
    drop(again);

    // --- Ready notification: the bench marks pods Ready itself, as the node simulator would,
    // and measures until a waiting client gets its answer. ---
    let ready_ns = TestNamespace::new("bench-ready").await;
    let (waiter_svc, _) = start_provisioner(&ready_ns.name, "sandbox:sim-never-ready", &[]).await;
    waiter_svc.wait_synced().await;
    let ready_pods: Api<Pod> = ready_ns.pods();
    let mut latencies = Vec::new();
    for i in 0..50 {
        let id = format!("r-{i}");
        create(&http, &waiter_svc.base, &id).await;
        let name = format!("sandbox-{id}");
        loop {
            let p = ready_pods.get(&name).await.unwrap();
            if p.status.and_then(|s| s.phase).as_deref() == Some("Running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let url = format!("{}/api/sandboxes/{id}?wait_ready=30", waiter_svc.base);
        let client = http.clone();
        let waiter = tokio::spawn(async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            (Instant::now(), body)
        });
        tokio::time::sleep(Duration::from_millis(50)).await; // let the waiter start waiting
        let status = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"},
            {"type": "Initialized", "status": "True"}, {"type": "PodScheduled", "status": "True"},
        ]}});
        let marked = Instant::now();
        ready_pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        let (answered, body) = waiter.await.unwrap();
        assert_eq!(body["ready"], true, "{body}");
        latencies.push(answered.saturating_duration_since(marked));
    }
    let (ready_p50, ready_p99) = percentiles_ms(latencies);
    report.info("ready notification p50", format!("{ready_p50:.2} ms"));
    report.row("ready notification p99", ready_p99, "ms", 50.0, true);
    drop(waiter_svc);

    mass_expiry(&mut report, &http, sandboxes.min(300)).await;

    eprintln!();
    report.print();
}

/// Many sandboxes whose lifetimes end within a second of each other, as after a backend
/// restart: how late past its deadline is each one gone?
async fn mass_expiry(report: &mut Report, http: &reqwest::Client, expiring: usize) {
    let expiry_ns = TestNamespace::new("bench-expiry").await;
    let (reaper_svc, _) = start_provisioner(
        &expiry_ns.name,
        "sandbox:bench",
        &[("SANDBOX_REAP_INTERVAL", "1s")],
    )
    .await;
    reaper_svc.wait_synced().await;
    let ttl = 3 + expiring as u64 / 50;
    let deadlines: Vec<(String, Instant)> = futures::future::join_all((0..expiring).map(|i| {
        let (http, base) = (http.clone(), reaper_svc.base.clone());
        async move {
            let id = format!("x-{i}");
            let resp = http
                .post(format!("{base}/api/sandboxes"))
                .json(&json!({"sandbox_id": id, "thread_id": "bench", "ttl_seconds": ttl}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            let created: k8s_openapi::jiff::Timestamp =
                body["created_at"].as_str().unwrap().parse().unwrap();
            let since = k8s_openapi::jiff::Timestamp::now().duration_since(created);
            let created_at = Instant::now() - Duration::try_from(since).unwrap_or_default();
            (
                format!("sandbox-{id}"),
                created_at + Duration::from_secs(ttl),
            )
        }
    }))
    .await;
    let expiry_pods: Api<Pod> = expiry_ns.pods();
    let mut lags = Vec::new();
    let mut left: std::collections::HashMap<String, Instant> = deadlines.into_iter().collect();
    let watching = Instant::now();
    while !left.is_empty() && watching.elapsed() < Duration::from_secs(ttl + 120) {
        let present: std::collections::HashSet<String> = expiry_pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        let now = Instant::now();
        left.retain(|name, deadline| {
            let stays = present.contains(name);
            if !stays {
                lags.push(now.saturating_duration_since(*deadline));
            }
            stays
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left.is_empty(),
        "{} sandboxes outlived their lifetime by 2 minutes",
        left.len()
    );
    let (lag_p50, _) = percentiles_ms(lags.clone());
    let worst = lags.iter().max().copied().unwrap_or_default();
    report.info(
        &format!("mass expiry of {expiring} sandboxes: lag past the deadline p50"),
        format!("{:.2} s", lag_p50 / 1000.0),
    );
    report.row(
        &format!("mass expiry of {expiring} sandboxes: worst lag (reap interval 1 s)"),
        worst.as_secs_f64(),
        "s",
        1.0 + 5.0,
        true,
    );
    drop(reaper_svc);
}
