//! Tenants and quotas against the real apiserver: scoping by API key, every limit refused with
//! 429 and nothing created, the live reload of the tenant file, the admin view, two replicas
//! racing for the last slot, and two DeerFlow-like backends sharing one provisioner.

use sandbox_provisioner::k8s::manifests;
use std::{path::PathBuf, time::Duration};

use kube::api::ListParams;
use reqwest::Method;
use sandbox_provisioner::{admission::hex_digest, config::ServeArgs};
use serde_json::{json, Value};
use testkit::{eventually, random_suffix, serve_args, TestNamespace, TestService};

const KEY_A: &str = "key-of-team-a-0123456789";
const KEY_B: &str = "key-of-team-b-0123456789";
const KEY_C: &str = "key-of-team-c-0123456789";
const ADMIN: &str = "key-of-the-admin-0123456789";

/// A tenant file that the test may rewrite.
struct TenantFile(PathBuf);

impl TenantFile {
    fn new(tenants: Value) -> TenantFile {
        let file =
            TenantFile(std::env::temp_dir().join(format!("tenants-{}.yaml", random_suffix())));
        file.write(tenants);
        file
    }

    fn write(&self, tenants: Value) {
        let body = json!({"admin_key_sha256": hex_digest(ADMIN), "tenants": tenants});
        std::fs::write(&self.0, serde_json::to_string(&body).unwrap()).unwrap();
    }
}

impl Drop for TenantFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tenant(name: &str, key: &str, limits: Value) -> Value {
    let mut t = json!({"name": name, "api_key_sha256": hex_digest(key)});
    t.as_object_mut()
        .unwrap()
        .extend(limits.as_object().cloned().unwrap_or_default());
    t
}

fn args(namespace: &str, file: &TenantFile) -> ServeArgs {
    let mut args = serve_args(namespace);
    args.http.allow_no_api_key = false;
    args.tenancy.tenants = Some(file.0.clone());
    args
}

/// A call with `key`.
async fn call(
    svc: &TestService,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = svc
        .http
        .request(method, svc.url(path))
        .header("x-api-key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    TestService::answer(req).await
}

async fn create(svc: &TestService, key: &str, body: Value) -> (u16, Value) {
    call(svc, key, Method::POST, "/api/sandboxes", Some(body)).await
}

/// A create's status, Retry-After and detail.
async fn create_raw(svc: &TestService, key: &str, body: Value) -> (u16, Option<String>, String) {
    let resp = svc
        .http
        .post(svc.url("/api/sandboxes"))
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let detail = resp.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, retry, detail)
}

async fn pod_names(ns: &TestNamespace) -> Vec<String> {
    let mut names: Vec<String> = ns
        .pods()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

fn ids(list: &Value) -> Vec<&str> {
    list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandbox_id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn every_call_is_scoped_to_the_callers_tenant() {
    let ns = TestNamespace::new("tenant-scope").await;
    let file = TenantFile::new(json!([
        tenant("team-a", KEY_A, json!({})),
        tenant("team-b", KEY_B, json!({}))
    ]));
    let svc = TestService::start(args(&ns.name, &file)).await;
    let (code, a1) = create(&svc, KEY_A, json!({"sandbox_id": "a-1"})).await;
    assert_eq!((code, a1["tenant"].as_str()), (200, Some("team-a")), "{a1}");
    let (code, b1) = create(&svc, KEY_B, json!({"sandbox_id": "b-1", "thread_id": "t"})).await;
    assert_eq!((code, b1["tenant"].as_str()), (200, Some("team-b")), "{b1}");
    // Every object carries its tenant.
    let pod = ns.pods().get("sandbox-b-1").await.unwrap();
    assert_eq!(
        pod.metadata.labels.unwrap()[manifests::TENANT_LABEL],
        "team-b"
    );
    let service = ns.services().get("sandbox-b-1-svc").await.unwrap();
    assert_eq!(
        service.metadata.labels.unwrap()[manifests::TENANT_LABEL],
        "team-b"
    );

    // Another tenant's sandbox is not found, exactly like one that does not exist.
    let (code, missing) = call(&svc, KEY_A, Method::GET, "/api/sandboxes/b-none", None).await;
    assert_eq!(code, 404);
    for (method, path) in [
        (Method::GET, "/api/sandboxes/b-1"),
        (Method::GET, "/api/sandboxes/b-1?wait_ready=1"),
        (Method::POST, "/api/sandboxes/b-1/keepalive"),
        (Method::DELETE, "/api/sandboxes/b-1"),
    ] {
        let (code, body) = call(&svc, KEY_A, method.clone(), path, None).await;
        assert_eq!(code, 404, "{method} {path}: {body}");
        assert_eq!(
            body["detail"].as_str().unwrap().replace("b-1", "b-none"),
            missing["detail"].as_str().unwrap(),
            "nothing tells another tenant's sandbox from a missing one"
        );
    }
    assert!(
        pod_names(&ns).await.contains(&"sandbox-b-1".to_string()),
        "b-1 was not deleted"
    );
    // Presence too: another tenant's sandbox reads as absent; its own tenant sees it.
    let (code, body) = call(
        &svc,
        KEY_A,
        Method::GET,
        "/api/sandboxes/b-1/presence",
        None,
    )
    .await;
    assert_eq!(
        (code, body),
        (
            200,
            json!({"sandbox_id": "b-1", "exists": false, "container_id": null})
        )
    );
    let (code, body) = call(
        &svc,
        KEY_B,
        Method::GET,
        "/api/sandboxes/b-1/presence",
        None,
    )
    .await;
    assert_eq!((code, &body["exists"]), (200, &json!(true)), "{body}");
    assert_eq!(body["container_id"], b1["container_id"]);
    // Creating an id another tenant holds is 409, without naming the tenant or its thread.
    let (code, taken) = create(&svc, KEY_A, json!({"sandbox_id": "b-1", "thread_id": "t"})).await;
    assert_eq!(code, 409, "{taken}");
    let detail = taken["detail"].as_str().unwrap();
    assert!(
        detail.contains("is taken") && !detail.contains("team-b"),
        "{detail}"
    );
    let (_, list) = call(&svc, KEY_A, Method::GET, "/api/sandboxes", None).await;
    assert_eq!(ids(&list), ["a-1"]);
    let (code, _) = call(
        &svc,
        KEY_A,
        Method::GET,
        "/api/sandboxes?tenant=team-b",
        None,
    )
    .await;
    assert_eq!(code, 403);

    // The admin sees every tenant, may filter, and creates nothing.
    let (_, all) = call(&svc, ADMIN, Method::GET, "/api/sandboxes", None).await;
    assert_eq!(ids(&all), ["a-1", "b-1"]);
    let (_, only_b) = call(
        &svc,
        ADMIN,
        Method::GET,
        "/api/sandboxes?tenant=team-b",
        None,
    )
    .await;
    assert_eq!(ids(&only_b), ["b-1"]);
    assert_eq!(only_b["sandboxes"][0]["tenant"], "team-b");
    let (code, _) = call(&svc, ADMIN, Method::GET, "/api/sandboxes/b-1", None).await;
    assert_eq!(code, 200);
    let (code, _) = create(&svc, ADMIN, json!({"sandbox_id": "adm-1"})).await;
    assert_eq!(code, 403);
    let (code, _) = call(
        &svc,
        "not-a-key-0123456789",
        Method::GET,
        "/api/sandboxes",
        None,
    )
    .await;
    assert_eq!(code, 401);
    let (code, quota) = call(&svc, ADMIN, Method::GET, "/api/quota", None).await;
    assert_eq!(code, 200);
    assert_eq!(quota["tenants"].as_array().unwrap().len(), 2, "{quota}");
    assert_eq!(quota["total"], 2);

    // The owner deletes its own.
    let (code, _) = call(&svc, KEY_B, Method::DELETE, "/api/sandboxes/b-1", None).await;
    assert_eq!(code, 200);
    assert_eq!(pod_names(&ns).await, ["sandbox-a-1"]);
}

#[tokio::test]
async fn each_limit_is_429_with_retry_after_and_creates_nothing() {
    let ns = TestNamespace::new("tenant-quota").await;
    let file = TenantFile::new(json!([
        tenant("count", KEY_A, json!({"max_sandboxes": 2})),
        tenant(
            "per-user",
            KEY_B,
            json!({"max_sandboxes_per_user": 1, "max_cpu": "2500m", "max_memory": "3Gi"})
        ),
        tenant("rate", KEY_C, json!({"max_creates_per_minute": 2})),
    ]));
    let svc = TestService::start(args(&ns.name, &file)).await;

    // max_sandboxes
    for id in ["c-1", "c-2"] {
        assert_eq!(create(&svc, KEY_A, json!({"sandbox_id": id})).await.0, 200);
    }
    let (code, retry, detail) = create_raw(&svc, KEY_A, json!({"sandbox_id": "c-3"})).await;
    assert_eq!((code, retry.as_deref()), (429, Some("30")), "{detail}");
    assert!(
        detail.starts_with(
            "quota exceeded: max_sandboxes is 2 and the tenant has 2; nothing was created"
        ),
        "{detail}"
    );
    assert!(!pod_names(&ns).await.contains(&"sandbox-c-3".into()));
    // A re-create of an existing sandbox is never refused.
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "c-1"})).await.0,
        200
    );
    // Deleting frees the slot at once.
    assert_eq!(
        call(&svc, KEY_A, Method::DELETE, "/api/sandboxes/c-2", None)
            .await
            .0,
        200
    );
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "c-3"})).await.0,
        200
    );
    let (_, quota) = call(&svc, KEY_A, Method::GET, "/api/quota", None).await;
    assert_eq!(
        quota["tenants"].as_array().unwrap().len(),
        1,
        "a tenant sees only itself"
    );
    assert_eq!(quota["tenants"][0]["tenant"], "count");
    assert_eq!(quota["tenants"][0]["limits"]["max_sandboxes"], 2);
    assert_eq!(quota["tenants"][0]["usage"]["sandboxes"], 2);

    // max_sandboxes_per_user, then max_cpu and max_memory (the default size: 1 CPU, 1Gi).
    assert_eq!(
        create(
            &svc,
            KEY_B,
            json!({"sandbox_id": "u-1", "user_id": "alice"})
        )
        .await
        .0,
        200
    );
    let (code, _, detail) = create_raw(
        &svc,
        KEY_B,
        json!({"sandbox_id": "u-2", "user_id": "alice"}),
    )
    .await;
    assert_eq!(code, 429, "{detail}");
    assert!(
        detail.contains("max_sandboxes_per_user is 1 and user \"alice\" has 1"),
        "{detail}"
    );
    assert_eq!(
        create(&svc, KEY_B, json!({"sandbox_id": "u-3", "user_id": "bob"}))
            .await
            .0,
        200
    );
    let (code, _, detail) = create_raw(
        &svc,
        KEY_B,
        json!({"sandbox_id": "u-4", "user_id": "carol"}),
    )
    .await;
    assert_eq!(code, 429, "{detail}");
    assert!(detail.contains("max_cpu is 2500m and the tenant's sandboxes have CPU limits of 2 cores together, and this one asks for 1 more"), "{detail}");
    let small = json!({"sandbox_id": "u-5", "user_id": "carol", "resources": {"limits": {"cpu": "250m", "memory": "1536Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}});
    let (code, _, detail) = create_raw(&svc, KEY_B, small).await;
    assert_eq!(code, 429, "{detail}");
    assert!(detail.contains("max_memory is 3Gi"), "{detail}");
    let fits = json!({"sandbox_id": "u-6", "user_id": "carol", "resources": {"limits": {"cpu": "250m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}});
    assert_eq!(create(&svc, KEY_B, fits).await.0, 200);

    // max_creates_per_minute: deleting does not give the creates back.
    for id in ["r-1", "r-2"] {
        assert_eq!(create(&svc, KEY_C, json!({"sandbox_id": id})).await.0, 200);
        assert_eq!(
            call(
                &svc,
                KEY_C,
                Method::DELETE,
                &format!("/api/sandboxes/{id}"),
                None
            )
            .await
            .0,
            200
        );
    }
    let (code, retry, detail) = create_raw(&svc, KEY_C, json!({"sandbox_id": "r-3"})).await;
    assert_eq!(code, 429, "{detail}");
    let wait: u64 = retry.unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        detail.contains("max_creates_per_minute is 2 and the tenant created 2 in the last minute"),
        "{detail}"
    );

    let pods = pod_names(&ns).await;
    for refused in ["sandbox-u-2", "sandbox-u-4", "sandbox-u-5", "sandbox-r-3"] {
        assert!(
            !pods.contains(&refused.to_string()),
            "{refused} was created: {pods:?}"
        );
    }
    let metrics = svc.metrics_text().await;
    for needle in [
        r#"sandbox_provisioner_quota_refusals_total{tenant="count",limit="max_sandboxes"} 1"#,
        r#"sandbox_provisioner_quota_refusals_total{tenant="per-user",limit="max_cpu"} 1"#,
        r#"sandbox_provisioner_quota_refusals_total{tenant="rate",limit="max_creates_per_minute"} 1"#,
        r#"sandbox_provisioner_tenant_sandboxes{tenant="count"} 2"#,
        r#"sandbox_provisioner_tenant_sandboxes{tenant="rate"} 0"#,
    ] {
        assert!(metrics.contains(needle), "missing {needle}");
    }
    assert!(!metrics.contains(KEY_A) && !metrics.contains(&hex_digest(KEY_A)));
}

#[tokio::test]
async fn the_deployment_wide_limit_counts_every_tenant() {
    let ns = TestNamespace::new("tenant-total").await;
    let file = TenantFile::new(json!([
        tenant("team-a", KEY_A, json!({})),
        tenant("team-b", KEY_B, json!({}))
    ]));
    let mut args = args(&ns.name, &file);
    args.tenancy.sandbox_max_total = Some(3);
    let svc = TestService::start(args).await;
    for id in ["t-1", "t-2"] {
        assert_eq!(create(&svc, KEY_A, json!({"sandbox_id": id})).await.0, 200);
    }
    assert_eq!(
        create(&svc, KEY_B, json!({"sandbox_id": "t-3"})).await.0,
        200
    );
    let (code, retry, detail) = create_raw(&svc, KEY_B, json!({"sandbox_id": "t-4"})).await;
    assert_eq!((code, retry.as_deref()), (429, Some("30")), "{detail}");
    assert!(
        detail.contains("SANDBOX_MAX_TOTAL is 3 and 3 sandboxes exist in this deployment"),
        "{detail}"
    );
    assert_eq!(pod_names(&ns).await.len(), 3);
}

#[tokio::test]
async fn an_expired_sandbox_frees_its_slot() {
    let ns = TestNamespace::new("tenant-reap").await;
    let file = TenantFile::new(json!([tenant(
        "team-a",
        KEY_A,
        json!({"max_sandboxes": 1})
    )]));
    let mut args = args(&ns.name, &file);
    args.lifecycle.sandbox_reap_interval = "1s".into();
    let svc = TestService::start(args).await;
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "x-1", "ttl_seconds": 2}))
            .await
            .0,
        200
    );
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "x-2"})).await.0,
        429
    );
    eventually(
        Duration::from_secs(20),
        "the reaper to free the slot",
        || async {
            (create(&svc, KEY_A, json!({"sandbox_id": "x-2"})).await.0 == 200).then_some(())
        },
    )
    .await;
    assert_eq!(pod_names(&ns).await, ["sandbox-x-2"]);
}

#[tokio::test]
async fn a_changed_tenant_file_applies_without_a_restart_and_a_broken_one_is_ignored() {
    let ns = TestNamespace::new("tenant-reload").await;
    let file = TenantFile::new(json!([tenant(
        "team-a",
        KEY_A,
        json!({"max_sandboxes": 1})
    )]));
    let svc = TestService::start(args(&ns.name, &file)).await;
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "l-1"})).await.0,
        200
    );
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "l-2"})).await.0,
        429
    );
    assert_eq!(
        call(&svc, KEY_C, Method::GET, "/api/sandboxes", None)
            .await
            .0,
        401
    );

    file.write(json!([
        tenant("team-a", KEY_A, json!({"max_sandboxes": 2})),
        tenant("team-c", KEY_C, json!({})),
    ]));
    eventually(
        Duration::from_secs(15),
        "the new tenant to be known",
        || async {
            (call(&svc, KEY_C, Method::GET, "/api/sandboxes", None)
                .await
                .0
                == 200)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        create(&svc, KEY_A, json!({"sandbox_id": "l-2"})).await.0,
        200,
        "the raised limit applies"
    );

    // A broken file changes nothing (once the reload has read it).
    let invalid = format!("{}result=\"invalid\"", testkit::TENANT_FILE_CHECKS);
    let before = testkit::metric_sum(&svc.base, &invalid).await;
    std::fs::write(
        &file.0,
        "tenants: [{name: team-a, api_key_sha256: not-a-digest}]",
    )
    .unwrap();
    eventually(
        Duration::from_secs(30),
        "the broken file to be read",
        || async { (testkit::metric_sum(&svc.base, &invalid).await > before).then_some(()) },
    )
    .await;
    assert_eq!(
        call(&svc, KEY_C, Method::GET, "/api/sandboxes", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&svc, KEY_A, Method::GET, "/api/sandboxes", None)
            .await
            .0,
        200
    );

    // Removing a tenant shuts its key out.
    file.write(json!([tenant(
        "team-a",
        KEY_A,
        json!({"max_sandboxes": 2})
    )]));
    eventually(
        Duration::from_secs(15),
        "team-c's key to be refused",
        || async {
            (call(&svc, KEY_C, Method::GET, "/api/sandboxes", None)
                .await
                .0
                == 401)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_replicas_racing_for_the_last_slot_admit_exactly_one() {
    let ns = TestNamespace::new("tenant-race").await;
    let file = TenantFile::new(json!([tenant(
        "team-a",
        KEY_A,
        json!({"max_sandboxes": 1})
    )]));
    let one = TestService::start(args(&ns.name, &file)).await;
    let two = TestService::start(args(&ns.name, &file)).await;
    let mut overshoots = 0;
    for round in 0..50 {
        let (first, second) = (format!("race-{round}-a"), format!("race-{round}-b"));
        let ((c1, b1), (c2, b2)) = tokio::join!(
            create(&one, KEY_A, json!({"sandbox_id": first})),
            create(&two, KEY_A, json!({"sandbox_id": second})),
        );
        assert!(
            [200, 429].contains(&c1) && [200, 429].contains(&c2),
            "{b1} {b2}"
        );
        let admitted = [c1, c2].iter().filter(|c| **c == 200).count();
        assert!(
            admitted >= 1,
            "round {round}: the one free slot went unused: {b1} {b2}"
        );
        let existing = pod_names(&ns).await.len();
        assert_eq!(existing, admitted, "what was admitted exists, nothing more");
        assert!(
            existing <= 2,
            "round {round}: more than one above the limit"
        );
        overshoots += existing - 1;
        for (svc, id) in [(&one, &first), (&two, &second)] {
            assert_eq!(
                call(
                    svc,
                    KEY_A,
                    Method::DELETE,
                    &format!("/api/sandboxes/{id}"),
                    None
                )
                .await
                .0,
                200
            );
        }
        // The next round starts when both replicas count nothing.
        for svc in [&one, &two] {
            eventually(
                Duration::from_secs(10),
                "both replicas to count 0",
                || async {
                    let (_, q) = call(svc, KEY_A, Method::GET, "/api/quota", None).await;
                    (q["tenants"][0]["usage"]["sandboxes"] == 0).then_some(())
                },
            )
            .await;
        }
    }
    assert_eq!(overshoots, 0);
    eprintln!("two replicas, 50 races for the last slot: every one admitted exactly one");
}

#[tokio::test]
async fn two_deerflow_backends_sharing_a_provisioner_keep_their_sandboxes() {
    let ns = TestNamespace::new("tenant-gateways").await;
    let file = TenantFile::new(json!([
        tenant("deerflow-a", KEY_A, json!({})),
        tenant("deerflow-b", KEY_B, json!({}))
    ]));
    let svc = TestService::start(args(&ns.name, &file)).await;
    for (key, id) in [(KEY_A, "ga-1"), (KEY_A, "ga-2"), (KEY_B, "gb-1")] {
        assert_eq!(
            create(
                &svc,
                key,
                json!({"sandbox_id": id, "thread_id": id, "user_id": "default"})
            )
            .await
            .0,
            200
        );
    }
    // Backend A restarts: its reconcile lists the sandboxes, adopts every one listed, and
    // (after its idle timeout) deletes what it adopted, as DeerFlow's gateway does.
    let (code, listed) = call(&svc, KEY_A, Method::GET, "/api/sandboxes", None).await;
    assert_eq!(code, 200);
    let adopted: Vec<String> = ids(&listed).iter().map(|s| s.to_string()).collect();
    assert_eq!(adopted, ["ga-1", "ga-2"]);
    for id in &adopted {
        assert_eq!(
            call(
                &svc,
                KEY_A,
                Method::DELETE,
                &format!("/api/sandboxes/{id}"),
                None
            )
            .await
            .0,
            200
        );
    }
    // Backend B's sandbox is untouched, and B's own reconcile sees exactly it.
    assert_eq!(pod_names(&ns).await, ["sandbox-gb-1"]);
    let (_, listed) = call(&svc, KEY_B, Method::GET, "/api/sandboxes", None).await;
    assert_eq!(ids(&listed), ["gb-1"]);
    let (code, body) = call(&svc, KEY_B, Method::GET, "/api/sandboxes/gb-1", None).await;
    assert_eq!((code, body["status"].is_string()), (200, true));
}

#[test]
fn hash_key_prints_the_digest_the_file_holds() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{KEY_A}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hex_digest(KEY_A)
    );
    let short = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .args(["hash-key", "short"])
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16 characters"));
}
