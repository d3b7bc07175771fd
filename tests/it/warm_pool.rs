//! Warm pools on the real node: claims answer ready with the thread's data bound in by the
//! node agent (`scripts/real-node` runs it), pool Pods stay out of every sandbox count, and
//! claims stay exclusive and clean when replicas race or the agent dies.

use std::{collections::BTreeMap, path::Path, time::Duration};

use http::Method;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::{json, Value};
use testkit::{
    eventually, real_node_gateway_args, real_node_running, real_node_slot_root, start_node_agent,
    stop_node_agent, warm_pool_mode, TestNamespace, TestService,
};

use crate::real_node::{exec, http_client, until_answering, HostDir};

/// Tests that need the node agent running hold this for reading; the one that stops the agent
/// holds it for writing, so that no other claim is under way meanwhile.
static AGENT: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const POOL_LABEL: &str = sandbox_provisioner::spec::keys::POOL_LABEL;

/// The unclaimed pool Pods of the namespace that are ready, by name.
async fn ready_pool_pods(ns: &TestNamespace) -> Vec<String> {
    let pods = ns
        .pods()
        .list(&ListParams::default().labels(&format!("{POOL_LABEL},!sandbox-id")))
        .await
        .unwrap();
    pods.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "ContainersReady" && c.status == "True")
            })
        })
        .filter_map(|p| p.metadata.name)
        .collect()
}

/// Waits (up to 120 s) until the pool has `count` ready Pods.
async fn pool_ready(ns: &TestNamespace, count: usize) -> Vec<String> {
    eventually(
        Duration::from_secs(120),
        &format!("{count} ready pool Pods"),
        || async {
            let ready = ready_pool_pods(ns).await;
            (ready.len() >= count).then_some(ready)
        },
    )
    .await
}

/// The Pods that hold sandbox `id`.
async fn pods_of(ns: &TestNamespace, id: &str) -> Vec<Pod> {
    ns.pods()
        .list(&ListParams::default().labels(&format!("sandbox-id={id}")))
        .await
        .unwrap()
        .items
}

/// Mount points below `dir` (findmnt).
fn mounts_below(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("findmnt")
        .args(["-rn", "-o", "TARGET"])
        .output()
        .expect("running findmnt");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Waits (up to 60 s) until the pod's slot directory is gone and nothing is mounted in it.
async fn slots_gone(ns: &TestNamespace, pod: &str) {
    let dir = real_node_slot_root().join(&ns.name).join(pod);
    eventually(
        Duration::from_secs(60),
        &format!("{} unmounted and removed", dir.display()),
        || async { (!dir.exists() && mounts_below(&dir).is_empty()).then_some(()) },
    )
    .await;
}

async fn create(service: &TestService, body: Value) -> (u16, Value) {
    service
        .call(Method::POST, "/api/sandboxes", Some(body))
        .await
}

#[tokio::test]
async fn a_claim_answers_ready_with_the_threads_data_bound_in() {
    if !real_node_running().await {
        return;
    }
    let _agent = AGENT.read().await;
    let ns = TestNamespace::new("warm-claim").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    warm_pool_mode(&mut args, r#"{"default": 2}"#);
    let service = TestService::start(args).await;
    let before = pool_ready(&ns, 2).await;

    // The thread's data, written before the claim; another thread's beside it.
    let mine = host.0.join("threads/t-1/user-data");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("hello.txt"), "from the host").unwrap();
    let theirs = host.0.join("threads/t-2/user-data");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("secret.txt"), "not yours").unwrap();
    let acp = host.0.join("users/u1/threads/t-1/acp-workspace");
    std::fs::create_dir_all(&acp).unwrap();
    std::fs::write(acp.join("notes.txt"), "read me").unwrap();
    // Writable for everyone on the host: a refused write can then only be the read-only bind.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&acp, std::fs::Permissions::from_mode(0o777)).unwrap();

    let (status, answer) = create(
        &service,
        json!({"sandbox_id": "w-1", "thread_id": "t-1", "user_id": "u1",
               "extra_mounts": [{"host_path": acp.display().to_string(),
                                 "container_path": "/mnt/acp-workspace", "read_only": true}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], true, "a claim answers ready: {answer}");
    let pods = pods_of(&ns, "w-1").await;
    assert_eq!(pods.len(), 1);
    let pod_name = pods[0].metadata.name.clone().unwrap();
    assert!(
        before.contains(&pod_name),
        "{pod_name} was one of the ready pool Pods {before:?}"
    );
    assert_eq!(
        answer["container_id"],
        pods[0].metadata.uid.clone().unwrap().as_str()
    );

    let url = answer["sandbox_url"].as_str().unwrap();
    let http = http_client();
    let (out, code) = exec(&http, url, "cat /mnt/user-data/hello.txt").await;
    assert_eq!((out.trim(), code), ("from the host", 0));
    let (out, code) = exec(
        &http,
        url,
        "echo from-the-sandbox > /mnt/user-data/out.txt 2>&1; id; ls -ld /mnt/user-data",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(mine.join("out.txt"))
            .unwrap_or_else(|e| panic!("{e}: {out}"))
            .trim(),
        "from-the-sandbox"
    );
    let (listing, _) = exec(&http, url, "ls -A /mnt/user-data; ls -A /mnt 2>&1").await;
    assert!(!listing.contains("secret.txt"), "{listing}");
    let (out, code) = exec(&http, url, "cat /mnt/acp-workspace/notes.txt").await;
    assert_eq!((out.trim(), code), ("read me", 0));
    let (refused, code) = exec(&http, url, "touch /mnt/acp-workspace/new 2>&1").await;
    assert_ne!(code, 0, "{refused}");
    assert!(refused.contains("Read-only file system"), "{refused}");
    assert!(!acp.join("new").exists());

    // The pool as /api/capabilities shows it (its Pods are not sandboxes).
    let (_, capabilities) = service.call(Method::GET, "/api/capabilities", None).await;
    let pools = &capabilities["clusters"][0]["warm_pools"];
    assert_eq!(pools[0]["size"], "default", "{capabilities}");
    assert_eq!(pools[0]["target"], 2, "{capabilities}");
    assert_eq!(
        capabilities["clusters"][0]["sandboxes"], 1,
        "{capabilities}"
    );
    // Pool Pods are no one's sandboxes: only the claimed one is listed.
    let (_, list) = service.call(Method::GET, "/api/sandboxes", None).await;
    let ids: Vec<&str> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandbox_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["w-1"], "{list}");
    // A second POST of the same sandbox finds the claimed Pod by its label.
    let (status, again) = create(
        &service,
        json!({"sandbox_id": "w-1", "thread_id": "t-1", "user_id": "u1",
               "extra_mounts": [{"host_path": acp.display().to_string(),
                                 "container_path": "/mnt/acp-workspace", "read_only": true}]}),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["container_id"], answer["container_id"]);
    // The pool refills.
    let refilled = pool_ready(&ns, 2).await;
    assert!(!refilled.contains(&pod_name));

    let (status, _) = service.delete("w-1").await;
    assert_eq!(status, 200);
    slots_gone(&ns, &pod_name).await;
    assert_eq!(
        std::fs::read_to_string(mine.join("hello.txt")).unwrap(),
        "from the host",
        "the thread's data outlives the sandbox"
    );
    let (status, _) = service.get("w-1").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_claimed_sandbox_is_served_by_its_own_service_in_direct_mode() {
    if !real_node_running().await {
        return;
    }
    let _agent = AGENT.read().await;
    let ns = TestNamespace::new("warm-direct").await;
    let host = HostDir::new(&ns);
    let mut args = testkit::real_node_serve_args(&ns.name, &host.0);
    warm_pool_mode(&mut args, r#"{"default": 1}"#);
    let service = TestService::start(args).await;
    let pool = pool_ready(&ns, 1).await;
    let data = host.0.join("threads/t-d/user-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("d.txt"), "through the node port").unwrap();
    let (status, answer) = create(&service, json!({"sandbox_id": "d-1", "thread_id": "t-d"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], true, "{answer}");
    assert_eq!(
        pods_of(&ns, "d-1").await[0].metadata.name.as_ref(),
        Some(&pool[0])
    );
    let url = answer["sandbox_url"].as_str().unwrap();
    assert!(
        url.starts_with("http://198.19.0.1:"),
        "the Service's node port: {url}"
    );
    // The Service routes once the kubelet has folded the agent's condition into Ready.
    let http = http_client();
    until_answering(&http, &answer).await;
    let (out, code) = exec(&http, url, "cat /mnt/user-data/d.txt").await;
    assert_eq!((out.trim(), code), ("through the node port", 0));
}

#[tokio::test]
async fn pool_pods_age_out_and_count_for_no_quota_or_reaper() {
    if !real_node_running().await {
        return;
    }
    let _agent = AGENT.read().await;
    let ns = TestNamespace::new("warm-age").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    warm_pool_mode(&mut args, r#"{"default": 2}"#);
    args.warm_pool.sandbox_warm_pool_max_age = "25s".into();
    args.lifecycle.sandbox_idle_timeout = "3s".into();
    args.lifecycle.sandbox_reap_interval = "1s".into();
    args.tenancy.sandbox_max_total = Some(1);
    let service = TestService::start(args).await;
    let first = pool_ready(&ns, 2).await;

    // A quota of one sandbox: the pool's two Pods do not count against it.
    let (status, answer) = create(&service, json!({"sandbox_id": "a-1", "thread_id": "t"})).await;
    assert_eq!(status, 200, "{answer}");
    let claimed = pods_of(&ns, "a-1").await[0].metadata.name.clone().unwrap();
    let unclaimed: Vec<&String> = first.iter().filter(|n| **n != claimed).collect();
    let (status, refused) = create(&service, json!({"sandbox_id": "a-2", "thread_id": "t"})).await;
    assert_eq!(status, 429, "the one sandbox counts: {refused}");

    // The reaper takes the idle sandbox, never a pool Pod (they have no activity at all).
    // Watched through the apiserver: a GET would count as activity.
    eventually(Duration::from_secs(30), "a-1 reaped", || async {
        pods_of(&ns, "a-1").await.is_empty().then_some(())
    })
    .await;
    let ready = ready_pool_pods(&ns).await;
    assert!(
        unclaimed.iter().all(|n| ready.contains(n)),
        "idle for longer than the idle timeout, yet not reaped: {unclaimed:?} in {ready:?}"
    );
    // Older than 25 s: the keeper replaces each Pod of the first generation (the claimed one
    // went with a-1).
    eventually(
        Duration::from_secs(90),
        "the first pool Pods replaced",
        || async {
            let ready = ready_pool_pods(&ns).await;
            (ready.len() >= 2 && first.iter().all(|n| !ready.contains(n))).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_replicas_racing_claim_each_pool_pod_at_most_once() {
    if !real_node_running().await {
        return;
    }
    // Twenty-five real Pods: nothing else on the node meanwhile (and so no agent restart).
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("warm-race").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    warm_pool_mode(&mut args, r#"{"default": 5}"#);
    let a = TestService::start(args.clone()).await;
    // The second replica on a port of its own.
    testkit::gateway_mode(&mut args);
    let b = TestService::start(args).await;
    let pool = pool_ready(&ns, 5).await;
    let creates = (0..20).map(|i| {
        let service = if i % 2 == 0 { &a } else { &b };
        async move {
            let id = format!("r-{i}");
            let (status, answer) = create(
                service,
                json!({"sandbox_id": id, "thread_id": format!("t-{i}")}),
            )
            .await;
            (id, status, answer)
        }
    });
    let answers = futures::future::join_all(creates).await;
    for (id, status, answer) in &answers {
        assert_eq!(*status, 200, "{id}: {answer}");
    }
    // Every sandbox has exactly one Pod, and no Pod serves two sandboxes.
    let mut holders = BTreeMap::new();
    for (id, _, _) in &answers {
        let pods = pods_of(&ns, id).await;
        let live: Vec<_> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert_eq!(live.len(), 1, "{id} has {} live Pods", live.len());
        let name = live[0].metadata.name.clone().unwrap();
        if let Some(other) = holders.insert(name.clone(), id.clone()) {
            panic!("{name} serves both {other} and {id}");
        }
    }
    let warm = holders.keys().filter(|n| pool.contains(n)).count();
    let from_pool = holders
        .keys()
        .filter(|n| n.starts_with("sandbox-pool-"))
        .count();
    println!("20 creates over a pool of 5: {warm} took a first-generation pool Pod, {from_pool} any pool Pod, {} went cold", 20 - from_pool);
    assert!(warm >= 1, "some creates were served warm: {holders:?}");
    assert!(warm <= 5);
}

#[tokio::test]
async fn an_agent_that_dies_during_a_claim_leaves_nothing_half_made() {
    if !real_node_running().await {
        return;
    }
    let _agent = AGENT.write().await;
    let ns = TestNamespace::new("warm-agent").await;
    let host = HostDir::new(&ns);
    let mut args = real_node_gateway_args(&ns.name, &host.0);
    warm_pool_mode(&mut args, r#"{"default": 2}"#);
    args.warm_pool.sandbox_warm_pool_bind_timeout = "4s".into();
    let service = TestService::start(args).await;
    pool_ready(&ns, 2).await;

    // Dead for longer than the bind timeout: the claim fails clearly and its Pod goes.
    stop_node_agent();
    let (status, refused) =
        create(&service, json!({"sandbox_id": "k-1", "thread_id": "t-1"})).await;
    let restarted = scopeguard(start_node_agent);
    assert_eq!(status, 503, "{refused}");
    let message = refused["detail"].as_str().unwrap_or_default();
    assert!(message.contains("node agent"), "{refused}");
    eventually(Duration::from_secs(30), "k-1's Pod gone", || async {
        pods_of(&ns, "k-1").await.is_empty().then_some(())
    })
    .await;
    assert_eq!(service.get("k-1").await.0, 404);
    drop(restarted);

    // Dead only for a moment: the restarted agent finishes the claim.
    pool_ready(&ns, 2).await;
    stop_node_agent();
    let claim = tokio::spawn(TestService::answer(
        service
            .http
            .post(format!("{}/api/sandboxes", service.base))
            .json(&json!({"sandbox_id": "k-2", "thread_id": "t-2"})),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    start_node_agent();
    let (status, answer) = claim.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], true, "{answer}");
    let pod = pods_of(&ns, "k-2").await.remove(0);
    let pod_name = pod.metadata.name.unwrap();
    let slot = real_node_slot_root().join(&ns.name).join(&pod_name);
    let mounted = mounts_below(&slot);
    assert_eq!(
        mounted,
        [slot.join("slot-mnt-user-data").display().to_string()],
        "exactly the thread's user data, once"
    );
    service.delete("k-2").await;
    slots_gone(&ns, &pod_name).await;
}

/// Runs `f` when dropped (so that a failed assertion still restarts the agent).
fn scopeguard(f: fn()) -> impl Drop {
    struct Guard(Option<fn()>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[tokio::test]
async fn the_node_agent_binds_with_exactly_its_shipped_role() {
    use sandbox_provisioner::agent::{self, mounts, AgentArgs};
    if !real_node_running().await {
        return;
    }
    let _agent = AGENT.read().await;
    let ns = TestNamespace::new("warm-rbac").await;
    let host = HostDir::new(&ns);
    let kubeconfig = ns
        .apply_shipped_rbac(
            "node-agent",
            &["node-agent"],
            "sandbox-provisioner-node-agent",
        )
        .await;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();

    // An agent of this test's own, in this namespace only, with a slot root of its own (the
    // node's agent leaves Pods whose slots lie elsewhere alone).
    let slot_root = host.0.join("slots");
    let staging = host.0.join("staging");
    // Dropped before the host directory, also when an assertion fails.
    struct Unmount(Vec<std::path::PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for dir in &self.0 {
                let _ = mounts::unmount_all(dir);
            }
        }
    }
    let _unmount = Unmount(vec![slot_root.clone(), staging.clone()]);
    let args = AgentArgs {
        node: testkit::REAL_NODE.into(),
        namespace: ns.name.clone(),
        slot_root: slot_root.clone(),
        allowed_bases: vec![host.0.clone()],
        staging: staging.clone(),
        api_timeout: 10.0,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(agent::run_with(args, client, async {
        let _ = stopped.await;
    }));
    let mut serve = real_node_gateway_args(&ns.name, &host.0);
    warm_pool_mode(&mut serve, r#"{"default": 1}"#);
    serve.warm_pool.sandbox_warm_pool_slot_root = slot_root.display().to_string();
    let service = TestService::start(serve).await;
    pool_ready(&ns, 1).await;
    let data = host.0.join("threads/t-r/user-data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.txt"), "bound by the shipped role").unwrap();
    let (status, answer) = create(&service, json!({"sandbox_id": "b-1", "thread_id": "t-r"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ready"], true, "{answer}");
    let (out, code) = exec(
        &http_client(),
        answer["sandbox_url"].as_str().unwrap(),
        "cat /mnt/user-data/f.txt",
    )
    .await;
    assert_eq!((out.trim(), code), ("bound by the shipped role", 0));
    let pod_name = pods_of(&ns, "b-1").await[0].metadata.name.clone().unwrap();
    service.delete("b-1").await;
    let dir = slot_root.join(&ns.name).join(&pod_name);
    eventually(Duration::from_secs(60), "the slots removed", || async {
        (!dir.exists() && mounts_below(&dir).is_empty()).then_some(())
    })
    .await;
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
