//! Operations: metrics (checked by promtool), request ids and JSON logs, `doctor` against the
//! real apiserver with full and partial permissions, and the deployment manifests (server-side
//! dry run, and a real run of the API with exactly their Role).

mod common;

use std::{collections::BTreeSet, path::Path, process::Command, time::Duration};

use clap::CommandFactory;
use common::{eventually, kubeconfig_path, serve_args, RunningBinary, TestNamespace, TestService};
use reqwest::Method;
use serde_json::{json, Value};

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
        before_delete.contains(r#"sandbox_provisioner_sandboxes{status="Running"} 1"#),
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
        "sandbox_provisioner_sandbox_create_duration_seconds_count 1",
        "sandbox_provisioner_sandbox_time_to_ready_seconds_count 1",
        r#"sandbox_provisioner_sandboxes{status="Running"} 0"#,
        r#"sandbox_provisioner_sandbox_deletions_total{reason="api"} 1"#,
        r#"sandbox_provisioner_sandbox_deletions_total{reason="lifetime"} 0"#,
        r#"sandbox_provisioner_kubernetes_requests_total{verb="create",resource="pods"} 1"#,
        r#"sandbox_provisioner_kubernetes_requests_total{verb="create",resource="services"} 1"#,
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
    let mut running = RunningBinary::start(&[
        ("KUBECONFIG_PATH", kubeconfig_path().display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("LOG_FORMAT", "json".into()),
    ])
    .await;
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
    let (code, report) = doctor(&[
        ("KUBECONFIG_PATH", kubeconfig_path().display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("SKILLS_HOST_PATH", "/srv/skills".into()),
        ("THREADS_HOST_PATH", "/srv/threads".into()),
    ]);
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
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create", "get", "delete"]},
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
    let dir = std::env::temp_dir().join(format!("kubeconfig-dir-{}", common::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, report) = doctor(&[("KUBECONFIG_PATH", dir.display().to_string())]);
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(code, 1);
    assert!(
        failed_checks(&report).contains("kubeconfig") && report.contains("is a directory"),
        "{report}"
    );

    let closed = common::free_port();
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

/// An overlay of deploy/kubernetes that puts everything into `namespace` and renames the
/// cluster-scoped objects after it, so that a test can apply it without touching anything else.
fn overlay(namespace: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("overlay-{namespace}"));
    std::fs::create_dir_all(&dir).unwrap();
    let kustomization = format!(
        r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {namespace}
resources:
  - {base}
patches:
  - target: {{kind: Namespace, name: deer-flow}}
    patch: |-
      - op: replace
        path: /metadata/name
        value: {namespace}
  - target: {{kind: ClusterRole}}
    patch: |-
      - op: replace
        path: /metadata/name
        value: {namespace}-deploy
      - op: replace
        path: /rules/0/resourceNames/0
        value: {namespace}
  - target: {{kind: ClusterRoleBinding}}
    patch: |-
      - op: replace
        path: /metadata/name
        value: {namespace}-deploy
      - op: replace
        path: /roleRef/name
        value: {namespace}-deploy
      - op: replace
        path: /subjects/0/namespace
        value: {namespace}
"#,
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

#[tokio::test]
async fn manifests_apply_and_their_role_is_enough() {
    let ns = TestNamespace::new("deploy").await;
    let dir = overlay(&ns.name);
    let dir_arg = dir.display().to_string();
    let dry = kubectl(&["apply", "-k", &dir_arg, "--dry-run=server"]);
    for object in [
        "serviceaccount/sandbox-provisioner",
        "role.rbac.authorization.k8s.io/sandbox-provisioner",
        "rolebinding.rbac.authorization.k8s.io/sandbox-provisioner",
        "clusterrole.rbac.authorization.k8s.io/",
        "clusterrolebinding.rbac.authorization.k8s.io/",
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

    // The service with exactly the manifests' permissions: every API call works.
    let kubeconfig = ns
        .kubeconfig_for_service_account("sandbox-provisioner")
        .await;
    let mut args = serve_args(&ns.name);
    args.kubeconfig_path = kubeconfig.clone();
    let svc = TestService::start(args).await;
    let (code, ready) = svc.call(Method::GET, "/readyz", None).await;
    assert_eq!(code, 200, "{ready}");
    let (code, created) = svc.create("dep-1", "t").await;
    assert_eq!(code, 200, "{created}");
    let ready = eventually(Duration::from_secs(30), "ready", || async {
        let (code, body) = svc.get("dep-1").await;
        (code == 200 && body["ready"] == true).then_some(body)
    })
    .await;
    assert_eq!(ready["sandbox_url"], created["sandbox_url"]);
    assert_eq!(svc.list().await.1["count"], 1);
    assert_eq!(svc.delete("dep-1").await.0, 200);
    assert_eq!(svc.get("dep-1").await.0, 404);
    let (code, report) = doctor(&[
        ("KUBECONFIG_PATH", kubeconfig.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("SKILLS_HOST_PATH", "/srv/skills".into()),
        ("THREADS_HOST_PATH", "/srv/threads".into()),
    ]);
    assert_eq!(code, 0, "doctor with the manifests' permissions:\n{report}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn networkpolicy_component_renders() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("overlay-np-{}", common::random_suffix()));
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
fn readme_configuration_table_matches_help() {
    let from_help: BTreeSet<String> = sandbox_provisioner::cli::Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let section = readme
        .split("## Configuration")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let from_readme: BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(String::from))
        .filter(|v| v != "RUST_LOG" && v != "LOG_FORMAT")
        .collect();
    assert_eq!(
        from_readme, from_help,
        "README's configuration table and --help disagree"
    );
}
