//! Hardening against the real apiserver: authentication, sandbox pod security, readiness,
//! outages, overload, limits, shutdown, restarts and hostile input.

use std::{collections::HashMap, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use reqwest::{header, Method};
use serde_json::{json, Value};
use testkit::{
    eventually, json_answer, kubeconfig_path, serve_args, BlackholeProxy, ExtraApiserver,
    RunningBinary, TestNamespace, TestService,
};

const KEY: &str = "test-key-0123456789abcdef";

#[tokio::test]
async fn api_key_guards_the_api_but_not_the_probes() {
    let ns = TestNamespace::new("auth").await;
    let mut args = serve_args(&ns.name);
    args.http.api_key = Some(KEY.into());
    let svc = TestService::start(args).await;
    let list = || svc.http.get(svc.url("/api/sandboxes"));

    for req in [
        list(),
        list().header("x-api-key", "wrong-key-0123456789"),
        list().header(header::AUTHORIZATION, format!("Basic {KEY}")),
        list().header(header::AUTHORIZATION, "Bearer nope"),
        // Not ASCII, or not even UTF-8: a wrong key like any other, never a 500.
        list().header(
            "x-api-key",
            reqwest::header::HeaderValue::from_bytes("clé-ünïcödé-0123456789".as_bytes()).unwrap(),
        ),
        list().header(
            "x-api-key",
            reqwest::header::HeaderValue::from_bytes(&[0xff, 0xfe, 0x80, b'k']).unwrap(),
        ),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body: Value = resp.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("X-API-Key") && !detail.contains(KEY) && !detail.contains("wrong-key"),
            "{detail}"
        );
    }
    let create = svc
        .http
        .post(svc.url("/api/sandboxes"))
        .json(&json!({"sandbox_id": "auth-1", "thread_id": "t"}));
    assert_eq!(TestService::answer(create).await.0, 401);
    assert!(
        ns.leftovers().await.is_empty(),
        "an unauthenticated create makes nothing"
    );

    assert_eq!(
        TestService::answer(list().header("x-api-key", KEY)).await.0,
        200
    );
    assert_eq!(
        TestService::answer(list().header(header::AUTHORIZATION, format!("Bearer {KEY}")))
            .await
            .0,
        200
    );
    assert_eq!(
        TestService::answer(list().header(header::AUTHORIZATION, format!("bearer {KEY}")))
            .await
            .0,
        200
    );
    assert_eq!(svc.call(Method::GET, "/health", None).await.0, 200);
    assert_eq!(svc.call(Method::GET, "/readyz", None).await.0, 200);
}

#[tokio::test]
async fn the_key_is_never_logged_or_shown() {
    let ns = TestNamespace::uncreated("keylog").await;
    let mut running = RunningBinary::start(&ns.binary_env([
        ("PROVISIONER_API_KEY", KEY.into()),
        ("RUST_LOG", "debug".into()),
    ]))
    .await;
    let resp = reqwest::Client::new()
        .get(format!("{}/api/sandboxes", running.base))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.sigterm();
    let (_, log) = running.wait_exit(Duration::from_secs(15)).await;
    assert!(!log.contains(KEY), "the key leaked into the log:\n{log}");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .arg("--help")
        .env("PROVISIONER_API_KEY", KEY)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("PROVISIONER_API_KEY") && !help.contains(KEY),
        "{help}"
    );
}

#[test]
fn require_api_key_without_a_key_stops_the_service() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .env_clear()
        .env("PROVISIONER_REQUIRE_API_KEY", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PROVISIONER_API_KEY") && err.contains("PROVISIONER_REQUIRE_API_KEY"),
        "{err}"
    );
}

fn security(pod: &Pod) -> Value {
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    json!({
        "automountServiceAccountToken": spec["automountServiceAccountToken"],
        "enableServiceLinks": spec["enableServiceLinks"],
        "podSecurityContext": spec["securityContext"],
        "containerSecurityContext": spec["containers"][0]["securityContext"],
        "volumes": spec["volumes"].as_array().unwrap().iter().map(|v| v["name"].clone()).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn sandbox_pods_are_locked_down_by_default() {
    let ns = TestNamespace::new("podsec").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    assert_eq!(svc.create("sec-1", "t").await.0, 200);
    let pod = ns.pods().get("sandbox-sec-1").await.unwrap();
    assert_eq!(
        security(&pod),
        json!({
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containerSecurityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {
                    "drop": ["ALL"],
                    "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID", "SETPCAP"],
                },
            },
            // No service-account token volume was injected.
            "volumes": ["skills", "user-data"],
        })
    );
}

#[tokio::test]
async fn pod_security_can_be_relaxed_for_images_that_need_it() {
    let ns = TestNamespace::new("relaxed").await;
    let mut args = serve_args(&ns.name);
    args.security.sandbox_automount_service_account_token = true;
    args.security.sandbox_enable_service_links = true;
    args.security.sandbox_seccomp_profile = "Unconfined".into();
    args.security.sandbox_allow_privilege_escalation = true;
    args.security.sandbox_capabilities_drop = "NET_RAW".into();
    args.security.sandbox_capabilities_add = "SYS_PTRACE".into();
    let svc = TestService::start(args).await;
    assert_eq!(svc.create("rel-1", "t").await.0, 200);
    let pod = ns.pods().get("sandbox-rel-1").await.unwrap();
    let s = security(&pod);
    assert_eq!(s["automountServiceAccountToken"], true);
    assert_eq!(s["enableServiceLinks"], true);
    assert_eq!(
        s["podSecurityContext"],
        json!({"seccompProfile": {"type": "Unconfined"}})
    );
    assert_eq!(
        s["containerSecurityContext"],
        json!({"allowPrivilegeEscalation": true, "capabilities": {"drop": ["NET_RAW"], "add": ["SYS_PTRACE"]}})
    );
    assert_eq!(
        s["volumes"].as_array().unwrap().len(),
        3,
        "the token volume is mounted when allowed: {s}"
    );
}

#[tokio::test]
async fn readyz_reports_the_apiserver_and_namespace() {
    let ns = TestNamespace::uncreated("readyz").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    let (code, body) = svc.call(Method::GET, "/readyz", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["namespace"], ns.name.as_str());
    assert!(
        ["synced", "syncing"].contains(&body["cache"].as_str().unwrap()),
        "{body}"
    );
    assert!(
        ns.pods().list(&Default::default()).await.is_ok(),
        "readiness created the namespace"
    );

    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_server = Some(format!("https://127.0.0.1:{}", testkit::free_port()));
    let down = TestService::start(args).await;
    let (code, body) = down.call(Method::GET, "/readyz", None).await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("not ready: cannot reach the Kubernetes API"),
        "{body}"
    );
    assert_eq!(
        down.call(Method::GET, "/health", None).await.0,
        200,
        "liveness stays up"
    );
}

#[tokio::test]
async fn apiserver_outage_gives_503_and_the_service_recovers_without_restart() {
    let ns = TestNamespace::new("outage").await;
    let apiserver = ExtraApiserver::start(&[]);
    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_server = Some(apiserver.url());
    args.cluster.k8s_api_timeout_seconds = 2.0;
    let svc = TestService::start(args).await;
    let (code, before) = svc.create("out-1", "t").await;
    assert_eq!(code, 200, "{before}");

    apiserver.down();
    // Reads come from the watch cache until the watch notices the outage (milliseconds);
    // from then on every call goes to the apiserver and fails fast.
    eventually(
        Duration::from_secs(10),
        "the cache to notice the outage",
        || async { (svc.get("out-1").await.0 == 503).then_some(()) },
    )
    .await;
    for (method, path, body) in [
        (Method::GET, "/api/sandboxes/out-1", None),
        (Method::GET, "/api/sandboxes", None),
        (
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "out-2", "thread_id": "t"})),
        ),
        (Method::DELETE, "/api/sandboxes/out-1", None),
        (Method::GET, "/readyz", None),
    ] {
        let started = std::time::Instant::now();
        let (code, answer) = svc.call(method.clone(), path, body).await;
        assert_eq!(code, 503, "{method} {path} during the outage -> {answer}");
        assert!(answer["detail"].is_string());
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{method} {path} took {:?}",
            started.elapsed()
        );
    }

    apiserver.up();
    let after = eventually(
        Duration::from_secs(30),
        "the service to work again",
        || async {
            let (code, body) = svc.get("out-1").await;
            (code == 200).then_some(body)
        },
    )
    .await;
    assert_eq!(after["sandbox_url"], before["sandbox_url"]);
    assert_eq!(svc.call(Method::GET, "/readyz", None).await.0, 200);
    // Nothing changed meanwhile, so the watch has no event to report: the cache must still
    // come back (reads from memory, and the reaper, depend on it).
    eventually(
        Duration::from_secs(30),
        "the cache to recover in a quiet namespace",
        || async {
            let (_, body) = svc.call(Method::GET, "/readyz", None).await;
            (body["cache"] == "synced").then_some(())
        },
    )
    .await;
    assert_eq!(svc.create("out-2", "t").await.0, 200);
}

#[tokio::test]
async fn apiserver_429s_are_retried() {
    let ns = TestNamespace::new("throttle").await;
    // An apiserver that serves one mutating request at a time and answers 429 to the rest
    // (except to system:masters, hence a namespaced service account for everyone here).
    let apiserver = ExtraApiserver::start(&[
        "--max-requests-inflight=1",
        "--max-mutating-requests-inflight=1",
        "--enable-priority-and-fairness=false",
    ]);
    let kubeconfig = ns
        .service_account_kubeconfig("provisioner", testkit::provisioner_rules())
        .await;
    let mut args = serve_args(&ns.name);
    args.cluster.kubeconfig_path = kubeconfig.clone();
    args.cluster.k8s_api_server = Some(apiserver.url());
    let svc = TestService::start(args).await;

    // Other clients keep the one mutating slot busy with dry-run pod creates.
    let hammer = {
        let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.cluster_url = apiserver.url().parse().unwrap();
        let pods: kube::Api<Pod> =
            kube::Api::namespaced(kube::Client::try_from(config).unwrap(), &ns.name);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (pods, stop) = (pods.clone(), stop.clone());
                tokio::spawn(async move {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("hammer-{w}")},
                        "spec": {"containers": [{"name": "c", "image": "i"}]},
                    }))
                    .unwrap();
                    let dry = kube::api::PostParams {
                        dry_run: true,
                        ..Default::default()
                    };
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), pods.create(&dry, &pod))
                                .await;
                    }
                })
            })
            .collect();
        (stop, workers)
    };
    let ids: Vec<String> = (0..20).map(|i| format!("thr-{i}")).collect();
    let t0 = std::time::Instant::now();
    let svc = &svc;
    let answers = futures::future::join_all(ids.iter().map(|id| svc.create(id, "t"))).await;
    let took = t0.elapsed();
    hammer.0.store(true, std::sync::atomic::Ordering::Relaxed);
    futures::future::join_all(hammer.1).await;

    let dropped = dropped_requests(apiserver.port).await;
    assert!(
        dropped > 0.0,
        "the apiserver refused nothing, so this test shows nothing"
    );
    let ok = answers.iter().filter(|(code, _)| *code == 200).count();
    for (code, body) in &answers {
        assert!(
            *code == 200 || *code == 503,
            "a throttled call is 200 after retries or 503, never another error: {body}"
        );
    }
    // Without retries most creates fail against this apiserver; with them nearly all succeed.
    assert!(
        ok >= ids.len() / 2,
        "only {ok} of {} creates got through: {answers:?}",
        ids.len()
    );
    eprintln!(
        "apiserver dropped {dropped} requests; {ok} of {} creates succeeded in {took:?}",
        ids.len()
    );
}

/// The apiserver's count of requests it refused with 429, from its own metrics.
async fn dropped_requests(port: u16) -> f64 {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.cluster_url = format!("https://127.0.0.1:{port}").parse().unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let request = http::Request::get("/metrics").body(vec![]).unwrap();
    let text = client.request_text(request).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("apiserver_dropped_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn oversized_bodies_are_413_and_wrong_content_types_415() {
    let ns = TestNamespace::new("limits").await;
    let mut args = serve_args(&ns.name);
    args.http.max_body_bytes = 1024;
    let svc = TestService::start(args).await;
    let big = json!({"sandbox_id": "big-1", "thread_id": "t", "padding": "x".repeat(4096)});
    let (code, body) = svc.call(Method::POST, "/api/sandboxes", Some(big)).await;
    assert_eq!(code, 413, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");

    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let req = svc
            .http
            .post(svc.url("/api/sandboxes"))
            .header(header::CONTENT_TYPE, content_type)
            .body(r#"{"sandbox_id":"ct-1","thread_id":"t"}"#);
        let (code, body) = TestService::answer(req).await;
        assert_eq!(code, 415, "{content_type} -> {body}");
    }
    assert!(ns.leftovers().await.is_empty());
}

#[tokio::test]
async fn slow_requests_hit_the_request_timeout() {
    let ns = TestNamespace::uncreated("reqtimeout").await;
    let (_silent, url) = testkit::silent_apiserver();
    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_server = Some(url);
    args.cluster.k8s_api_timeout_seconds = 30.0;
    args.http.request_timeout_seconds = 1.0;
    let svc = TestService::start(args).await;
    let started = std::time::Instant::now();
    let (code, body) = svc.get("slow-1").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("PROVISIONER_REQUEST_TIMEOUT_SECONDS"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn excess_concurrent_requests_are_shed_with_retry_after() {
    let ns = TestNamespace::uncreated("shed").await;
    let (_silent, url) = testkit::silent_apiserver();
    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_server = Some(url);
    args.cluster.k8s_api_timeout_seconds = 3.0;
    args.http.max_concurrent_requests = 2;
    let svc = TestService::start(args).await;
    let requests = (0..10).map(|_| async {
        let resp = svc
            .http
            .get(svc.url("/api/sandboxes"))
            .send()
            .await
            .unwrap();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (status, retry_after, body)
    });
    let answers = futures::future::join_all(requests).await;
    let shed: Vec<_> = answers.iter().filter(|(_, ra, _)| ra.is_some()).collect();
    assert_eq!(
        shed.len(),
        8,
        "two are served, eight are shed at once: {answers:?}"
    );
    for (status, retry_after, body) in shed {
        assert_eq!((*status, retry_after.as_deref()), (503, Some("1")));
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("limit of concurrent requests"));
    }
    // The probes are not subject to the limit.
    assert_eq!(svc.call(Method::GET, "/health", None).await.0, 200);
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let ns = TestNamespace::uncreated("sigterm").await;
    // The provisioner reaches the apiserver through a proxy that the test turns into a black
    // hole: the test then sees the request arrive (so it is in flight) and the request ends
    // only when the 2 s Kubernetes timeout fires.
    let proxy = BlackholeProxy::start(testkit::apiserver_port()).await;
    let mut running = RunningBinary::start(&ns.binary_env([
        (
            "K8S_API_SERVER",
            format!("https://127.0.0.1:{}", proxy.port),
        ),
        ("K8S_API_TIMEOUT_SECONDS", "2".into()),
    ]))
    .await;
    proxy.swallow();
    let url = format!("{}/api/sandboxes/inflight-1", running.base);
    let in_flight =
        tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    // The proxy also swallows background calls (Lease renewals, watches), so its report alone
    // does not show that this request is in flight: the provisioner's own count of Pod reads
    // does (an unknown id is confirmed with one read, which the black hole holds).
    let pod_reads = format!("{}/metrics", running.base);
    let sample = r#"sandbox_provisioner_kubernetes_requests_total{cluster="default",verb="get",resource="pods"} "#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = reqwest::get(&pod_reads)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.lines().any(|l| l.starts_with(sample)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provisioner never read the Pod:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.sigterm();
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request gets its answer");
    assert_eq!(status, 503, "the Kubernetes timeout ends it with 503");
    let (exit, log) = running.wait_exit(Duration::from_secs(15)).await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("shutdown signal received"), "{log}");
}

#[tokio::test]
async fn a_restarted_provisioner_sees_every_sandbox_with_the_same_url() {
    let ns = TestNamespace::new("restart").await;
    let env = ns.binary_env([("NODE_HOST", "127.0.0.1".into())]);
    let http = reqwest::Client::new();
    let mut first = RunningBinary::start(&env).await;
    let mut urls = HashMap::new();
    for id in ["rs-1", "rs-2"] {
        let created: Value = json_answer(
            http.post(format!("{}/api/sandboxes", first.base))
                .json(&json!({"sandbox_id": id, "thread_id": "t"})),
        )
        .await;
        urls.insert(id, created["sandbox_url"].as_str().unwrap().to_string());
    }
    first.sigterm();
    assert!(first.wait_exit(Duration::from_secs(15)).await.0.success());

    let second = RunningBinary::start(&env).await;
    for (id, url) in &urls {
        let got: Value = json_answer(http.get(format!("{}/api/sandboxes/{id}", second.base))).await;
        assert_eq!(got["sandbox_url"], url.as_str());
    }
    let list: Value = json_answer(http.get(format!("{}/api/sandboxes", second.base))).await;
    assert_eq!(list["count"], 2);
    for id in urls.keys() {
        let resp = http
            .delete(format!("{}/api/sandboxes/{id}", second.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    eventually(Duration::from_secs(30), "nothing left", || async {
        ns.leftovers().await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn hostile_input_everywhere_gets_4xx_json_and_creates_nothing() {
    let ns = TestNamespace::new("hostile2").await;
    let svc = TestService::start(serve_args(&ns.name)).await;

    // Odd paths: traversal, encodings, NUL, unicode, very long.
    let long = "a".repeat(10_000);
    let paths = [
        "/api/sandboxes/%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_string(),
        "/api/sandboxes/..%2F..%2Fetc".to_string(),
        "/api/sandboxes/a%252Fb".to_string(),
        "/api/sandboxes/a%00b".to_string(),
        "/api/sandboxes/%E2%80%AEabc".to_string(),
        "/api/sandboxes/%C3%A9t%C3%A9".to_string(),
        "/api/sandboxes/%FF%FE".to_string(),
        format!("/api/sandboxes/{long}"),
    ];
    for path in &paths {
        for method in [Method::GET, Method::DELETE] {
            let resp = svc
                .http
                .request(method.clone(), svc.url(path))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "{method} {path} -> {status}");
            let body: Value = resp
                .json()
                .await
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON"));
            assert!(body["detail"].is_string());
        }
    }

    // Deeply nested and odd JSON bodies.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    let bodies = [
        deep,
        deep_object,
        r#"{"sandbox_id":"ünïcode","thread_id":"t"}"#.into(),
        r#"{"sandbox_id":"ok-1","thread_id":"🙂"}"#.into(),
        r#"{"sandbox_id":"ok-1","thread_id":"a\u0000b"}"#.into(),
        r#"{"sandbox_id":"ok-1","thread_id":"t","sandbox_id":"ok-2"}"#.into(),
        r#"{"sandbox_id":null,"thread_id":"t"}"#.into(),
        "\u{feff}{}".into(),
        "null".into(),
        "".into(),
    ];
    for body in &bodies {
        let req = svc
            .http
            .post(svc.url("/api/sandboxes"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        let (code, answer) = TestService::answer(req).await;
        assert!(
            (400..500).contains(&code),
            "{:.80} -> {code} {answer}",
            body
        );
    }

    // Very many concurrent connections: each answered, the service stays up.
    let many = (0..300).map(|_| async {
        svc.http
            .get(svc.url("/api/sandboxes/ok-1"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let statuses = futures::future::join_all(many).await;
    for s in &statuses {
        let s = *s.as_ref().expect("every connection gets an answer");
        assert!(s == 404 || s == 503, "{s}");
    }
    assert_eq!(svc.call(Method::GET, "/health", None).await.0, 200);
    assert!(
        ns.leftovers().await.is_empty(),
        "hostile input created something: {:?}",
        ns.leftovers().await
    );
}

/// Connections left idle in the client's pool must not fail the next request.
#[tokio::test]
async fn requests_after_idle_pauses_of_about_the_timeout_succeed() {
    let ns = TestNamespace::new("idle-conns").await;
    let mut args = serve_args(&ns.name);
    args.cluster.k8s_api_timeout_seconds = 0.5;
    let svc = TestService::start(args).await;
    let mut failures = Vec::new();
    for i in 0..60u64 {
        // Pauses around the call timeout: a read timeout on pooled connections (the defect
        // this guards against) kills them right about when they are reused.
        tokio::time::sleep(Duration::from_millis(470 + (i * 7) % 60)).await;
        let (code, body) = svc.get("absent-1").await;
        if code != 404 {
            failures.push(format!("{code} {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
}
