//! Operations: metrics (checked by promtool), request ids and JSON logs, `doctor` against the
//! real apiserver with full and partial permissions, and the deployment manifests (server-side
//! dry run, and a real run of the API with exactly their Role).

use sandbox_provisioner::k8s::manifests;
use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use clap::CommandFactory;
use reqwest::Method;
use sandbox_provisioner::permissions::{self, Features, Permission};
use sandbox_provisioner::spec::keys::LEADER_LEASE;
use serde_json::{json, Value};
use testkit::{
    eventually, kubeconfig_path, serve_args, RunningBinary, TestNamespace, TestService, LEADER,
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("promtool is needed to check the metrics ({e}); install Debian's `prometheus` package (scripts/test does)"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_what_happened() {
    let ns = TestNamespace::new("metrics").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    assert_eq!(svc.create("m-1", "t").await.0, 200);
    eventually(Duration::from_secs(30), "ready", || async {
        (svc.get("m-1").await.1["ready"] == true).then_some(())
    })
    .await;
    assert_eq!(svc.list().await.0, 200);
    let before_delete = svc.metrics_text().await;
    assert!(
        before_delete
            .contains(r#"sandbox_provisioner_sandboxes{cluster="default",status="Running"} 1"#),
        "{before_delete}"
    );
    assert_eq!(svc.delete("m-1").await.0, 200);
    let resp = svc.http.get(svc.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    promtool_check(&text);
    for needle in [
        r#"sandbox_provisioner_http_requests_total{method="POST",route="/api/sandboxes",status="200"} 1"#,
        r#"sandbox_provisioner_http_request_duration_seconds_count{method="GET",route="/api/sandboxes/{sandbox_id}"}"#,
        r#"sandbox_provisioner_sandbox_create_duration_seconds_count{cluster="default"} 1"#,
        r#"sandbox_provisioner_sandbox_time_to_ready_seconds_count{cluster="default"} 1"#,
        r#"sandbox_provisioner_sandboxes{cluster="default",status="Running"} 0"#,
        r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="api"} 1"#,
        r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="lifetime"} 0"#,
        r#"sandbox_provisioner_kubernetes_requests_total{cluster="default",verb="create",resource="pods"} 1"#,
        r#"sandbox_provisioner_kubernetes_requests_total{cluster="default",verb="create",resource="services"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_made() {
    let ns = TestNamespace::uncreated("reqid").await;
    let svc = TestService::start(serve_args(&ns.name)).await;
    let given = svc
        .http
        .get(svc.url("/api/sandboxes/absent-1"))
        .header("x-request-id", "caller-chose-this")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "caller-chose-this");
    let made = svc
        .http
        .get(svc.url("/api/sandboxes/absent-1"))
        .send()
        .await
        .unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let odd = svc
        .http
        .get(svc.url("/api/sandboxes/absent-1"))
        .header("x-request-id", "has spaces in it")
        .send()
        .await
        .unwrap();
    assert_ne!(
        odd.headers()["x-request-id"],
        "has spaces in it",
        "unsafe ids are replaced"
    );
}

#[tokio::test]
async fn json_logs_carry_the_request_id() {
    let ns = TestNamespace::uncreated("jsonlog").await;
    let mut running = RunningBinary::start(&ns.binary_env([("LOG_FORMAT", "json".into())])).await;
    let resp = reqwest::Client::new()
        .get(format!("{}/api/sandboxes", running.base))
        .header("x-request-id", "req-json-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    running.sigterm();
    let (_, log) = running.wait_exit(Duration::from_secs(15)).await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request")
        .expect("a request log line");
    assert_eq!(request["span"]["request_id"], "req-json-1", "{request}");
    assert_eq!(request["fields"]["status"], 200);
    assert_eq!(request["fields"]["route"], "/api/sandboxes");
}

fn doctor(env: &[(&str, String)]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"));
    cmd.arg("doctor")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn failed_checks(report: &str) -> BTreeSet<String> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix("fail  "))
        .map(|l| l.split("  ").next().unwrap().trim().to_string())
        .collect()
}

#[tokio::test]
async fn doctor_passes_with_full_access() {
    let ns = TestNamespace::new("doctor-ok").await;
    let (code, report) = doctor(&ns.binary_env([
        ("SKILLS_HOST_PATH", "/srv/skills".into()),
        ("THREADS_HOST_PATH", "/srv/threads".into()),
    ]));
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("all checks passed"), "{report}");
    for name in [
        "kubeconfig",
        "apiserver",
        "namespace",
        "rbac create pods",
        "rbac delete services",
        "node ports",
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("ok    ") && l.contains(name)),
            "{name} not ok:\n{report}"
        );
    }
}

#[tokio::test]
async fn doctor_names_exactly_the_missing_permissions() {
    let ns = TestNamespace::new("doctor-rbac").await;
    let partial = json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "get", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list", "watch", "delete", "patch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
    ]);
    let kubeconfig = ns.service_account_kubeconfig("partial", partial).await;
    ns.grant_namespace_read("partial").await;
    let (code, report) = doctor(&[
        ("KUBECONFIG_PATH", kubeconfig.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("SKILLS_HOST_PATH", "/srv/skills".into()),
        ("THREADS_HOST_PATH", "/srv/threads".into()),
    ]);
    assert_eq!(code, 1, "{report}");
    let expected: BTreeSet<String> = ["rbac delete pods", "rbac list services"]
        .map(String::from)
        .into();
    assert_eq!(failed_checks(&report), expected, "{report}");
    assert!(report.contains("fix: add verb delete on pods"), "{report}");
}

#[tokio::test]
async fn doctor_explains_broken_connections() {
    let dir = std::env::temp_dir().join(format!("kubeconfig-dir-{}", testkit::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, report) = doctor(&[("KUBECONFIG_PATH", dir.display().to_string())]);
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(code, 1);
    assert!(
        failed_checks(&report).contains("kubeconfig") && report.contains("is a directory"),
        "{report}"
    );

    let closed = testkit::free_port();
    let (code, report) = doctor(&[
        ("KUBECONFIG_PATH", kubeconfig_path().display().to_string()),
        ("K8S_API_SERVER", format!("https://127.0.0.1:{closed}")),
        ("K8S_API_TIMEOUT_SECONDS", "3".into()),
    ]);
    assert_eq!(code, 1);
    assert!(failed_checks(&report).contains("apiserver"), "{report}");
    assert!(
        report.contains("set K8S_API_SERVER=https://host.docker.internal:PORT"),
        "{report}"
    );

    let (code, report) = doctor(&[
        ("THREADS_HOST_PATH", "threads".into()),
        ("KUBECONFIG_PATH", "/nonexistent".into()),
    ]);
    assert_eq!(code, 1);
    assert!(
        report.contains("THREADS_HOST_PATH=\"threads\" is not an absolute path"),
        "{report}"
    );
}

/// An overlay of deploy/kubernetes that changes nothing but the namespace, as a user would
/// write it: everything, the RBAC included, must follow that one line.
fn overlay(namespace: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("overlay-{namespace}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kustomization = format!(
        "namespace: {namespace}\nresources:\n  - {base}\n",
        base = relative_to(&dir, &Path::new(ROOT).join("deploy/kubernetes"))
    );
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    dir
}

/// `target` as a path relative to `from` (kustomize accepts only relative bases).
fn relative_to(from: &Path, target: &Path) -> String {
    let (from, target) = (from.canonicalize().unwrap(), target.canonicalize().unwrap());
    let from: Vec<_> = from.components().collect();
    let target: Vec<_> = target.components().collect();
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        target[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .expect("kubectl is needed (scripts/local-cluster up installs it)");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Applies the shipped manifests with only their namespace changed and returns a kubeconfig
/// with exactly their ServiceAccount's token.
async fn apply_the_manifests(ns: &TestNamespace) -> std::path::PathBuf {
    let dir = overlay(&ns.name);
    let dir_arg = dir.display().to_string();
    let rendered = kubectl(&["kustomize", &dir_arg]);
    assert!(
        !rendered.contains("kind: ClusterRole"),
        "the manifests need no cluster-scoped RBAC:\n{rendered}"
    );
    let dry = kubectl(&["apply", "-k", &dir_arg, "--dry-run=server"]);
    for object in [
        "serviceaccount/sandbox-provisioner",
        "role.rbac.authorization.k8s.io/sandbox-provisioner",
        "rolebinding.rbac.authorization.k8s.io/sandbox-provisioner",
        "deployment.apps/sandbox-provisioner",
        "service/sandbox-provisioner",
    ] {
        assert!(
            dry.lines()
                .any(|l| l.starts_with(object) && l.ends_with("(server dry run)")),
            "{object} missing from the dry run:\n{dry}"
        );
    }
    kubectl(&["apply", "-k", &dir_arg]);
    std::fs::remove_dir_all(dir).unwrap();
    ns.kubeconfig_for_service_account("sandbox-provisioner")
        .await
}

#[tokio::test]
async fn the_shipped_role_runs_every_feature() {
    let ns = TestNamespace::new("deploy").await;
    let kubeconfig = apply_the_manifests(&ns).await;
    let mut args = serve_args(&ns.name);
    args.cluster.kubeconfig_path = kubeconfig.clone();
    args.security.sandbox_network_policy = "isolated".into();
    args.lifecycle.sandbox_activity_persist_interval = "1s".into();
    args.lifecycle.sandbox_leader_lease = "3s".into();
    args.lifecycle.sandbox_reap_interval = "1s".into();
    args.lifecycle.sandbox_orphan_grace = "1s".into();
    args.lifecycle.sandbox_max_lifetime = "1h".into();
    let svc = TestService::start(args).await;

    // Watches work: reads come from memory.
    svc.synced().await;
    let (code, created) = svc.create("dep-1", "t").await;
    assert_eq!(code, 200, "{created}");
    let ready = eventually(Duration::from_secs(30), "ready", || async {
        let (code, body) = svc.get("dep-1").await;
        (code == 200 && body["ready"] == true).then_some(body)
    })
    .await;
    assert_eq!(ready["sandbox_url"], created["sandbox_url"]);
    // Reads only: the GET may also write its activity (a patch), as it should.
    let reads = |calls: std::collections::BTreeMap<String, u64>| {
        calls
            .into_iter()
            .filter(|(call, _)| call.starts_with("get ") || call.starts_with("list "))
            .collect::<Vec<_>>()
    };
    let before = reads(svc.kube_calls().await);
    assert_eq!(svc.get("dep-1").await.0, 200);
    assert_eq!(svc.list().await.1["count"], 1);
    let (code, presence) = svc
        .call(Method::GET, "/api/sandboxes/dep-1/presence", None)
        .await;
    assert_eq!(
        (code, &presence["exists"]),
        (200, &json!(true)),
        "{presence}"
    );
    assert_eq!(presence["container_id"], created["container_id"]);
    assert_eq!(
        reads(svc.kube_calls().await),
        before,
        "reads went to the apiserver"
    );
    // A miss is confirmed with one read of the Pod, which the Role allows.
    let (code, absent) = svc
        .call(Method::GET, "/api/sandboxes/dep-none/presence", None)
        .await;
    assert_eq!((code, &absent["exists"]), (200, &json!(false)), "{absent}");

    // Activity is written to the pod within the persist interval.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, seen) = svc.get("dep-1").await;
    assert_eq!(code, 200, "{seen}");
    eventually(
        Duration::from_secs(5),
        "the activity annotation",
        || async {
            let pod = ns.pods().get("sandbox-dep-1").await.ok()?;
            pod.metadata
                .annotations?
                .contains_key(manifests::ACTIVITY_ANNOTATION)
                .then_some(())
        },
    )
    .await;

    // The leader Lease is taken.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(ns.client.clone(), &ns.name);
    eventually(Duration::from_secs(10), "a lease holder", || async {
        let lease = leases.get_opt(LEADER_LEASE).await.ok()??;
        lease.spec?.holder_identity.filter(|h| !h.is_empty())
    })
    .await;
    // The gauge follows at the reaper's next tick (every second here).
    eventually(Duration::from_secs(10), "this replica leads", || async {
        (svc.metric(LEADER).await == 1.0).then_some(())
    })
    .await;

    // Per-sandbox and baseline policies exist, and the sweep works from the watched copy.
    let policies: kube::Api<k8s_openapi::api::networking::v1::NetworkPolicy> =
        kube::Api::namespaced(ns.client.clone(), &ns.name);
    for name in ["sandbox-dep-1-netpol", "sandbox-provisioner-baseline"] {
        assert!(
            policies.get_opt(name).await.unwrap().is_some(),
            "{name} missing"
        );
    }
    // The sweep repairs orphans: a deleted Service and a deleted policy come back.
    let gone = kube::api::DeleteParams::default();
    ns.services()
        .delete("sandbox-dep-1-svc", &gone)
        .await
        .unwrap();
    policies
        .delete("sandbox-dep-1-netpol", &gone)
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "the sweep's repairs", || async {
        let service = ns.services().get_opt("sandbox-dep-1-svc").await.ok()??;
        let policy = policies.get_opt("sandbox-dep-1-netpol").await.ok()??;
        (service.metadata.deletion_timestamp.is_none()
            && policy.metadata.deletion_timestamp.is_none())
        .then_some(())
    })
    .await;
    let calls = svc.kube_calls().await;
    assert_eq!(
        calls.get("list networkpolicies").copied().unwrap_or(0),
        0,
        "the sweep lists policies instead of watching them: {calls:?}"
    );

    // The reaper removes an expired sandbox.
    let (code, short) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "dep-ttl", "thread_id": "t", "ttl_seconds": 2})),
        )
        .await;
    assert_eq!(code, 200, "{short}");
    eventually(Duration::from_secs(20), "the reaper", || async {
        let gone = ns.pods().get_opt("sandbox-dep-ttl").await.ok()?.is_none();
        let counted = svc
            .metric(r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="lifetime"}"#)
            .await
            >= 1.0;
        (gone && counted).then_some(())
    })
    .await;

    // Suspend and resume: the record is written, watched, taken and removed.
    let (code, suspended) = svc
        .call(Method::POST, "/api/sandboxes/dep-1/suspend", None)
        .await;
    assert_eq!(
        (code, &suspended["status"]),
        (200, &json!("Suspended")),
        "{suspended}"
    );
    let records: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(ns.client.clone(), &ns.name);
    assert!(records.get_opt("sandbox-dep-1").await.unwrap().is_some());
    assert!(ns.pods().get_opt("sandbox-dep-1").await.unwrap().is_none());
    let before = reads(svc.kube_calls().await);
    let (_, got) = svc.get("dep-1").await;
    assert_eq!(got["status"], "Suspended", "{got}");
    assert_eq!(
        reads(svc.kube_calls().await),
        before,
        "served from the watched records"
    );
    let (code, resumed) = svc
        .call(
            Method::POST,
            "/api/sandboxes/dep-1/resume?wait_ready=30",
            None,
        )
        .await;
    assert_eq!((code, &resumed["ready"]), (200, &json!(true)), "{resumed}");
    assert_ne!(resumed["container_id"], created["container_id"]);
    assert!(records.get_opt("sandbox-dep-1").await.unwrap().is_none());
    assert_eq!(
        svc.call(Method::POST, "/api/sandboxes/dep-1/suspend", None)
            .await
            .0,
        200
    );
    assert_eq!(svc.delete("dep-1").await.0, 200);
    assert!(records.get_opt("sandbox-dep-1").await.unwrap().is_none());

    // Nothing was refused along the way.
    let (code, readyz) = svc.call(Method::GET, "/readyz", None).await;
    assert_eq!(
        (code, &readyz["cache"]),
        (200, &json!("synced")),
        "{readyz}"
    );
    assert!(readyz.get("missing_permissions").is_none(), "{readyz}");
    assert!(
        !svc.metrics_text()
            .await
            .contains("kubernetes_forbidden_total{"),
        "a call was refused"
    );

    assert_eq!(svc.delete("dep-1").await.0, 200);
    assert_eq!(svc.get("dep-1").await.0, 404);
    let (code, report) = doctor(&[
        ("KUBECONFIG_PATH", kubeconfig.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("SKILLS_HOST_PATH", "/srv/skills".into()),
        ("THREADS_HOST_PATH", "/srv/threads".into()),
        ("SANDBOX_NETWORK_POLICY", "isolated".into()),
    ]);
    assert_eq!(code, 0, "doctor with the manifests' permissions:\n{report}");
    for verb in [
        "watch pods",
        "patch pods",
        "watch networkpolicies",
        "get namespaces",
    ] {
        assert!(
            report.contains(&format!("ok    rbac {verb}")),
            "{verb}:\n{report}"
        );
    }
}

#[test]
fn networkpolicy_component_renders() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("overlay-np-{}", testkit::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = relative_to(&dir, &Path::new(ROOT).join("deploy/kubernetes"));
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!("resources:\n  - {base}\ncomponents:\n  - {base}/networkpolicy\n"),
    )
    .unwrap();
    let rendered = kubectl(&["kustomize", &dir.display().to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
    assert!(
        rendered.contains("kind: NetworkPolicy") && rendered.contains("namespace: deer-flow"),
        "{rendered}"
    );
}

#[test]
fn gateway_component_renders_with_known_settings() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("overlay-gw-{}", testkit::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = relative_to(&dir, &Path::new(ROOT).join("deploy/kubernetes"));
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "resources:\n  - {base}\ncomponents:\n  - {base}/networkpolicy\n  - {base}/gateway\n  - {base}/apiserver-reach\n"
        ),
    )
    .unwrap();
    let rendered = kubectl(&["kustomize", &dir.display().to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
    let known: BTreeSet<String> = sandbox_provisioner::cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for name in [
        "SANDBOX_URL_MODE",
        "PROVISIONER_PUBLIC_URL",
        "PROVISIONER_GATEWAY_SECRET",
        "SANDBOX_SERVICE_TYPE",
        "SANDBOX_NETWORK_POLICY",
    ] {
        assert!(known.contains(name), "{name} is a setting");
        assert!(
            rendered.contains(&format!("name: {name}")),
            "{name}:\n{rendered}"
        );
    }
    assert!(
        rendered.contains("value: gateway")
            && rendered.contains("name: sandbox-provisioner-gateway")
    );
    // The apiserver-reach Role is bound to the provisioner's account in its namespace.
    assert!(
        rendered.contains("name: sandbox-provisioner-apiserver-reach")
            && rendered.contains("services/proxy"),
        "{rendered}"
    );
    // The provisioner may reach the sandboxes' port when its own egress is restricted.
    assert!(rendered.contains("app: deer-flow-sandbox"), "{rendered}");
}

#[test]
fn node_agent_component_renders_with_the_agents_own_settings() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("overlay-agent-{}", testkit::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = relative_to(&dir, &Path::new(ROOT).join("deploy/kubernetes"));
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!("resources:\n  - {base}\ncomponents:\n  - {base}/node-agent\n"),
    )
    .unwrap();
    let rendered = kubectl(&["kustomize", &dir.display().to_string()]);
    std::fs::remove_dir_all(dir).unwrap();
    let command = sandbox_provisioner::cli::Cli::command();
    let agent = command
        .find_subcommand("node-agent")
        .expect("the node-agent command");
    let known: BTreeSet<String> = agent
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for name in [
        "NODE_NAME",
        "K8S_NAMESPACE",
        "SANDBOX_WARM_POOL_SLOT_ROOT",
        "NODE_AGENT_ALLOWED_BASES",
    ] {
        assert!(known.contains(name), "{name} is a setting of the agent");
        assert!(
            rendered.contains(&format!("name: {name}")),
            "{name}:\n{rendered}"
        );
    }
    // In the sandboxes' namespace, bound to its own account, with the agent's command.
    assert!(
        rendered.contains("kind: DaemonSet")
            && rendered.contains("- node-agent")
            && rendered.contains("mountPropagation: Bidirectional")
            && rendered.contains("namespace: deer-flow")
            && rendered.contains("pods/status"),
        "{rendered}"
    );
}

#[test]
fn the_configuration_table_matches_help() {
    let from_help: BTreeSet<String> = sandbox_provisioner::cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).unwrap();
    let section = docs.split("\n## ").next().unwrap();
    let from_readme: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(String::from))
        .filter(|v| v != "RUST_LOG" && v != "LOG_FORMAT")
        .collect();
    assert_eq!(
        from_readme, from_help,
        "docs/configuration.md's table and --help disagree"
    );
}

/// Environment of a binary (or `doctor`) that uses every optional feature the manifests
/// support: leader election, NetworkPolicies and a claim for user data.
fn every_feature_env(ns: &TestNamespace, kubeconfig: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("KUBECONFIG_PATH", kubeconfig.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("NODE_HOST", "127.0.0.1".into()),
        ("SANDBOX_IMAGE", "sandbox:test".into()),
        ("USERDATA_PVC_NAME", "user-data".into()),
        ("SANDBOX_NETWORK_POLICY", "isolated".into()),
        ("SANDBOX_LEADER_LEASE", "3s".into()),
        ("SANDBOX_ACTIVITY_PERSIST_INTERVAL", "1s".into()),
        ("LOG_FORMAT", "json".into()),
        ("RUST_LOG", "warn".into()),
    ]
}

async fn create_claim(ns: &TestNamespace, name: &str) {
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    kube::Api::namespaced(ns.client.clone(), &ns.name)
        .create(&kube::api::PostParams::default(), &claim)
        .await
        .unwrap();
}

/// Makes a running service use every permission of the table at least once: readiness, a
/// create (twice, so that the existing objects are read back), a read the cache does not
/// have, activity recorded on the pod, a delete (the election runs meanwhile).
async fn use_every_permission(base: &str) {
    let http = reqwest::Client::new();
    let call = |method: Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        TestService::answer(req)
    };
    call(Method::GET, "/readyz", None).await;
    for _ in 0..2 {
        let body = json!({"sandbox_id": "every-1", "thread_id": "t"});
        call(Method::POST, "/api/sandboxes", Some(body)).await;
    }
    call(Method::GET, "/api/sandboxes/not-there", None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call(Method::GET, "/api/sandboxes/every-1", None).await;
    // Suspend (create the record), resume (patch, read and delete it), suspend again and
    // delete the suspended sandbox (delete the record).
    for action in ["suspend", "resume", "suspend"] {
        call(
            Method::POST,
            &format!("/api/sandboxes/every-1/{action}"),
            None,
        )
        .await;
    }
    call(Method::DELETE, "/api/sandboxes/every-1", None).await;
}

/// The permissions `/readyz` reports missing, or for a 503 its detail.
async fn readyz_missing(base: &str) -> (u16, Vec<String>, String) {
    let (code, body) =
        TestService::answer(reqwest::Client::new().get(format!("{base}/readyz"))).await;
    let missing = body["missing_permissions"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|p| p["permission"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (
        code,
        missing,
        body["detail"].as_str().unwrap_or_default().to_string(),
    )
}

/// One verb of the table removed from the Role: `doctor` names exactly it, and the running
/// service reports it (on `/readyz`, and in its log with the fix).
async fn without_one_permission(permission: &'static Permission) {
    let features = Features::SHIPPED;
    let ns = TestNamespace::new("rbac-less").await;
    create_claim(&ns, "user-data").await;
    let rules: Vec<Value> = permissions::needed(features)
        .filter(|p| *p != permission)
        .map(|p| json!({"apiGroups": [p.group], "resources": [p.resource], "verbs": [p.verb]}))
        .collect();
    let kubeconfig = ns
        .service_account_kubeconfig("less", Value::Array(rules))
        .await;
    let env = every_feature_env(&ns, &kubeconfig);
    let label = permission.label();

    let (code, report) = doctor(&env);
    assert_eq!(code, 1, "without {label}:\n{report}");
    let failed = failed_checks(&report);
    let rbac: BTreeSet<&String> = failed.iter().filter(|c| c.starts_with("rbac ")).collect();
    assert_eq!(
        rbac,
        BTreeSet::from([&format!("rbac {label}")]),
        "without {label}:\n{report}"
    );
    // Checks that need the permission fail too; nothing else does.
    let dependent = ["namespace", "volume claim", "node ports"];
    assert!(
        failed
            .iter()
            .all(|c| c.starts_with("rbac ") || dependent.contains(&c.as_str())),
        "without {label}:\n{report}"
    );
    assert!(
        report.contains(&format!(
            "add verb {} on {}",
            permission.verb, permission.resource
        )),
        "without {label}:\n{report}"
    );

    let mut running = RunningBinary::start(&env).await;
    use_every_permission(&running.base).await;
    if (permission.verb, permission.resource) == ("get", "pods") {
        // A refused read never says "absent".
        let presence = reqwest::Client::new()
            .get(format!("{}/api/sandboxes/not-there/presence", running.base));
        let (code, body) = TestService::answer(presence).await;
        assert_eq!(code, 502, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("forbidden"),
            "{body}"
        );
    }
    let refusal = format!(
        "cannot {} resource \"{}\"",
        permission.verb, permission.resource
    );
    let (code, missing, detail) =
        eventually(Duration::from_secs(15), "/readyz to name it", || async {
            let (code, missing, detail) = readyz_missing(&running.base).await;
            (missing.contains(&label) || (code == 503 && detail.contains(&refusal)))
                .then_some((code, missing, detail))
        })
        .await;
    assert!(
        missing.iter().all(|m| *m == label),
        "without {label}, /readyz ({code}) also names {missing:?}: {detail}"
    );
    running.sigterm();
    let (_, log) = running.wait_exit(Duration::from_secs(15)).await;
    let named = log.lines().any(|l| {
        let line: Value = serde_json::from_str(l).unwrap_or_default();
        line["level"] == "ERROR"
            && line["fields"]["permission"] == label.as_str()
            && line["fields"]["fix"]
                .as_str()
                .is_some_and(|f| f.contains("deploy/kubernetes/role.yaml"))
    });
    assert!(named, "without {label}, the log does not name it:\n{log}");
}

#[tokio::test]
async fn each_missing_permission_is_named_by_doctor_and_the_service() {
    use futures::StreamExt;
    let runs = permissions::needed(Features::SHIPPED).map(without_one_permission);
    futures::stream::iter(runs)
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn a_missing_permission_is_logged_once_not_every_round() {
    let ns = TestNamespace::new("rbac-log").await;
    create_claim(&ns, "user-data").await;
    let lacking = [("watch", "pods"), ("patch", "pods"), ("update", "leases")];
    let rules: Vec<Value> = permissions::needed(Features::SHIPPED)
        .filter(|p| !lacking.contains(&(p.verb, p.resource)))
        .map(|p| json!({"apiGroups": [p.group], "resources": [p.resource], "verbs": [p.verb]}))
        .collect();
    let kubeconfig = ns
        .service_account_kubeconfig("lacking", Value::Array(rules))
        .await;
    let mut running = RunningBinary::start(&every_feature_env(&ns, &kubeconfig)).await;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/sandboxes", running.base))
        .json(&json!({"sandbox_id": "log-1", "thread_id": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // 12 s of what a backend and a kubelet do: reads (each due an activity write) and probes.
    let until = std::time::Instant::now() + Duration::from_secs(12);
    while std::time::Instant::now() < until {
        for path in ["/api/sandboxes/log-1", "/api/sandboxes", "/readyz"] {
            let answer = http
                .get(format!("{}{path}", running.base))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{path}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Rounds of the reaper and the election ran meanwhile (each would log a refusal again).
    testkit::reaper_rounds(&running.base, 3).await;
    let (_, missing, _) = readyz_missing(&running.base).await;
    assert_eq!(missing, ["patch pods", "update leases", "watch pods"]);
    running.sigterm();
    let (_, log) = running.wait_exit(Duration::from_secs(15)).await;
    // A line repeats when the same message comes again about the same thing (a request's
    // own lines are about that request).
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for line in log.lines() {
        let line: Value = serde_json::from_str(line).unwrap_or_default();
        if line["level"] != "WARN" && line["level"] != "ERROR" {
            continue;
        }
        let fields = &line["fields"];
        let key = format!(
            "{} {} permission={} kind={} sandbox={} request={}",
            line["level"],
            fields["message"],
            fields["permission"],
            fields["kind"],
            fields["sandbox_id"],
            line["span"]["request_id"],
        );
        *seen.entry(key).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "repeated within 12 s: {repeated:#?}\n{log}"
    );
    for (verb, resource) in lacking {
        assert!(
            seen.keys().any(|k| k.starts_with("\"ERROR\"")
                && k.contains(&format!("permission=\"{verb} {resource}\""))),
            "{verb} {resource} not logged at ERROR: {seen:#?}"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let root = Path::new(ROOT);
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let link = regex_lite_links();
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
                continue;
            }
            if !fragment.is_empty() {
                let body = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&body).contains(fragment) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: the parser is broken"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Markdown link targets `[text](target)` outside code blocks and inline code.
fn regex_lite_links() -> impl Fn(&str) -> Vec<String> {
    |text: &str| {
        let mut targets = Vec::new();
        let mut in_code = false;
        for line in text.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                continue;
            }
            // Drop inline code, where brackets are not links.
            let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
            let mut rest = plain.as_str();
            while let Some(start) = rest.find("](") {
                let after = &rest[start + 2..];
                match after.find(')') {
                    Some(end) => {
                        targets.push(after[..end].to_string());
                        rest = &after[end..];
                    }
                    None => break,
                }
            }
        }
        targets
    }
}

/// The images a node reports.
async fn node_images(client: &kube::Client) -> Vec<String> {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    nodes
        .get("local-node")
        .await
        .unwrap()
        .status
        .and_then(|s| s.images)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.names.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_prepull_component_puts_the_sandbox_image_on_the_nodes_and_doctor_sees_it() {
    let ns = TestNamespace::new("prepull").await;
    // An image no node has yet, that takes 5 s to pull.
    let (name, tag) = (
        format!("prepull-{}", testkit::random_suffix()),
        "sim-pull-5000",
    );
    let image = format!("{name}:{tag}");
    let doctor_env = || ns.binary_env([("SANDBOX_IMAGE", image.clone())]);
    let (code, before) = doctor(&doctor_env());
    assert_eq!(code, 0, "a missing image is a warning:\n{before}");
    let line = before
        .lines()
        .find(|l| l.contains("images on nodes"))
        .unwrap_or_else(|| panic!("no image check:\n{before}"));
    assert!(
        line.starts_with("warn") && line.contains("local-node (lacks") && line.contains(&image),
        "{before}"
    );
    assert!(before.contains("deploy/kubernetes/prepull"), "{before}");

    // The component as a user adds it: the image set with kustomize, names made unique per
    // installation for its cluster-wide RBAC.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prepull-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "namespace: {ns}\nnameSuffix: -{ns}\nresources:\n  - {base}\ncomponents:\n  - {component}\nimages:\n  - name: enterprise-public-cn-beijing.cr.volces.com/vefaas-public/all-in-one-sandbox\n    newName: {name}\n    newTag: {tag}\n",
            ns = ns.name,
            base = relative_to(&dir, &Path::new(ROOT).join("deploy/kubernetes")),
            component = relative_to(&dir, &Path::new(ROOT).join("deploy/kubernetes/prepull")),
        ),
    )
    .unwrap();
    let dir_arg = dir.display().to_string();
    kubectl(&["apply", "-k", &dir_arg]);
    // The DaemonSet controller makes one pod per node; the simulator pulls the image for its
    // init container and records it on the node.
    let daemonsets: kube::Api<k8s_openapi::api::apps::v1::DaemonSet> =
        kube::Api::namespaced(ns.client.clone(), &ns.name);
    let ds_name = format!("sandbox-image-prepull-{}", ns.name);
    eventually(
        Duration::from_secs(60),
        "the pre-pull pod to be ready",
        || async {
            let ds = daemonsets.get(&ds_name).await.ok()?;
            let status = ds.status?;
            (status.desired_number_scheduled >= 1
                && status.number_ready == status.desired_number_scheduled)
                .then_some(())
        },
    )
    .await;
    // The node's image list is written beside the pod's status (a kubelet refreshes it
    // every few seconds), so it may trail the pod by a moment.
    let reported = format!("docker.io/library/{image}");
    eventually(
        Duration::from_secs(15),
        "the node to list the image",
        || async {
            node_images(&ns.client)
                .await
                .contains(&reported)
                .then_some(())
        },
    )
    .await;
    let pods = ns
        .pods()
        .list(
            &kube::api::ListParams::default()
                .labels("app.kubernetes.io/name=sandbox-image-prepull"),
        )
        .await
        .unwrap()
        .items;
    let spec = pods[0].spec.as_ref().unwrap();
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].image.as_deref(),
        Some(image.as_str())
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    let (code, after) = doctor(&doctor_env());
    assert_eq!(code, 0, "{after}");
    // With the provisioner's own ServiceAccount, the component's ClusterRole lets it look.
    let kubeconfig = ns
        .kubeconfig_for_service_account(&format!("sandbox-provisioner-{}", ns.name))
        .await;
    let (_, as_provisioner) = doctor(&[
        ("KUBECONFIG_PATH", kubeconfig.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("SANDBOX_IMAGE", image.clone()),
    ]);
    assert!(
        as_provisioner
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("images on nodes")),
        "{as_provisioner}"
    );
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("images on nodes") && l.contains("have")),
        "{after}"
    );
    // A sandbox of that image now starts without the pull: it boots at once and is Ready
    // well inside the 5 s a pull would take.
    let mut args = serve_args(&ns.name);
    args.sandbox.sandbox_image = image.clone();
    let svc = TestService::start(args).await;
    let started = std::time::Instant::now();
    let (code, body) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "warm-1", "thread_id": "t", "wait_ready_seconds": 30})),
        )
        .await;
    assert_eq!((code, &body["ready"]), (200, &json!(true)), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    kubectl(&["delete", "-k", &dir_arg, "--wait=false"]);
    std::fs::remove_dir_all(dir).unwrap();
}
