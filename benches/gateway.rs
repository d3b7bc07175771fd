//! What the gateway costs: the same client and the same sandbox (on the real node), through
//! the gateway (the service's binary, its own listener) and straight to the Pod's IP.
//!
//! - saturated: requests per second at c = 10, 50 and 200 for a small GET (`/v1/ping`) and a
//!   4 KiB POST (`/test/upload`), and the ratio gateway / direct. On 2 cores the client, the
//!   gateway and the sandbox share the CPU, so this mostly measures that sharing;
//! - fixed rate: 1,000 requests per second from 10 clients, p50 and p99 of each, and what the
//!   gateway adds (targets: p50 +0.3 ms, p99 +1 ms);
//! - the gateway's CPU per proxied request: the process's CPU time (utime + stime from
//!   /proc) over the fixed-rate run, divided by its requests (target 50 µs);
//! - the gateway's resident memory with 1,000 open WebSockets.
//!
//! ```sh
//! eval "$(scripts/local-cluster up)" && cargo bench --bench gateway
//! cargo bench --bench gateway -- fixed    # only the fixed-rate runs
//! ```
//!
//! `GATEWAY_BENCH_SERVICE_ENV="NAME=value ..."` adds settings to the service under test. For
//! scale, the fixed-rate runs also measure the sandbox's own server and a bare TCP relay.
//!
//! It prints; a human reads.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use testkit::{
    bench_env, free_port, json_answer, percentiles_ms, real_node_pod_template, real_node_running,
    RunningBinary, TestNamespace, REAL_NODE_IMAGE,
};

const SECRET: &str = "bench-gateway-secret-0123456789abcdef";

#[derive(Clone, Copy)]
enum Call {
    SmallGet,
    Post4k,
}

impl Call {
    fn send(self, http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        match self {
            Call::SmallGet => http.get(format!("{base}/v1/ping")),
            Call::Post4k => http
                .post(format!("{base}/test/upload"))
                .body(vec![b'x'; 4096]),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Call::SmallGet => "GET /v1/ping",
            Call::Post4k => "POST 4 KiB",
        }
    }
}

async fn one(http: &reqwest::Client, base: &str, call: Call) {
    let response = call.send(http, base).send().await.expect("an answer");
    assert_eq!(response.status(), 200, "{}", base);
    let _ = response.bytes().await.expect("a body");
}

/// Requests per second with `c` clients each sending back to back for `for_how_long`.
async fn saturated(base: &str, call: Call, c: usize, for_how_long: Duration) -> f64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .build()
        .unwrap();
    let started = Instant::now();
    let clients = (0..c).map(|_| {
        let (http, base) = (http.clone(), base.to_string());
        async move {
            let mut n = 0u64;
            while started.elapsed() < for_how_long {
                one(&http, &base, call).await;
                n += 1;
            }
            n
        }
    });
    let total: u64 = futures::future::join_all(clients).await.into_iter().sum();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Latencies at a fixed total `rate` from `c` clients (each on its own schedule).
async fn fixed_rate(
    base: &str,
    call: Call,
    rate: u32,
    c: u32,
    for_how_long: Duration,
) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let every = Duration::from_secs_f64(f64::from(c) / f64::from(rate));
    let clients = (0..c).map(|i| {
        let (http, base) = (http.clone(), base.to_string());
        async move {
            let start = tokio::time::Instant::now() + every.mul_f64(f64::from(i) / f64::from(c));
            let mut ticks = tokio::time::interval_at(start, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut samples = Vec::new();
            let until = Instant::now() + for_how_long;
            while Instant::now() < until {
                ticks.tick().await;
                let sent = Instant::now();
                one(&http, &base, call).await;
                samples.push(sent.elapsed());
            }
            samples
        }
    });
    futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The process's CPU time so far (user + system).
fn cpu_time(pid: u32) -> Duration {
    stat_cpu_time(&format!("/proc/{pid}/stat"))
}

/// User + system time from a /proc `stat` file (of a process or of one thread).
fn stat_cpu_time(path: &str) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ, which Linux fixes at 100 for /proc.
    let per_second = 100.0;
    Duration::from_secs_f64(ticks as f64 / per_second)
}

/// The bench sandbox's server process (its container runs on this machine's kernel).
fn sandbox_server_pid() -> u32 {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let has =
            |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        if has(&cmdline, b"sandbox-server") && has(&environ, b"bench-gw") {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "the bench sandbox's server: {found:?}");
    found[0]
}

/// The floor of any proxy here: a byte-for-byte TCP relay (no HTTP) on one thread of its own,
/// whose CPU time is read from that thread's /proc entry.
struct Relay {
    port: u16,
    stat: String,
}

impl Relay {
    fn start(upstream: std::net::SocketAddr) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            tx.send(format!("/proc/{}/stat", me.display())).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((mut client, _)) = listener.accept().await {
                    client.set_nodelay(true).ok();
                    tokio::spawn(async move {
                        let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                            return;
                        };
                        server.set_nodelay(true).ok();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                }
            });
        });
        let stat = rx.recv().unwrap();
        Relay { port, stat }
    }

    fn cpu_time(&self) -> Duration {
        stat_cpu_time(&self.stat)
    }
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() {
    if !real_node_running().await {
        println!("gateway bench skipped: no real node on this machine");
        return;
    }
    let ns = TestNamespace::new("bench-gw").await;
    let gateway_port = free_port();
    let public = format!("http://127.0.0.1:{gateway_port}");
    let mut env = bench_env(&ns.name, REAL_NODE_IMAGE);
    env.extend([
        (
            "SANDBOX_POD_TEMPLATE",
            real_node_pod_template().display().to_string(),
        ),
        ("SANDBOX_URL_MODE", "gateway".into()),
        ("PROVISIONER_PUBLIC_URL", public.clone()),
        (
            "PROVISIONER_GATEWAY_LISTEN",
            format!("127.0.0.1:{gateway_port}"),
        ),
        ("PROVISIONER_GATEWAY_SECRET", SECRET.into()),
        ("SANDBOX_SERVICE_TYPE", "None".into()),
    ]);
    // Extra settings of the service under test, `NAME=value` separated by spaces.
    let extra = std::env::var("GATEWAY_BENCH_SERVICE_ENV").unwrap_or_default();
    let extra: Vec<(String, String)> = extra
        .split_whitespace()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    for (k, v) in &extra {
        env.push((k.as_str(), v.clone()));
    }
    let (service, _) = RunningBinary::start_quiet(&env).await;
    service.wait_synced().await;
    let http = reqwest::Client::new();
    let answer = json_answer(
        http.post(format!("{}/api/sandboxes", service.base))
            .json(&json!({"sandbox_id": "bench-gw", "thread_id": "t", "wait_ready_seconds": 90})),
    )
    .await;
    let through = answer["sandbox_url"].as_str().unwrap().to_string();
    json_answer(
        http.get(format!("{through}/v1/sandbox"))
            .timeout(Duration::from_secs(90)),
    )
    .await;
    let pod: Pod = ns.pods().get("sandbox-bench-gw").await.unwrap();
    let direct = format!("http://{}:8080", pod.status.unwrap().pod_ip.unwrap());
    // Warm both paths (connections, allocator).
    saturated(&through, Call::SmallGet, 10, Duration::from_millis(500)).await;
    saturated(&direct, Call::SmallGet, 10, Duration::from_millis(500)).await;

    let pid = service.child.id();
    let idle = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = (cpu_time(pid) - idle).as_secs_f64() / 5.0;
    println!(
        "the service idle: {:.1} ms CPU per second (watches, timers)",
        idle * 1000.0
    );

    let only_fixed = std::env::args().any(|a| a == "fixed");
    if !only_fixed {
        saturated_runs(&direct, &through, pid).await;
    }
    fixed_rate_runs(&direct, &through, &service.base, pid).await;
    if !only_fixed {
        websockets(&through, &service).await;
    }
    drop(service);
    ns.delete_and_wait("the namespace").await;
}

async fn saturated_runs(direct: &str, through: &str, pid: u32) {
    println!("saturated, same client, same sandbox (req/s; 3 s each; gateway CPU per request):");
    println!(
        "{:<14} {:>5} {:>12} {:>12} {:>7} {:>12}",
        "call", "c", "direct", "gateway", "ratio", "CPU µs/req"
    );
    for call in [Call::SmallGet, Call::Post4k] {
        for c in [10, 50, 200] {
            let d = saturated(direct, call, c, Duration::from_secs(3)).await;
            let before = cpu_time(pid);
            let g = saturated(through, call, c, Duration::from_secs(3)).await;
            let cpu = (cpu_time(pid) - before).as_secs_f64();
            let per_request = cpu * 1e6 / (g * 3.0);
            println!(
                "{:<14} {c:>5} {d:>12.0} {g:>12.0} {:>7.2} {per_request:>12.1}",
                call.name(),
                g / d
            );
        }
    }
}

async fn fixed_rate_runs(direct: &str, through: &str, api: &str, pid: u32) {
    println!("\nfixed rate 1,000 req/s from 10 clients, 10 s each (ms):");
    let sandbox = sandbox_server_pid();
    let upstream: std::net::SocketAddr = direct.trim_start_matches("http://").parse().unwrap();
    let relay = Relay::start(upstream);
    let relayed = format!("http://127.0.0.1:{}", relay.port);
    for call in [Call::SmallGet, Call::Post4k] {
        let sandbox_before = cpu_time(sandbox);
        let samples = fixed_rate(direct, call, 1000, 10, Duration::from_secs(10)).await;
        let sandbox_cpu = cpu_time(sandbox) - sandbox_before;
        let sandbox_us = sandbox_cpu.as_secs_f64() * 1e6 / samples.len() as f64;
        let (d50, d99) = percentiles_ms(samples);
        let relay_before = relay.cpu_time();
        let relay_samples = fixed_rate(&relayed, call, 1000, 10, Duration::from_secs(10)).await;
        let relay_us =
            (relay.cpu_time() - relay_before).as_secs_f64() * 1e6 / relay_samples.len() as f64;
        println!(
            "{:<14} for scale, CPU per request at this rate: the sandbox's own server {sandbox_us:.1} µs; a bare TCP relay in front of it (no HTTP, one thread) {relay_us:.1} µs",
            call.name()
        );
        let before = reqwest::get(format!("{api}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let cpu_before = cpu_time(pid);
        let samples = fixed_rate(through, call, 1000, 10, Duration::from_secs(10)).await;
        let cpu = cpu_time(pid) - cpu_before;
        let after = reqwest::get(format!("{api}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let proxied = metric(&after, "sandbox_provisioner_gateway_requests_total")
            - metric(&before, "sandbox_provisioner_gateway_requests_total");
        let n = samples.len();
        let (g50, g99) = percentiles_ms(samples);
        let per_request_us = cpu.as_secs_f64() * 1e6 / proxied;
        println!(
            "{:<14} direct p50 {d50:.3} p99 {d99:.3} | gateway p50 {g50:.3} p99 {g99:.3} | added p50 {:+.3} ({}) p99 {:+.3} ({}) | gateway CPU {per_request_us:.1} µs/request ({}; {proxied} proxied, {n} sent, {:.2} s CPU)",
            call.name(),
            g50 - d50,
            if g50 - d50 <= 0.3 { "met" } else { "MISSED" },
            g99 - d99,
            if g99 - d99 <= 1.0 { "met" } else { "MISSED" },
            if per_request_us <= 50.0 { "met" } else { "MISSED" },
            cpu.as_secs_f64(),
        );
    }
}

async fn websockets(through: &str, service: &RunningBinary) {
    let idle_rss = service.rss_mib();
    let ws_url = format!("{}/test/ws", through.replacen("http://", "ws://", 1));
    let mut sockets = Vec::new();
    for _ in 0..1000 {
        let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("a WebSocket through the gateway");
        sockets.push(socket);
    }
    // Each socket echoes once, so every one is spliced and open at the gateway.
    for socket in &mut sockets {
        use futures::SinkExt;
        socket
            .send(tokio_tungstenite::tungstenite::Message::text("x"))
            .await
            .unwrap();
        socket.next().await.unwrap().unwrap();
    }
    let text = reqwest::get(format!("{}/metrics", service.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    println!(
        "\nRSS with 1,000 open WebSockets: {:.1} MiB (before {idle_rss:.1} MiB; gauge open websocket = {})",
        service.rss_mib(),
        metric(&text, r#"sandbox_provisioner_open{what="websocket"}"#),
    );
    drop(sockets);
}
