//! Sandboxes on the real node (kubelet + containerd, `scripts/real-node`): what only a running
//! container shows. Skipped, with the reason printed, only where `scripts/local-cluster up`
//! found that the machine cannot run that node.

use std::{os::unix::fs::PermissionsExt, path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::{Pod, Service};
use reqwest::Method;
use serde_json::{json, Value};
use testkit::{
    eventually, json_answer, real_node_containers, real_node_pod_template_with, real_node_running,
    real_node_serve_args, TestNamespace, TestService, REAL_NODE,
};

/// Host directories of one test (threads, skills, extra mounts), removed at the end.
pub(crate) struct HostDir(pub PathBuf);

impl HostDir {
    pub(crate) fn new(ns: &TestNamespace) -> HostDir {
        let dir = std::env::temp_dir().join(format!("sandbox-provisioner-{}", ns.name));
        std::fs::create_dir_all(&dir).unwrap();
        HostDir(dir)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a sandbox and waits (up to 90 s) until it is ready and its URL answers.
async fn create_ready(service: &TestService, body: Value) -> Value {
    let answer = create_until_ready(service, body).await;
    until_answering(&http_client(), &answer).await;
    answer
}

/// Creates a sandbox and waits (up to 90 s) until the service says it is ready.
async fn create_until_ready(service: &TestService, body: Value) -> Value {
    let mut body = body;
    body["wait_ready_seconds"] = json!(90);
    let (status, answer) = service
        .call(Method::POST, "/api/sandboxes", Some(body))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], true, "{answer}");
    answer
}

/// Waits until the sandbox's URL answers: kube-proxy programs the route a moment after the pod
/// turns ready (which is why DeerFlow's gateway polls the URL as well).
pub(crate) async fn until_answering(http: &reqwest::Client, answer: &Value) {
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(30),
        "the sandbox URL to answer",
        || async {
            let r = http.get(format!("{url}/v1/ping")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
}

/// A client whose every call ends (a lost route must fail a test, not hang it).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Runs a command through the sandbox's own API; returns its output and exit code.
pub(crate) async fn exec(
    http: &reqwest::Client,
    sandbox_url: &str,
    command: &str,
) -> (String, i64) {
    let answer = json_answer(
        http.post(format!("{sandbox_url}/v1/shell/exec"))
            .json(&json!({"command": command})),
    )
    .await;
    let data = &answer["data"];
    (
        data["output"].as_str().unwrap_or_default().to_string(),
        data["exit_code"].as_i64().unwrap_or(-1),
    )
}

/// The sandbox's pod, which must be on the real node and run by containerd.
async fn pod_on_the_real_node(ns: &TestNamespace, sandbox_id: &str) -> Pod {
    let pod = ns
        .pods()
        .get(&format!("sandbox-{sandbox_id}"))
        .await
        .unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(REAL_NODE));
    let status = pod.status.as_ref().unwrap();
    let container_id = status.container_statuses.as_ref().unwrap()[0]
        .container_id
        .clone()
        .unwrap_or_default();
    assert!(container_id.starts_with("containerd://"), "{container_id}");
    pod
}

/// The bits of a capability set as the kernel prints it in /proc/*/status.
fn capability_bits(names: &str) -> u64 {
    const NUMBERS: [(&str, u32); 12] = [
        ("CHOWN", 0),
        ("DAC_OVERRIDE", 1),
        ("DAC_READ_SEARCH", 2),
        ("FOWNER", 3),
        ("FSETID", 4),
        ("KILL", 5),
        ("SETGID", 6),
        ("SETUID", 7),
        ("SETPCAP", 8),
        ("NET_BIND_SERVICE", 10),
        ("NET_RAW", 13),
        ("SYS_CHROOT", 18),
    ];
    names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            let (_, bit) = NUMBERS
                .iter()
                .find(|(name, _)| *name == n)
                .unwrap_or_else(|| panic!("capability {n} not in the table"));
            1u64 << bit
        })
        .sum()
}

/// A `Key:\tvalue` line of a /proc status text.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
}

#[tokio::test]
async fn a_sandbox_on_the_real_node_is_ready_through_its_probes_and_runs_commands_hardened() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("real-node").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_serve_args(&ns.name, &host.0);
    args.sizes.sandbox_sizes = Some(
        json!({"small": {"requests": {"cpu": "100m", "memory": "64Mi"},
                         "limits": {"cpu": "500m", "memory": "320Mi"}}})
        .to_string(),
    );
    let capabilities = args.security.sandbox_capabilities_add.clone();
    let service = TestService::start(args).await;
    let answer = create_ready(
        &service,
        json!({"sandbox_id": "rn-1", "thread_id": "t-1", "size": "small"}),
    )
    .await;
    let pod = pod_on_the_real_node(&ns, "rn-1").await;
    // Ready came from the kubelet's probes of the real server.
    let conditions = pod.status.as_ref().unwrap().conditions.clone().unwrap();
    assert!(conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
    let url = answer["sandbox_url"].as_str().unwrap();
    assert!(url.starts_with("http://198.19.0.1:"), "{url}");
    let http = http_client();

    // The node port, through kube-proxy.
    let context = json_answer(http.get(format!("{url}/v1/sandbox"))).await;
    assert_eq!(context["home_dir"], "/home/gem", "{context}");
    let identity = json_answer(http.get(format!("{url}/test/identity"))).await;
    assert_eq!(
        identity["data"]["pod_uid"], answer["container_id"],
        "{identity}"
    );
    let (out, code) = exec(&http, url, "id").await;
    assert_eq!((out.trim(), code), ("uid=1000(gem) gid=1000(gem)", 0));

    // The kernel's view: PID 1 (the server, root) holds exactly the configured capabilities;
    // commands run as uid 1000 hold none; no privilege escalation; seccomp filtering.
    let (pid1, _) = exec(&http, url, "cat /proc/1/status").await;
    let want = capability_bits(&capabilities);
    assert_eq!(
        u64::from_str_radix(status_field(&pid1, "CapEff"), 16).unwrap(),
        want,
        "{capabilities}"
    );
    assert_eq!(status_field(&pid1, "NoNewPrivs"), "1");
    assert_eq!(status_field(&pid1, "Seccomp"), "2");
    let (own, _) = exec(&http, url, "cat /proc/self/status").await;
    assert_eq!(status_field(&own, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&own, "NoNewPrivs"), "1");
    assert_eq!(status_field(&own, "Seccomp"), "2");
    let (_, code) = exec(
        &http,
        url,
        "test -e /var/run/secrets/kubernetes.io/serviceaccount",
    )
    .await;
    assert_eq!(code, 1, "no service-account token is mounted");
    let (limit, code) = exec(
        &http,
        url,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    )
    .await;
    assert_eq!(
        (limit.trim(), code),
        ("335544320", 0),
        "320Mi is the cgroup's limit"
    );

    // The cluster IP, reached from the host: the ClusterIP mode's URL names the Service, which
    // resolves to this address inside a cluster.
    service.stop_gracefully().await;
    let mut args = real_node_serve_args(&ns.name, &host.0);
    args.sandbox.sandbox_service_type = "ClusterIP".into();
    let in_cluster = TestService::start(args).await;
    let answer = create_until_ready(
        &in_cluster,
        json!({"sandbox_id": "rn-2", "thread_id": "t-2"}),
    )
    .await;
    pod_on_the_real_node(&ns, "rn-2").await;
    let url = answer["sandbox_url"].as_str().unwrap();
    let svc: Service = ns.services().get("sandbox-rn-2-svc").await.unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let parsed = reqwest::Url::parse(url).unwrap();
    let host_name = parsed.host_str().unwrap().to_string();
    assert_eq!(
        host_name,
        format!("sandbox-rn-2-svc.{}.svc.cluster.local", ns.name)
    );
    let port = parsed.port().unwrap();
    let via_cluster_ip = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .resolve(&host_name, format!("{cluster_ip}:{port}").parse().unwrap())
        .build()
        .unwrap();
    until_answering(&via_cluster_ip, &answer).await;
    let identity = json_answer(via_cluster_ip.get(format!("{url}/test/identity"))).await;
    assert_eq!(
        identity["data"]["pod_uid"], answer["container_id"],
        "{identity}"
    );
    let (out, code) = exec(&via_cluster_ip, url, "id -u").await;
    assert_eq!((out.trim(), code), ("1000", 0));
    in_cluster.stop_gracefully().await;
}

#[tokio::test]
async fn mounts_on_the_real_node_do_what_the_docs_say() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("real-mounts").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_serve_args(&ns.name, &host.0);
    // The shipped /dev/shm example, on the real node.
    args.sandbox.sandbox_pod_template =
        Some(real_node_pod_template_with("aio-browser.yaml", &host.0));
    let skills = host.0.join("skills");
    std::fs::create_dir_all(skills.join("public")).unwrap();
    std::fs::write(skills.join("public/skill.md"), "a skill").unwrap();
    // Writable for everyone on the host: a refused write can then only be the read-only mount.
    for dir in [skills.clone(), skills.join("public")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let extra = host.0.join("users/u1/threads/t-a/acp-workspace");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(extra.join("notes.txt"), "from the host").unwrap();
    let service = TestService::start(args).await;
    let a = create_ready(
        &service,
        json!({"sandbox_id": "m-a", "thread_id": "t-a", "user_id": "u1",
               "extra_mounts": [{"host_path": extra.display().to_string(),
                                 "container_path": "/mnt/acp-workspace", "read_only": false}]}),
    )
    .await;
    let b = create_ready(&service, json!({"sandbox_id": "m-b", "thread_id": "t-b"})).await;
    pod_on_the_real_node(&ns, "m-a").await;
    let (a_url, b_url) = (
        a["sandbox_url"].as_str().unwrap(),
        b["sandbox_url"].as_str().unwrap(),
    );
    let http = http_client();

    // User data: written in the sandbox (as its user), found on the host under the thread.
    let (_, code) = exec(&http, a_url, "echo from-a > /mnt/user-data/a.txt").await;
    assert_eq!(code, 0);
    let on_host = host.0.join("threads/t-a/user-data/a.txt");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), "from-a\n");
    // ... and not visible to another thread's sandbox.
    let (listing, code) = exec(&http, b_url, "ls -A /mnt/user-data").await;
    assert_eq!((listing.trim(), code), ("", 0));
    let (_, code) = exec(&http, b_url, "test -e /mnt/user-data/a.txt").await;
    assert_eq!(code, 1);

    // Skills are there and read-only, whoever writes.
    let (skill, code) = exec(&http, a_url, "cat /mnt/skills/public/skill.md").await;
    assert_eq!((skill.as_str(), code), ("a skill", 0));
    let (refused, code) = exec(&http, a_url, "touch /mnt/skills/public/new 2>&1").await;
    assert_ne!(code, 0);
    assert!(refused.contains("Read-only file system"), "{refused}");
    assert!(!skills.join("public/new").exists());

    // The extra mount, both ways.
    let (notes, _) = exec(&http, a_url, "cat /mnt/acp-workspace/notes.txt").await;
    assert_eq!(notes, "from the host");

    // The template's /dev/shm: memory-backed, of its size (1Gi).
    let (mounts, _) = exec(&http, a_url, "grep ' /dev/shm ' /proc/mounts").await;
    assert!(mounts.starts_with("tmpfs /dev/shm tmpfs "), "{mounts}");
    assert!(mounts.contains("size=1048576k"), "{mounts}");
    service.stop_gracefully().await;
}

#[tokio::test]
async fn deerflows_gateway_sequence_runs_against_a_real_sandbox_and_delete_removes_the_container() {
    if !real_node_running().await {
        return;
    }
    let ns = TestNamespace::new("real-gateway").await;
    let host = HostDir::new(&ns);
    let service = TestService::start(real_node_serve_args(&ns.name, &host.0)).await;
    // The gateway: create, then poll {sandbox_url}/v1/sandbox until it answers 200.
    let (status, answer) = service.create("gw-1", "t-gw").await;
    assert_eq!(status, 200, "{answer}");
    let url = answer["sandbox_url"].as_str().unwrap().to_string();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    eventually(
        Duration::from_secs(90),
        "the sandbox's API to answer 200",
        || async {
            let r = http.get(format!("{url}/v1/sandbox")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let (out, code) = exec(&http, &url, "echo hello from $(cat /etc/hostname)").await;
    assert_eq!((out.trim(), code), ("hello from sandbox-gw-1", 0));
    let pod = pod_on_the_real_node(&ns, "gw-1").await;
    let container = pod.status.unwrap().container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let container = container.trim_start_matches("containerd://").to_string();
    assert!(real_node_containers().contains(&container));

    let (status, _) = service.delete("gw-1").await;
    assert_eq!(status, 200);
    // The kubelet stops the container at once and removes it; the URL stops answering.
    eventually(
        Duration::from_secs(120),
        "the container to leave containerd",
        || async { (!real_node_containers().contains(&container)).then_some(()) },
    )
    .await;
    assert!(http.get(format!("{url}/v1/sandbox")).send().await.is_err());
    service.stop_gracefully().await;
}
