//! The first local cluster's real node (`scripts/real-node`: kubelet + containerd), which
//! `scripts/local-cluster up` starts where the machine can run it, and the settings that put a
//! sandbox there.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use sandbox_provisioner::config::ServeArgs;

use crate::{client, eventually, kubeconfig_path, serve_args};

pub const REAL_NODE: &str = "real-node";
/// The image `scripts/build-sandbox-image` imports into the node's containerd.
pub const REAL_NODE_IMAGE: &str = "sandbox-provisioner.local/sandbox-image:dev";
/// The host's address on the node's bridge, where kube-proxy serves node ports.
pub const REAL_NODE_ADDRESS: &str = "198.19.0.1";

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether the real node runs. When `scripts/local-cluster up` found that this machine cannot
/// run it (not root, no cgroups), it wrote why, and this says so and answers false; otherwise
/// the node must be Ready, and a test fails if it is not.
pub async fn real_node_running() -> bool {
    let marker = kubeconfig_path()
        .parent()
        .expect("the kubeconfig's directory")
        .join("REAL_NODE_UNAVAILABLE");
    if let Ok(why) = std::fs::read_to_string(&marker) {
        eprintln!(
            "no real node on this machine ({}): test skipped",
            why.trim()
        );
        return false;
    }
    let nodes: Api<Node> = Api::all(client().await);
    eventually(
        Duration::from_secs(60),
        "node real-node Ready (start it with scripts/local-cluster up, or scripts/real-node up)",
        || async {
            let node = nodes.get_opt(REAL_NODE).await.ok().flatten()?;
            let conditions = node.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        },
    )
    .await;
    true
}

/// The pod template that puts sandboxes on the real node, as shipped.
pub fn real_node_pod_template() -> PathBuf {
    repo_root().join("deploy/examples/local-real-node.yaml")
}

/// `deploy/examples/{name}` with the real node's placement (its `spec` up to `containers`)
/// added to its `spec`.
pub fn real_node_pod_template_with(name: &str, into: &std::path::Path) -> PathBuf {
    let template = std::fs::read_to_string(real_node_pod_template()).unwrap();
    let spec = &template[template.find("\nspec:\n").expect("a spec") + 7..];
    let placement = &spec[..spec.find("  containers:\n").unwrap_or(spec.len())];
    let other = std::fs::read_to_string(repo_root().join("deploy/examples").join(name)).unwrap();
    let merged = other.replacen("\nspec:\n", &format!("\nspec:\n{placement}"), 1);
    let path = into.join(format!("real-node-{name}"));
    std::fs::write(&path, merged).unwrap();
    path
}

/// The service's flags for sandboxes on the real node: the image built here, the placement
/// template, node ports on the node's bridge address, host paths below `host_dir`.
pub fn real_node_serve_args(namespace: &str, host_dir: &std::path::Path) -> ServeArgs {
    let mut args = serve_args(namespace);
    args.sandbox.sandbox_image = REAL_NODE_IMAGE.into();
    args.sandbox.sandbox_pod_template = Some(real_node_pod_template());
    args.sandbox.node_host = REAL_NODE_ADDRESS.into();
    for dir in ["skills", "threads"] {
        std::fs::create_dir_all(host_dir.join(dir)).unwrap();
    }
    args.storage.skills_host_path = Some(host_dir.join("skills").display().to_string());
    args.storage.threads_host_path = Some(host_dir.join("threads").display().to_string());
    args.storage.deer_flow_host_base_dir = Some(host_dir.display().to_string());
    args
}

/// The gateway secret of the tests' services.
pub const GATEWAY_TEST_SECRET: &str = "test-gateway-secret-0123456789abcdef";

/// [`real_node_serve_args`] in gateway mode on a free port of 127.0.0.1, which is also the
/// public URL: no Service per sandbox, activity persisted every second.
pub fn real_node_gateway_args(namespace: &str, host_dir: &std::path::Path) -> ServeArgs {
    let mut args = real_node_serve_args(namespace, host_dir);
    gateway_mode(&mut args);
    args.sandbox.sandbox_service_type = "None".into();
    args.lifecycle.sandbox_activity_persist_interval = "1s".into();
    args
}

/// Turns `args` to gateway mode on a free port of 127.0.0.1, which is also the public URL,
/// with [`GATEWAY_TEST_SECRET`].
pub fn gateway_mode(args: &mut ServeArgs) {
    let port = crate::free_port();
    args.http.listen = format!("127.0.0.1:{port}");
    args.gateway.sandbox_url_mode = "gateway".into();
    args.gateway.public_url = Some(format!("http://127.0.0.1:{port}"));
    args.gateway.gateway_secret = Some(GATEWAY_TEST_SECRET.into());
}

/// The containers the real node's containerd holds (`ctr containers ls`), by ID.
pub fn real_node_containers() -> Vec<String> {
    let socket = real_node_state().join("containerd/sock");
    let out = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["-n", "k8s.io", "containers", "ls", "-q"])
        .output()
        .expect("running ctr");
    assert!(
        out.status.success(),
        "ctr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The real node's state directory (`scripts/real-node`).
pub fn real_node_state() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".local/state"))
        .join("sandbox-provisioner/real-node")
}

/// Where the real node's agent keeps the pool Pods' slots.
pub fn real_node_slot_root() -> PathBuf {
    real_node_state().join("slots")
}

/// Turns on warm pools (`pools` as SANDBOX_WARM_POOL) with the real node's slot root. The
/// default size asks for a hundredth of a core: the real node has two cores of requests for
/// every test running at once, and pools keep Pods that would otherwise not exist.
pub fn warm_pool_mode(args: &mut ServeArgs, pools: &str) {
    args.sizes.sandbox_sizes = Some(
        r#"{"default": {"requests": {"cpu": "10m", "memory": "64Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"}}}"#
            .into(),
    );
    args.warm_pool.sandbox_warm_pool = Some(pools.into());
    args.warm_pool.sandbox_warm_pool_slot_root = real_node_slot_root().display().to_string();
}

/// Stops the real node's agent (`scripts/real-node` starts it) and waits until it is gone.
pub fn stop_node_agent() {
    let pid = std::fs::read_to_string(real_node_state().join("node-agent.pid"))
        .expect("the node agent's pid file");
    let status = std::process::Command::new("kill")
        .arg(pid.trim())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {pid}");
    // Gone, or a zombie waiting for whoever started it.
    let status = PathBuf::from(format!("/proc/{}/status", pid.trim()));
    let alive = || {
        std::fs::read_to_string(&status).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Starts the real node's agent again (`scripts/real-node agent`).
pub fn start_node_agent() {
    let status = std::process::Command::new(repo_root().join("scripts/real-node"))
        .arg("agent")
        .current_dir(repo_root())
        .status()
        .expect("running scripts/real-node agent");
    assert!(status.success(), "scripts/real-node agent failed");
}
