//! The binary as an operator meets it: bad settings stop it with a message naming the variable,
//! a good start serves until SIGTERM, and the API server override keeps TLS verification on.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use reqwest::Method;
use testkit::{eventually, kubeconfig_path, serve_args, RunningBinary, TestNamespace, TestService};

fn provisioner() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary to its (expected early) exit and returns the code and stderr.
fn run_to_exit(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("running the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn relative_or_climbing_host_paths_stop_the_service() {
    let (code, err) = run_to_exit(provisioner().env("SKILLS_HOST_PATH", "skills"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("SKILLS_HOST_PATH") && err.contains("absolute"),
        "{err}"
    );
    let (code, err) = run_to_exit(provisioner().env("THREADS_HOST_PATH", "/srv/../etc"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("THREADS_HOST_PATH") && err.contains(".."),
        "{err}"
    );
}

#[test]
fn a_kubeconfig_directory_stops_the_service_and_says_why() {
    let dir = std::env::temp_dir().join(format!("kubeconfig-dir-{}", testkit::random_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, err) = run_to_exit(
        provisioner()
            .env("KUBECONFIG_PATH", &dir)
            .env("PROVISIONER_LISTEN", "127.0.0.1:0"),
    );
    std::fs::remove_dir(&dir).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is a directory") && err.contains("KUBECONFIG_PATH"),
        "{err}"
    );
}

#[test]
fn help_names_every_setting() {
    let out = Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "PROVISIONER_LISTEN",
        "K8S_NAMESPACE",
        "SANDBOX_IMAGE",
        "SKILLS_HOST_PATH",
        "THREADS_HOST_PATH",
        "KUBECONFIG_PATH",
        "NODE_HOST",
        "K8S_API_SERVER",
        "K8S_INSECURE_SKIP_TLS_VERIFY",
        "K8S_API_TIMEOUT_SECONDS",
    ] {
        assert!(help.contains(var), "--help lacks {var}:\n{help}");
    }
}

#[tokio::test]
async fn missing_kubeconfig_path_falls_back_to_kubeconfig_and_stops_on_sigterm() {
    let ns = TestNamespace::uncreated("fallback").await;
    let mut running = RunningBinary::start(&[
        ("KUBECONFIG_PATH", "/nonexistent/kubeconfig".into()),
        ("KUBECONFIG", kubeconfig_path().display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("NODE_HOST", "127.0.0.1".into()),
    ])
    .await;
    let list = reqwest::get(format!("{}/api/sandboxes", running.base))
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    running.sigterm();
    let (status, log) = running.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        log.contains("KUBECONFIG="),
        "the log names the configuration source:\n{log}"
    );
    assert!(log.contains("namespace created"), "{log}");
}

/// A copy of the local kubeconfig whose server is `https://{host}:{port}`.
fn kubeconfig_with_server(host: &str) -> (PathBuf, u16) {
    let original = std::fs::read_to_string(kubeconfig_path()).unwrap();
    let mut port = 0;
    let rewritten: String = original
        .lines()
        .map(
            |line| match line.trim_start().strip_prefix("server: https://127.0.0.1:") {
                Some(p) => {
                    port = p.trim().parse().unwrap();
                    format!("    server: https://{host}:{port}")
                }
                None => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(port, 0, "the local kubeconfig names https://127.0.0.1:PORT");
    let path = std::env::temp_dir().join(format!("kubeconfig-{host}-{}", testkit::random_suffix()));
    std::fs::write(&path, rewritten).unwrap();
    (path, port)
}

async fn override_service(kubeconfig: &Path, server: String, insecure: bool) -> TestService {
    let ns = TestNamespace::uncreated("override").await;
    let mut args = serve_args(&ns.name);
    args.cluster.kubeconfig_path = kubeconfig.to_path_buf();
    args.cluster.k8s_api_server = Some(server);
    args.cluster.k8s_insecure_skip_tls_verify = insecure;
    TestService::start(args).await
}

async fn list_status(
    kubeconfig: &Path,
    server: String,
    insecure: bool,
) -> (u16, serde_json::Value) {
    let svc = override_service(kubeconfig, server, insecure).await;
    svc.call(Method::GET, "/api/sandboxes", None).await
}

/// A LIST that fails for the certificate names it, as a 503.
fn assert_names_the_certificate(code: u16, body: &serde_json::Value) {
    assert_eq!(code, 503, "{body}");
    let detail = body["detail"].as_str().unwrap().to_lowercase();
    assert!(detail.contains("certificate"), "{detail}");
}

#[tokio::test]
async fn api_server_override_verifies_against_the_kubeconfig_host_name() {
    // The certificate names "kubernetes" (and 127.0.0.1). The kubeconfig says "kubernetes",
    // which does not resolve here; the override connects to 127.0.0.1 and still verifies.
    let (path, port) = kubeconfig_with_server("kubernetes");
    let (code, body) = list_status(&path, format!("https://127.0.0.1:{port}"), false).await;
    assert_eq!(code, 200, "{body}");

    // Control: a kubeconfig host the certificate does not name fails verification, which shows
    // that the original name (not the override's 127.0.0.1) is what is verified.
    let (wrong, port) = kubeconfig_with_server("not-in-the-certificate.invalid");
    // The cause is named both when the LIST's own call fails and once the reachability probe
    // has marked the cluster unreachable (then the LIST answers with the probe's reason).
    let svc = override_service(&wrong, format!("https://127.0.0.1:{port}"), false).await;
    let (code, body) = svc.call(Method::GET, "/api/sandboxes", None).await;
    assert_names_the_certificate(code, &body);
    eventually(
        Duration::from_secs(10),
        "the probe to mark the cluster unreachable",
        || async {
            let (_, caps) = svc.call(Method::GET, "/api/capabilities", None).await;
            (caps["clusters"][0]["reachable"] == false).then_some(())
        },
    )
    .await;
    let (code, body) = svc.call(Method::GET, "/api/sandboxes", None).await;
    assert_names_the_certificate(code, &body);

    // Only the explicit setting turns verification off.
    let (code, body) = list_status(&wrong, format!("https://127.0.0.1:{port}"), true).await;
    assert_eq!(code, 200, "{body}");
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(wrong).unwrap();
}
