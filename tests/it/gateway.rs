//! The sandbox gateway with real sandboxes (the real node): DeerFlow's calls through
//! `sandbox_url`, tokens, streaming both ways, WebSockets, timeouts, readiness, a Pod gone
//! mid-request, and traffic as activity.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use reqwest::Method;
use sandbox_provisioner::spec::GatewayKeys;
use serde_json::{json, Value};
use testkit::{
    eventually, json_answer, real_node_gateway_args, real_node_running, TestNamespace, TestService,
    GATEWAY_TEST_SECRET,
};
use tokio_tungstenite::tungstenite::Message;

use crate::real_node::{exec, http_client, HostDir};

/// Creates a sandbox without waiting for it; returns the answer.
async fn create(service: &TestService, id: &str, thread: &str) -> Value {
    let (status, answer) = service
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": id, "thread_id": thread})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A client for long transfers (whose calls still end).
fn long_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Status and JSON body of a request.
async fn status_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The creation a sandbox's token is bound to, as the Pod records it.
async fn creation_of(ns: &TestNamespace, id: &str) -> String {
    let pod = ns.pods().get(&format!("sandbox-{id}")).await.unwrap();
    let key = sandbox_provisioner::spec::keys::CREATED_ANNOTATION;
    let created = pod.metadata.annotations.unwrap()[key].clone();
    let at: jiff::Timestamp = created.parse().unwrap();
    at.as_nanosecond().to_string()
}

#[tokio::test]
async fn deerflows_sequence_runs_through_the_gateway_and_only_the_right_token_opens_a_sandbox() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("gw-seq").await;
    let host = HostDir::new(&ns);
    let service = TestService::start(real_node_gateway_args(&ns.name, &host.0)).await;
    let answer = create(&service, "gw-1", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let prefix = format!("{}/sandboxes/gw-1/", service.base);
    assert!(url.starts_with(&prefix) && !url.ends_with('/'), "{url}");
    assert_eq!(url.len(), prefix.len() + 73, "{url}");
    let http = http_client();

    // Asked before the sandbox is ready, the gateway holds the request until it is.
    let context = json_answer(long_client().get(format!("{url}/v1/sandbox"))).await;
    assert_eq!(context["home_dir"], "/home/gem", "{context}");
    // No Service: the gateway reaches the Pod's IP.
    assert!(ns
        .services()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .is_empty());

    let identity = json_answer(http.get(format!("{url}/test/identity"))).await;
    let (status, got) = service.get("gw-1").await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        identity["data"]["pod_uid"], got["container_id"],
        "{identity}"
    );
    assert_eq!(
        got["sandbox_url"],
        url.as_str(),
        "GET hands out the same URL"
    );
    let (out, code) = exec(&http, &url, "id -u").await;
    assert_eq!((out.trim(), code), ("1000", 0));
    let write = json!({"file": "/home/gem/note.txt", "content": "through the gateway"});
    json_answer(http.post(format!("{url}/v1/file/write")).json(&write)).await;
    let read = json_answer(
        http.post(format!("{url}/v1/file/read"))
            .json(&json!({"file": "/home/gem/note.txt"})),
    )
    .await;
    assert_eq!(read["data"]["content"], "through the gateway", "{read}");

    // Wrong tokens: altered, another tenant's (same id and creation), none at all.
    let token = url.rsplit('/').next().unwrap();
    let mut altered = token.to_string().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    let keys = GatewayKeys::new(GATEWAY_TEST_SECRET.as_bytes(), None);
    let creation = creation_of(&ns, "gw-1").await;
    assert_eq!(
        keys.mint("default", "gw-1", &creation),
        token,
        "the token is the tenant's"
    );
    let other_tenant = keys.mint("someone-else", "gw-1", &creation);
    let unknown = keys.mint("default", "gw-nope", &creation);
    let mut not_found = Vec::new();
    for path in [
        format!("/sandboxes/gw-1/{altered}/v1/sandbox"),
        format!("/sandboxes/gw-1/{other_tenant}/v1/sandbox"),
        format!("/sandboxes/gw-nope/{unknown}/v1/sandbox"),
        "/sandboxes/gw-1/v1/sandbox".to_string(),
    ] {
        let (status, body) = status_of(http.get(service.url(&path))).await;
        assert_eq!(status, 404, "{path}: {body}");
        not_found.push(body);
    }
    assert!(
        not_found.windows(2).all(|w| w[0] == w[1]),
        "one answer: {not_found:?}"
    );
    assert!(not_found[0]["detail"]
        .as_str()
        .unwrap()
        .contains("no such sandbox"));

    // Deleted, then created again under the same id: the old URL is dead, the new one works.
    let (status, _) = service
        .call(Method::DELETE, "/api/sandboxes/gw-1", None)
        .await;
    assert_eq!(status, 200);
    eventually(
        Duration::from_secs(60),
        "the old URL to answer 404",
        || async {
            let (status, _) = status_of(http.get(format!("{url}/v1/sandbox"))).await;
            (status == 404).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(60), "the Pod to be gone", || async {
        ns.pods()
            .get_opt("sandbox-gw-1")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let again = create(&service, "gw-1", "t-1").await;
    let new_url = again["sandbox_url"].as_str().unwrap();
    assert_ne!(new_url, url, "a re-created id gets a new URL");
    json_answer(long_client().get(format!("{new_url}/v1/sandbox"))).await;
    let (status, _) = status_of(http.get(format!("{url}/v1/sandbox"))).await;
    assert_eq!(status, 404, "the old URL stays dead");
    service
        .call(Method::DELETE, "/api/sandboxes/gw-1", None)
        .await;
}

#[tokio::test]
async fn the_gateway_streams_large_bodies_both_ways_and_splices_websockets() {
    if !real_node_running().await {
        return;
    }
    // It loads the machine on purpose (hundreds of MiB, thousands of sockets): alone.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("gw-stream").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    args.gateway.gateway_max_body_bytes = 60 << 20;
    // Shorter than the slowed download below: bytes moving keep a body open however long, and
    // a connection in the middle of a request is not idle.
    args.gateway.gateway_idle_timeout_seconds = 2.0;
    args.http.keepalive_timeout_seconds = 2.0;
    args.http.header_read_timeout_seconds = 2.0;
    let service = TestService::start(args).await;
    let answer = create(&service, "gw-s", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = long_client();
    json_answer(http.get(format!("{url}/v1/sandbox"))).await;

    // 100 MiB down, checked byte by byte against the image's pattern, read slowly enough to
    // take longer than the idle timeout.
    let mut response = http
        .get(format!("{url}/test/stream?mib=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut offset, started) = (0usize, std::time::Instant::now());
    while let Some(chunk) = response.chunk().await.unwrap() {
        for (i, byte) in chunk.iter().enumerate() {
            assert_eq!(*byte, ((offset + i) % 251) as u8, "byte {}", offset + i);
        }
        offset += chunk.len();
        if offset % (4 << 20) < chunk.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(offset, 100 << 20);
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // 50 MiB up, hashed by the sandbox.
    let upload: Vec<u8> = (0..50usize << 20).map(|i| (i % 253) as u8).collect();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &upload {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let received = json_answer(http.post(format!("{url}/test/upload")).body(upload)).await;
    assert_eq!(received["data"]["bytes"], 50 << 20, "{received}");
    assert_eq!(received["data"]["fnv1a"], format!("{hash:016x}"));
    // Past the cap: refused before anything is forwarded.
    let (status, body) =
        status_of(
            http.post(format!("{url}/test/upload"))
                .body(vec![0u8; (60 << 20) + 1]),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("PROVISIONER_GATEWAY_MAX_BODY_BYTES"));

    // A WebSocket, through the same URL.
    let ws_url = format!("{}/test/ws", url.replacen("http://", "ws://", 1));
    let (mut socket, handshake) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("the WebSocket handshake passes the gateway");
    assert_eq!(handshake.status(), 101);
    for text in ["hello", "through the gateway"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    socket.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    socket.close(None).await.unwrap();
    service
        .call(Method::DELETE, "/api/sandboxes/gw-s", None)
        .await;
}

#[tokio::test]
async fn a_pod_gone_mid_request_is_502_and_slow_answers_time_out_with_504() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("gw-fail").await;
    let host = HostDir::new(&ns);
    let args = real_node_gateway_args(&ns.name, &host.0);
    let service = TestService::start(args.clone()).await;
    let answer = create(&service, "gw-f", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = long_client();
    json_answer(http.get(format!("{url}/v1/sandbox"))).await;

    // The Pod deleted while a request waits in it.
    let in_flight = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move { status_of(http.get(format!("{url}/test/slow?ms=60000"))).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    ns.pods()
        .delete("sandbox-gw-f", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("deleted or replaced"),
        "{body}"
    );

    // Repaired by the next create (a new Pod, so a new URL), it answers again.
    eventually(Duration::from_secs(60), "the Pod to be gone", || async {
        ns.pods()
            .get_opt("sandbox-gw-f")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let again = create(&service, "gw-f", "t-1").await;
    let url = again["sandbox_url"].as_str().unwrap().to_string();
    let (status, body) = status_of(http.get(format!("{url}/test/slow?ms=10"))).await;
    assert_eq!(status, 200, "{body}");
    service.stop_gracefully().await;

    // Another replica whose gateway waits at most 3 s for an answer to start.
    let mut args = args;
    args.http.listen = format!("127.0.0.1:{}", testkit::free_port());
    args.gateway.public_url = Some(format!("http://{}", args.http.listen));
    args.gateway.gateway_timeout_seconds = 3.0;
    let service = TestService::start(args).await;
    let url = url.replacen(&url[..url.find("/sandboxes/").unwrap()], &service.base, 1);
    // Its cache synced and its connection to the Pod made before anything is timed.
    json_answer(http.get(format!("{url}/v1/ping"))).await;
    let (status, body) = status_of(http.get(format!("{url}/test/slow?ms=100"))).await;
    assert_eq!((status, &body["data"]["ms"]), (200, &json!(100)), "{body}");
    let (status, body) = status_of(http.get(format!("{url}/test/slow?ms=8000"))).await;
    assert_eq!(status, 504, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("PROVISIONER_GATEWAY_TIMEOUT_SECONDS"));
    service
        .call(Method::DELETE, "/api/sandboxes/gw-f", None)
        .await;
}

#[tokio::test]
async fn traffic_alone_keeps_a_sandbox_alive_and_it_is_reaped_once_traffic_stops() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("gw-idle").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    args.lifecycle.sandbox_idle_timeout = "6s".into();
    args.lifecycle.sandbox_reap_interval = "1s".into();
    let service = TestService::start(args).await;
    let answer = create(&service, "gw-i", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = long_client();
    json_answer(http.get(format!("{url}/v1/sandbox"))).await;
    // Twice the idle timeout of requests through the gateway only (no API call).
    let until = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < until {
        let (status, body) = status_of(http.get(format!("{url}/v1/ping"))).await;
        assert_eq!(status, 200, "kept alive by traffic: {body}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let pods = ns.pods();
    let pod: Pod = pods.get("sandbox-gw-i").await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none());
    eventually(
        Duration::from_secs(30),
        "the idle sandbox to be reaped",
        || async {
            let pod = pods.get_opt("sandbox-gw-i").await.unwrap();
            pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn with_per_sandbox_keys_only_the_gateway_gets_in() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("gw-key").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    args.gateway.sandbox_upstream_key = "per-sandbox".into();
    let service = TestService::start(args).await;
    let answer = create(&service, "gw-k", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = long_client();
    // Ready through probes of the open /v1/ping; answers through the gateway.
    let context = json_answer(http.get(format!("{url}/v1/sandbox"))).await;
    assert_eq!(context["home_dir"], "/home/gem", "{context}");
    let (out, code) = exec(&http, &url, "echo through").await;
    assert_eq!((out.trim(), code), ("through", 0));
    let pod: Pod = ns.pods().get("sandbox-gw-k").await.unwrap();
    let ip = pod.status.unwrap().pod_ip.unwrap();
    let direct = format!("http://{ip}:8080");
    let (status, body) = status_of(http.get(format!("{direct}/v1/sandbox"))).await;
    assert_eq!(status, 401, "bypassing the gateway: {body}");
    let (status, _) = status_of(
        http.post(format!("{direct}/v1/shell/exec"))
            .json(&json!({"command": "id"})),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = status_of(http.get(format!("{direct}/v1/ping"))).await;
    assert_eq!(status, 200, "the probes' path stays open");
    service
        .call(Method::DELETE, "/api/sandboxes/gw-k", None)
        .await;
}

/// Opens `n` connections to `addr` that each send half a request head.
async fn half_requests(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        // A refused connection may already be closed: its write fails, which is fine.
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Half")
            .await;
        streams.push(stream);
    }
    streams
}

/// Whether the server closed the connection within `limit` (whatever it sent first).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

#[tokio::test]
async fn slow_clients_are_cut_at_the_header_timeout_while_everyone_else_is_served() {
    if !real_node_running().await {
        return;
    }
    // It loads the machine on purpose (hundreds of MiB, thousands of sockets): alone.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("gw-slow").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    args.http.header_read_timeout_seconds = 3.0;
    let service = TestService::start(args).await;
    let answer = create(&service, "gw-h", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = long_client();
    json_answer(http.get(format!("{url}/v1/sandbox"))).await;

    let addr = service.base.trim_start_matches("http://").to_string();
    let started = tokio::time::Instant::now();
    let mut slow = half_requests(&addr, 2000).await;
    // With 2,000 slow clients holding connections: probes, the API and the gateway answer.
    let fresh = http_client();
    for path in ["/health".to_string(), "/api/sandboxes/gw-h".to_string()] {
        let (status, body) = status_of(fresh.get(service.url(&path))).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = status_of(fresh.get(format!("{url}/v1/ping"))).await;
    assert_eq!(status, 200);
    // Each slow client is closed once the header timeout passes, not before.
    for stream in &mut slow {
        assert!(
            closed_within(stream, Duration::from_secs(30)).await,
            "closed"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    drop(slow);
    let (status, _) = status_of(fresh.get(format!("{url}/v1/ping"))).await;
    assert_eq!(status, 200);
    service
        .call(Method::DELETE, "/api/sandboxes/gw-h", None)
        .await;
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_counted() {
    let ns = TestNamespace::new("conn-cap").await;
    let mut args = testkit::serve_args(&ns.name);
    args.http.listen = format!("127.0.0.1:{}", testkit::free_port());
    args.http.max_connections = 50;
    args.http.header_read_timeout_seconds = 60.0;
    let service = TestService::start(args).await;
    let metrics_before = testkit::metric_sum(
        &service.base,
        r#"sandbox_provisioner_connections_refused_total{what="api"}"#,
    )
    .await;
    let addr = service.base.trim_start_matches("http://").to_string();
    let held = half_requests(&addr, 50).await;
    // Until the held ones go, a new connection is closed at once.
    let mut extra = half_requests(&addr, 5).await;
    for stream in &mut extra {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "refused"
        );
    }
    drop(held);
    // Once the server has seen them go, new connections are served again; each attempt
    // refused before that counts too.
    let http = http_client();
    let refused_attempts = std::sync::atomic::AtomicU32::new(0);
    eventually(
        Duration::from_secs(10),
        "a new connection to be served",
        || async {
            match http.get(service.url("/health")).send().await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => {
                    refused_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            }
        },
    )
    .await;
    let refused_attempts = f64::from(refused_attempts.into_inner());
    let refused = testkit::metric_sum(
        &service.base,
        r#"sandbox_provisioner_connections_refused_total{what="api"}"#,
    )
    .await;
    assert_eq!(refused - metrics_before, 5.0 + refused_attempts);
}

#[tokio::test]
async fn under_churn_every_answer_comes_from_the_sandbox_its_url_names() {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };
    if !real_node_running().await {
        return;
    }
    const SANDBOXES: usize = 20;
    const REQUESTS: usize = 10_000;
    // Twenty real sandboxes and their churn: nothing else on the node meanwhile.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("gw-churn").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    // Small enough that twenty fit on the node's two cores, with room for the re-created.
    args.sizes.sandbox_sizes = Some(
        json!({"tiny": {"requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"cpu": "500m", "memory": "256Mi"}}})
        .to_string(),
    );
    args.sizes.sandbox_default_size = "tiny".into();
    let service = TestService::start(args).await;
    // Which Pod each URL was handed out for, and each slot's current URL.
    let owner_of: Arc<Mutex<HashMap<String, (String, String)>>> = Arc::default();
    let current: Arc<Mutex<Vec<String>>> = Arc::default();
    for i in 0..SANDBOXES {
        let id = format!("churn-{i}");
        let answer = create(&service, &id, "t-1").await;
        let url = answer["sandbox_url"].as_str().unwrap().to_string();
        let uid = answer["container_id"].as_str().unwrap().to_string();
        owner_of.lock().unwrap().insert(url.clone(), (id, uid));
        current.lock().unwrap().push(url);
    }
    let http = long_client();
    let urls = current.lock().unwrap().clone();
    for url in urls {
        json_answer(http.get(format!("{url}/v1/sandbox"))).await;
    }

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Deletes and re-creates sandboxes one after another while the requests run.
    let churn = tokio::spawn({
        let (base, owner_of, current, done) = (
            service.base.clone(),
            owner_of.clone(),
            current.clone(),
            done.clone(),
        );
        let pods = ns.pods();
        async move {
            let http = long_client();
            let mut recreated = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let slot = recreated % SANDBOXES;
                let id = format!("churn-{slot}");
                let deleted = http
                    .delete(format!("{base}/api/sandboxes/{id}"))
                    .send()
                    .await;
                assert_eq!(deleted.unwrap().status(), 200);
                let name = format!("sandbox-{id}");
                eventually(Duration::from_secs(60), "the Pod to be gone", || async {
                    pods.get_opt(&name).await.unwrap().is_none().then_some(())
                })
                .await;
                // Ready before the next one goes: one sandbox in re-creation at a time.
                let answer: Value = json_answer(http.post(format!("{base}/api/sandboxes")).json(
                    &json!({"sandbox_id": id, "thread_id": "t-1", "wait_ready_seconds": 60}),
                ))
                .await;
                assert_eq!(answer["ready"], true, "{answer}");
                let url = answer["sandbox_url"].as_str().unwrap().to_string();
                let uid = answer["container_id"].as_str().unwrap().to_string();
                owner_of.lock().unwrap().insert(url.clone(), (id, uid));
                current.lock().unwrap()[slot] = url;
                recreated += 1;
            }
            recreated
        }
    });
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..8).map(|w| {
        let (http, owner_of, current, sent) = (
            http.clone(),
            owner_of.clone(),
            current.clone(),
            sent.clone(),
        );
        async move {
            let mut tally: HashMap<u16, usize> = HashMap::new();
            let mut n = w;
            while sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < REQUESTS {
                let url = current.lock().unwrap()[n % SANDBOXES].clone();
                n += 1;
                let response = http
                    .get(format!("{url}/test/identity"))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                *tally.entry(status).or_default() += 1;
                if status == 200 {
                    let body: Value = response.json().await.unwrap();
                    let (id, uid) = owner_of.lock().unwrap()[&url].clone();
                    assert_eq!(body["data"]["sandbox_id"], id.as_str(), "{url}: {body}");
                    assert_eq!(body["data"]["pod_uid"], uid.as_str(), "{url}: {body}");
                }
            }
            tally
        }
    });
    let tallies = futures::future::join_all(workers).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let recreated = churn.await.unwrap();
    let mut total: HashMap<u16, usize> = HashMap::new();
    for tally in tallies {
        for (status, n) in tally {
            *total.entry(status).or_default() += n;
        }
    }
    eprintln!("{REQUESTS} requests while {recreated} sandboxes were re-created: {total:?}");
    assert!(
        recreated >= 1,
        "at least one sandbox was re-created meanwhile"
    );
    // 200 from the right Pod; 404 for a URL whose sandbox was just deleted; 502/503 while
    // its own sandbox is being re-created. Nothing else.
    for status in total.keys() {
        assert!(matches!(status, 200 | 404 | 502 | 503), "{total:?}");
    }
    assert!(
        total.get(&200).copied().unwrap_or(0) > REQUESTS / 2,
        "{total:?}"
    );
}

#[tokio::test]
async fn a_cluster_reached_through_its_apiserver_serves_the_same_sandbox_calls() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("gw-api").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    // The apiserver's service proxy: the gateway does not dial the Pod itself.
    args.gateway.gateway_reach = "apiserver".into();
    args.sandbox.sandbox_service_type = "ClusterIP".into();
    let service = TestService::start(args).await;
    let answer = create(&service, "gw-a", "t-1").await;
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = long_client();
    // The Service's endpoints follow readiness a moment later: until then the apiserver says
    // so (503), which the caller retries as DeerFlow's client does.
    let context = eventually(
        Duration::from_secs(60),
        "an answer through the apiserver",
        || async {
            let (status, body) = status_of(http.get(format!("{url}/v1/sandbox"))).await;
            (status == 200).then_some(body)
        },
    )
    .await;
    assert_eq!(context["home_dir"], "/home/gem", "{context}");
    let identity = json_answer(http.get(format!("{url}/test/identity"))).await;
    assert_eq!(
        identity["data"]["pod_uid"], answer["container_id"],
        "{identity}"
    );
    let (out, code) = exec(&http, &url, "echo via-apiserver").await;
    assert_eq!((out.trim(), code), ("via-apiserver", 0));
    let received = json_answer(
        http.post(format!("{url}/test/upload"))
            .body(vec![1u8; 100_000]),
    )
    .await;
    assert_eq!(received["data"]["bytes"], 100_000, "{received}");
    let mut response = http
        .get(format!("{url}/test/stream?mib=8"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut offset = 0usize;
    while let Some(chunk) = response.chunk().await.unwrap() {
        for (i, byte) in chunk.iter().enumerate() {
            assert_eq!(*byte, ((offset + i) % 251) as u8, "byte {}", offset + i);
        }
        offset += chunk.len();
    }
    assert_eq!(offset, 8 << 20);
    // WebSockets do not pass the apiserver here: said plainly.
    let ws_url = format!("{}/test/ws", url.replacen("http://", "ws://", 1));
    let refused = tokio_tungstenite::connect_async(ws_url.as_str()).await;
    assert!(refused.is_err());
    service
        .call(Method::DELETE, "/api/sandboxes/gw-a", None)
        .await;
}
