//! Several clusters behind one API, against two real local clusters (scripts/test starts the
//! second; SECOND_KUBECONFIG names it): placement, one view of every sandbox, and a cluster
//! whose apiserver stops (SIGSTOP) while the other keeps working.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::Duration,
};

use futures::future::join_all;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{api::ListParams, Api};
use reqwest::Method;
use sandbox_provisioner::spec::keys::LEADER_LEASE;
use sandbox_provisioner::{
    config::ServeArgs,
    fleet::{preference, ClusterState},
};
use serde_json::{json, Value};
use testkit::{
    eventually, kubeconfig_path, random_suffix, second_kubeconfig_path, serve_args, TestNamespace,
    TestService,
};

/// The SIGSTOP test stops the second cluster's apiserver: it runs alone, the others share.
static SECOND_CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A test namespace of the same name in both clusters.
struct Both {
    a: TestNamespace,
    b: TestNamespace,
}

impl Both {
    async fn new(prefix: &str) -> Both {
        let a = TestNamespace::new(prefix).await;
        let b = a.in_second_cluster().await;
        Both { a, b }
    }

    /// The sandbox pods in cluster `a` and in cluster `b`, by sandbox id.
    async fn pods(&self) -> (Vec<String>, Vec<String>) {
        let ids = |pods: Vec<Pod>| {
            let mut ids: Vec<String> = pods
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| {
                    p.metadata
                        .name?
                        .strip_prefix("sandbox-")
                        .map(str::to_string)
                })
                .collect();
            ids.sort();
            ids
        };
        let lp = ListParams::default();
        (
            ids(self.a.pods().list(&lp).await.unwrap().items),
            ids(self.b.pods().list(&lp).await.unwrap().items),
        )
    }
}

fn entry(name: &str, kubeconfig: PathBuf, extra: Value) -> Value {
    let mut entry = json!({"name": name, "kubeconfig": kubeconfig});
    entry
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    entry
}

/// Cluster `a` is the first local cluster, `b` the second, each with `extra` settings.
fn two_clusters(a: Value, b: Value) -> Value {
    json!([
        entry("a", kubeconfig_path(), a),
        entry("b", second_kubeconfig_path(), b)
    ])
}

/// The service's flags with SANDBOX_CLUSTERS pointing at a file listing `clusters`.
fn fleet_args(namespace: &str, clusters: &Value) -> ServeArgs {
    let path = std::env::temp_dir().join(format!("clusters-{}.yaml", random_suffix()));
    std::fs::write(
        &path,
        serde_json::to_string(&json!({"clusters": clusters})).unwrap(),
    )
    .unwrap();
    let mut args = serve_args(namespace);
    args.cluster.clusters = Some(path);
    // The outage test waits for the probe; keep every call short.
    args.cluster.k8s_api_timeout_seconds = 2.0;
    args
}

async fn create(svc: &TestService, body: Value) -> (u16, Value) {
    svc.call(Method::POST, "/api/sandboxes", Some(body)).await
}

/// Where placement puts a thread among clusters `a` and `b` of these weights.
fn preferred(thread: &str, weights: (u32, u32)) -> String {
    let state = |name, weight| ClusterState {
        name,
        weight,
        sandboxes: 0,
        max_sandboxes: None,
        unreachable: None,
    };
    preference(thread, &[state("a", weights.0), state("b", weights.1)])[0].to_string()
}

#[tokio::test]
async fn placement_follows_the_weights_and_two_replicas_agree() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-spread").await;
    let clusters = two_clusters(json!({"weight": 1}), json!({"weight": 3}));
    let replicas = [
        TestService::start(fleet_args(&ns.a.name, &clusters)).await,
        TestService::start(fleet_args(&ns.a.name, &clusters)).await,
    ];
    let total = 120;
    let ids: Vec<String> = (0..total).map(|i| format!("sp-{i}")).collect();
    for (batch, chunk) in ids.chunks(12).enumerate() {
        let answers = join_all(chunk.iter().enumerate().map(|(i, id)| {
            // Alternate replicas, so that each places half of the sandboxes.
            let svc = &replicas[(batch + i) % 2];
            create(
                svc,
                json!({"sandbox_id": id, "thread_id": format!("thread-{id}")}),
            )
        }))
        .await;
        for (id, (code, body)) in chunk.iter().zip(answers) {
            assert_eq!(code, 200, "{id}: {body}");
            assert_eq!(
                body["cluster"],
                preferred(&format!("thread-{id}"), (1, 3)),
                "{id} is placed by the thread's rendezvous order on every replica"
            );
        }
    }
    let (in_a, in_b) = ns.pods().await;
    assert_eq!(in_a.len() + in_b.len(), total, "each sandbox exists once");
    // Weights 1:3 expect 30 and 90; 120 draws have a standard deviation of 4.7.
    assert!(
        (75..=105).contains(&in_b.len()),
        "cluster b (weight 3) holds {} of {total}",
        in_b.len()
    );
    // Both replicas list the same sandboxes, each with its cluster.
    for svc in &replicas {
        let (code, list) = svc.list().await;
        assert_eq!(code, 200);
        assert_eq!(list["count"], total);
        let clusters: Vec<(String, u64)> = list["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert_eq!(c["reachable"], true, "{c}");
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["sandboxes"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            clusters,
            vec![
                ("a".into(), in_a.len() as u64),
                ("b".into(), in_b.len() as u64)
            ]
        );
    }
}

#[tokio::test]
async fn explicit_clusters_labels_capacity_and_drain() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-choose").await;
    let clusters = two_clusters(
        json!({"labels": {"region": "eu"}, "max_sandboxes": 2}),
        json!({"labels": {"region": "us"}}),
    );
    let svc = TestService::start(fleet_args(&ns.a.name, &clusters)).await;

    let (code, body) = create(&svc, json!({"sandbox_id": "ch-named", "cluster": "b"})).await;
    assert_eq!((code, body["cluster"].as_str()), (200, Some("b")), "{body}");
    let (code, body) = create(
        &svc,
        json!({"sandbox_id": "ch-label", "cluster_labels": {"region": "eu"}}),
    )
    .await;
    assert_eq!((code, body["cluster"].as_str()), (200, Some("a")), "{body}");

    // Mistakes are 422 naming what exists; nothing is created.
    for (body, expected) in [
        (
            json!({"sandbox_id": "ch-bad", "cluster": "c"}),
            "[\"a\", \"b\"]",
        ),
        (
            json!({"sandbox_id": "ch-bad", "cluster_labels": {"region": "mars"}}),
            "a {\"region\": \"eu\"}, b {\"region\": \"us\"}",
        ),
        (
            json!({"sandbox_id": "ch-bad", "cluster": "a", "cluster_labels": {"region": "eu"}}),
            "not both",
        ),
    ] {
        let (code, answer) = create(&svc, body.clone()).await;
        assert_eq!(code, 422, "{body} -> {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(expected), "{detail}");
    }
    // An id another cluster holds is never made a second time.
    let (code, answer) = create(&svc, json!({"sandbox_id": "ch-named", "cluster": "a"})).await;
    assert_eq!(code, 409, "{answer}");
    assert!(answer["detail"]
        .as_str()
        .unwrap()
        .contains("exists in cluster \"b\""));
    assert_eq!(
        ns.pods().await,
        (vec!["ch-label".into()], vec!["ch-named".into()])
    );

    // Cluster a takes two at most: what it cannot take goes to b, or waits when only a may
    // take it (503 with Retry-After and the reason).
    for i in 0..8 {
        let (code, body) = create(&svc, json!({"sandbox_id": format!("ch-any-{i}")})).await;
        assert_eq!(code, 200, "{body}");
    }
    let (in_a, in_b) = ns.pods().await;
    assert_eq!(in_a.len(), 2, "a is full at max_sandboxes 2: {in_a:?}");
    assert_eq!(in_b.len(), 8, "{in_b:?}");
    let refused = svc
        .http
        .post(svc.url("/api/sandboxes"))
        .json(&json!({"sandbox_id": "ch-eu", "cluster_labels": {"region": "eu"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let detail = refused.json::<Value>().await.unwrap()["detail"].to_string();
    assert!(
        detail.contains("cluster \\\"a\\\" is full (2 of max_sandboxes 2)"),
        "{detail}"
    );
    // Deleting frees the slot at once.
    assert_eq!(svc.delete("ch-label").await.0, 200);
    let (code, body) = create(
        &svc,
        json!({"sandbox_id": "ch-eu", "cluster_labels": {"region": "eu"}}),
    )
    .await;
    assert_eq!((code, body["cluster"].as_str()), (200, Some("a")), "{body}");
    let (_, caps) = svc.call(Method::GET, "/api/capabilities", None).await;
    assert_eq!(caps["clusters"][0]["name"], "a");
    assert_eq!(caps["clusters"][0]["sandboxes"], 2);
    assert_eq!(caps["clusters"][0]["max_sandboxes"], 2);
    assert_eq!(caps["clusters"][0]["labels"], json!({"region": "eu"}));
    assert_eq!(caps["clusters"][1]["max_sandboxes"], Value::Null);
    drop(svc);

    // Weight 0 drains a: its sandboxes are served and deleted as before, new ones go to b.
    let drained = two_clusters(json!({"weight": 0}), json!({}));
    let svc = TestService::start(fleet_args(&ns.a.name, &drained)).await;
    let (code, body) = svc.get("ch-eu").await;
    assert_eq!((code, body["cluster"].as_str()), (200, Some("a")), "{body}");
    for i in 0..6 {
        let (code, body) = create(&svc, json!({"sandbox_id": format!("ch-new-{i}")})).await;
        assert_eq!((code, body["cluster"].as_str()), (200, Some("b")), "{body}");
    }
    let (code, body) = create(&svc, json!({"sandbox_id": "ch-x", "cluster": "a"})).await;
    assert_eq!(code, 503, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("draining (weight 0)"));
    assert_eq!(svc.delete("ch-eu").await.0, 200);
    assert_eq!(svc.get("ch-eu").await.0, 404);
}

#[tokio::test]
async fn one_id_through_two_replicas_exists_once() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-race").await;
    let clusters = two_clusters(json!({}), json!({}));
    let one = TestService::start(fleet_args(&ns.a.name, &clusters)).await;
    let two = TestService::start(fleet_args(&ns.a.name, &clusters)).await;
    for i in 0..10 {
        let body = json!({"sandbox_id": format!("race-{i}"), "thread_id": format!("t-{i}")});
        let ((c1, b1), (c2, b2)) = tokio::join!(create(&one, body.clone()), create(&two, body));
        assert_eq!((c1, c2), (200, 200), "{b1} {b2}");
        assert_eq!(b1["cluster"], b2["cluster"]);
        assert_eq!(b1["sandbox_url"], b2["sandbox_url"]);
    }
    let (in_a, in_b) = ns.pods().await;
    let mut all: Vec<String> = in_a.into_iter().chain(in_b).collect();
    all.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    expected.sort();
    assert_eq!(
        all, expected,
        "every id exists exactly once across the clusters"
    );
}

#[tokio::test]
async fn get_list_delete_across_clusters_survive_a_restart() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-view").await;
    let clusters = two_clusters(json!({}), json!({}));
    let svc = TestService::start(fleet_args(&ns.a.name, &clusters)).await;
    let mut placed = BTreeMap::new();
    for (id, cluster) in [("v-1", "a"), ("v-2", "b"), ("v-3", "a"), ("v-4", "b")] {
        let (code, body) = create(&svc, json!({"sandbox_id": id, "cluster": cluster})).await;
        assert_eq!(code, 200, "{body}");
        placed.insert(id.to_string(), body);
    }
    drop(svc);

    let svc = TestService::start(fleet_args(&ns.a.name, &clusters)).await;
    let (code, list) = svc.list().await;
    assert_eq!(code, 200, "{list}");
    let listed: Vec<(&str, &str)> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["sandbox_id"].as_str().unwrap(),
                s["cluster"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("v-1", "a"), ("v-2", "b"), ("v-3", "a"), ("v-4", "b")],
        "merged and sorted by id"
    );
    for (id, before) in &placed {
        let (code, now) = svc.get(id).await;
        assert_eq!(code, 200, "{now}");
        assert_eq!(now["cluster"], before["cluster"]);
        assert_eq!(now["sandbox_url"], before["sandbox_url"]);
        let (code, kept) = svc
            .call(
                Method::POST,
                &format!("/api/sandboxes/{id}/keepalive"),
                None,
            )
            .await;
        assert_eq!((code, &kept["cluster"]), (200, &before["cluster"]));
    }
    // A sandbox one replica made is found by another before its watch delivers it.
    let other = TestService::start(fleet_args(&ns.a.name, &clusters)).await;
    let (code, _) = create(&other, json!({"sandbox_id": "v-5", "cluster": "b"})).await;
    assert_eq!(code, 200);
    let (code, body) = svc.get("v-5").await;
    assert_eq!((code, body["cluster"].as_str()), (200, Some("b")), "{body}");
    for id in ["v-1", "v-2", "v-3", "v-4", "v-5"] {
        assert_eq!(svc.delete(id).await.0, 200);
        assert_eq!(svc.get(id).await.0, 404);
    }
    let (code, body) = svc.delete("v-never").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(ns.pods().await, (vec![], vec![]));
}

/// SIGSTOP of the second cluster's apiserver, resumed when dropped (also after a failure).
struct Stopped(String);

impl Stopped {
    fn apiserver() -> Stopped {
        let state_dir = second_kubeconfig_path().parent().unwrap().to_path_buf();
        let pid = std::fs::read_to_string(state_dir.join("pids/kube-apiserver.pid"))
            .expect("the second cluster's apiserver PID file")
            .trim()
            .to_string();
        signal("-STOP", &pid);
        Stopped(pid)
    }
}

fn signal(which: &str, pid: &str) {
    let status = std::process::Command::new("kill")
        .args([which, pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

#[tokio::test]
async fn a_stopped_apiserver_is_503_never_404_and_everything_recovers() {
    let _alone = SECOND_CLUSTER.write().await;
    let ns = Both::new("fleet-stop").await;
    let clusters = two_clusters(json!({}), json!({}));
    let mut args = fleet_args(&ns.a.name, &clusters);
    args.lifecycle.sandbox_reap_interval = "1s".into();
    let svc = TestService::start(args).await;
    for (id, cluster) in [("st-a", "a"), ("st-b", "b")] {
        let (code, body) = create(&svc, json!({"sandbox_id": id, "cluster": cluster})).await;
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = create(
        &svc,
        json!({"sandbox_id": "st-short", "cluster": "a", "ttl_seconds": 6}),
    )
    .await;
    assert_eq!(code, 200, "{body}");

    let stopped = Stopped::apiserver();
    eventually(
        Duration::from_secs(20),
        "GET of st-b to answer 503",
        || async {
            let (code, body) = svc.get("st-b").await;
            assert_ne!(
                code, 404,
                "a sandbox of an unreachable cluster is never 404: {body}"
            );
            (code == 503).then_some(())
        },
    )
    .await;
    let (code, body) = svc.get("st-b").await;
    assert_eq!(code, 503);
    assert!(
        body["detail"].as_str().unwrap().contains("cluster \"b\""),
        "{body}"
    );
    // The other cluster works as before.
    let (code, body) = svc.get("st-a").await;
    assert_eq!((code, body["ready"].as_bool()), (200, Some(true)), "{body}");
    // An id found nowhere may be in the stopped cluster: 503, not 404.
    assert_eq!(svc.get("st-unknown").await.0, 503);
    assert_eq!(svc.delete("st-unknown").await.0, 503);
    assert_eq!(svc.delete("st-b").await.0, 503);
    // Presence never says "absent" while a cluster that may hold the sandbox cannot answer,
    // and answers for the live cluster.
    let presence = |id: &'static str| {
        let svc = &svc;
        async move {
            svc.call(Method::GET, &format!("/api/sandboxes/{id}/presence"), None)
                .await
        }
    };
    let (code, body) = presence("st-unknown").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("cluster \"b\""),
        "{body}"
    );
    assert_eq!(presence("st-b").await.0, 503);
    let (code, body) = presence("st-a").await;
    assert_eq!((code, &body["exists"]), (200, &json!(true)), "{body}");
    // New sandboxes go to the live cluster, whatever their hash prefers.
    for i in 0..6 {
        let (code, body) = create(&svc, json!({"sandbox_id": format!("st-new-{i}")})).await;
        assert_eq!((code, body["cluster"].as_str()), (200, Some("a")), "{body}");
    }
    let refused = svc
        .http
        .post(svc.url("/api/sandboxes"))
        .json(&json!({"sandbox_id": "st-x", "cluster": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let (code, list) = svc.list().await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["clusters"][0]["reachable"], true);
    assert_eq!(list["clusters"][1]["reachable"], false);
    assert!(list["clusters"][1]["error"].is_string());
    assert!(list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["cluster"] == "a"));
    let (code, ready) = svc.call(Method::GET, "/readyz", None).await;
    assert_eq!(code, 200, "one cluster takes sandboxes: {ready}");
    assert_eq!(ready["clusters"][0]["accepting"], true);
    assert_eq!(ready["clusters"][1]["accepting"], false);
    assert_eq!(ready["clusters"][1]["reachable"], false);
    // The reaper of the live cluster goes on.
    eventually(
        Duration::from_secs(30),
        "st-short to be reaped in a",
        || async {
            let (in_a, _) = (
                ns.a.pods().list(&ListParams::default()).await.ok()?.items,
                (),
            );
            in_a.iter()
                .all(|p| p.metadata.name.as_deref() != Some("sandbox-st-short"))
                .then_some(())
        },
    )
    .await;

    drop(stopped);
    let back = eventually(Duration::from_secs(60), "st-b to answer again", || async {
        let (code, body) = svc.get("st-b").await;
        assert_ne!(code, 404, "{body}");
        (code == 200).then_some(body)
    })
    .await;
    assert_eq!(back["cluster"], "b");
    let (_, list) = svc.list().await;
    assert_eq!(list["clusters"][1]["reachable"], true, "{list}");
    let (code, body) = create(&svc, json!({"sandbox_id": "st-after", "cluster": "b"})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(svc.delete("st-b").await.0, 200);
    assert_eq!(svc.get("st-unknown").await.0, 404);
    let (code, body) = svc
        .call(Method::GET, "/api/sandboxes/st-unknown/presence", None)
        .await;
    assert_eq!((code, &body["exists"]), (200, &json!(false)), "{body}");
}

#[tokio::test]
async fn each_cluster_elects_its_own_leader_and_reaps() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-lead").await;
    let clusters = two_clusters(json!({}), json!({}));
    let args = || {
        let mut args = fleet_args(&ns.a.name, &clusters);
        args.lifecycle.sandbox_leader_lease = "3s".into();
        args.lifecycle.sandbox_reap_interval = "1s".into();
        args
    };
    let replicas = [
        TestService::start(args()).await,
        TestService::start(args()).await,
    ];
    for (id, cluster) in [("ld-a", "a"), ("ld-b", "b")] {
        let (code, body) = create(
            &replicas[0],
            json!({"sandbox_id": id, "cluster": cluster, "ttl_seconds": 5}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    // A Lease in each cluster's namespace, and one leader per cluster among the replicas.
    for (namespace, cluster) in [(&ns.a, "a"), (&ns.b, "b")] {
        let leases: Api<Lease> = Api::namespaced(namespace.client.clone(), &namespace.name);
        eventually(Duration::from_secs(20), "a lease holder", || async {
            let lease = leases.get_opt(LEADER_LEASE).await.ok()??;
            lease.spec?.holder_identity.map(|_| ())
        })
        .await;
        let metric = format!("sandbox_provisioner_leader{{cluster=\"{cluster}\"}}");
        eventually(
            Duration::from_secs(20),
            "one leader per cluster",
            || async {
                let mut leading = 0.0;
                for svc in &replicas {
                    leading += svc.metric(&metric).await;
                }
                (leading == 1.0).then_some(())
            },
        )
        .await;
    }
    // Both clusters' reapers remove their expired sandbox, each counted once under its own
    // cluster. The count follows the deletes of all the sandbox's objects, so it can land a
    // moment after the pods are gone: wait for it rather than read it once.
    eventually(Duration::from_secs(40), "both sandboxes reaped", || async {
        (ns.pods().await == (vec![], vec![])).then_some(())
    })
    .await;
    let replicas = &replicas;
    let reaped = || async {
        join_all(["a", "b"].map(|cluster| async move {
            let metric = format!(
                "sandbox_provisioner_sandbox_deletions_total{{cluster=\"{cluster}\",reason=\"lifetime\"}}"
            );
            let mut total = 0.0;
            for svc in replicas {
                total += svc.metric(&metric).await;
            }
            (cluster, total)
        }))
        .await
        .into_iter()
        .collect::<HashMap<&str, f64>>()
    };
    let expected = HashMap::from([("a", 1.0), ("b", 1.0)]);
    eventually(
        Duration::from_secs(10),
        "each reaping counted once",
        || async { (reaped().await == expected).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn doctor_checks_every_cluster_in_its_own_section() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-doctor").await;
    let file = std::env::temp_dir().join(format!("clusters-{}.yaml", random_suffix()));
    let clusters = json!({"clusters": [
        entry("a", kubeconfig_path(), json!({})),
        entry("b", second_kubeconfig_path(), json!({"weight": 2})),
        // Reachable only through a port nothing listens on: its checks fail, alone.
        entry("c", second_kubeconfig_path(), json!({"api_server": "https://127.0.0.1:1"})),
    ]});
    std::fs::write(&file, serde_json::to_string(&clusters).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"))
        .arg("doctor")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SANDBOX_CLUSTERS", &file)
        .env("K8S_NAMESPACE", &ns.a.name)
        .env("K8S_API_TIMEOUT_SECONDS", "3")
        .env("SKILLS_HOST_PATH", "/srv/skills")
        .env("THREADS_HOST_PATH", "/srv/threads")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    let sections: Vec<&str> = report.split("\n== ").skip(1).collect();
    assert_eq!(sections.len(), 3, "{report}");
    for (section, name) in sections.iter().zip(["a", "b", "c"]) {
        assert!(
            section.starts_with(&format!("cluster {name}: namespace {}", ns.a.name)),
            "{section}"
        );
    }
    for section in &sections[..2] {
        assert!(!section.contains("\nfail  "), "{section}");
        for check in ["apiserver", "rbac create pods", "node ports"] {
            assert!(
                section
                    .lines()
                    .any(|l| l.starts_with("ok    ") && l.contains(check)),
                "{check} not ok in\n{section}"
            );
        }
    }
    assert!(sections[1].contains("weight 2"));
    assert!(
        sections[2]
            .lines()
            .any(|l| l.starts_with("fail  apiserver")),
        "{}",
        sections[2]
    );
    assert!(report.ends_with("1 check(s) failed\n"), "{report}");
    drop(ns.b);
}

/// Applies the shipped ServiceAccount, Role and RoleBinding to `ns`, and the Role and
/// RoleBinding of each of `components` (directories of deploy/kubernetes), and returns a
/// kubeconfig with exactly that account's token.
async fn shipped_role(ns: &TestNamespace, components: &[&str]) -> PathBuf {
    let mut dirs = vec![""];
    dirs.extend_from_slice(components);
    ns.apply_shipped_rbac("", &dirs, "sandbox-provisioner")
        .await
}

#[tokio::test]
async fn the_shipped_role_in_each_cluster_serves_every_fleet_feature() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-role").await;
    let clusters = json!([
        entry("a", shipped_role(&ns.a, &[]).await, json!({})),
        entry(
            "b",
            shipped_role(&ns.b, &[]).await,
            json!({"max_sandboxes": 5})
        ),
    ]);
    let mut args = fleet_args(&ns.a.name, &clusters);
    args.lifecycle.sandbox_leader_lease = "3s".into();
    let svc = TestService::start(args).await;
    for (id, cluster) in [("r-a", "a"), ("r-b", "b")] {
        let (code, body) = create(
            &svc,
            json!({"sandbox_id": id, "cluster": cluster, "wait_ready_seconds": 20}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            (body["cluster"].as_str(), body["ready"].as_bool()),
            (Some(cluster), Some(true)),
            "{body}"
        );
        let (code, kept) = svc
            .call(
                Method::POST,
                &format!("/api/sandboxes/{id}/keepalive"),
                None,
            )
            .await;
        assert_eq!(
            (code, kept["cluster"].as_str()),
            (200, Some(cluster)),
            "{kept}"
        );
    }
    let (code, list) = svc.list().await;
    assert_eq!((code, list["count"].as_u64()), (200, Some(2)), "{list}");
    for cluster in ["a", "b"] {
        let metric = format!("sandbox_provisioner_leader{{cluster=\"{cluster}\"}}");
        eventually(
            Duration::from_secs(20),
            "the lease in each cluster",
            || async { (svc.metric(&metric).await == 1.0).then_some(()) },
        )
        .await;
    }
    let (code, ready) = svc.call(Method::GET, "/readyz", None).await;
    assert_eq!(code, 200, "{ready}");
    for cluster in ready["clusters"].as_array().unwrap() {
        assert_eq!(cluster["accepting"], true, "{cluster}");
        assert_eq!(cluster["cache"], "synced", "{cluster}");
        assert!(cluster.get("missing_permissions").is_none(), "{cluster}");
    }
    let (_, caps) = svc.call(Method::GET, "/api/capabilities", None).await;
    assert_eq!(caps["clusters"][1]["sandboxes"], 1, "{caps}");
    // Suspend and resume in the second cluster: its record is kept there, and the sandbox
    // comes back there.
    let (code, suspended) = svc
        .call(Method::POST, "/api/sandboxes/r-b/suspend", None)
        .await;
    assert_eq!(
        (code, &suspended["cluster"]),
        (200, &json!("b")),
        "{suspended}"
    );
    let records = |ns: &TestNamespace| {
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ns.client.clone(), &ns.name)
    };
    assert!(records(&ns.b)
        .get_opt("sandbox-r-b")
        .await
        .unwrap()
        .is_some());
    assert!(records(&ns.a)
        .get_opt("sandbox-r-b")
        .await
        .unwrap()
        .is_none());
    let (_, got) = svc.get("r-b").await;
    assert_eq!(
        (&got["status"], &got["cluster"]),
        (&json!("Suspended"), &json!("b"))
    );
    let (code, resumed) = svc
        .call(
            Method::POST,
            "/api/sandboxes/r-b/resume?wait_ready=20",
            None,
        )
        .await;
    assert_eq!(code, 200, "{resumed}");
    assert_eq!(
        (&resumed["cluster"], &resumed["ready"]),
        (&json!("b"), &json!(true))
    );
    assert_eq!(ns.pods().await.1, vec!["r-b".to_string()]);
    for id in ["r-a", "r-b"] {
        assert_eq!(svc.delete(id).await.0, 200);
        assert_eq!(svc.get(id).await.0, 404);
    }
    assert_eq!(ns.pods().await, (vec![], vec![]));
}

#[tokio::test]
async fn quotas_count_every_cluster_and_tenants_keep_to_their_clusters() {
    use sandbox_provisioner::admission::hex_digest;
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-quota").await;
    let (key_a, key_b) = ("fleet-tenant-a-0123456789", "fleet-tenant-b-0123456789");
    let tenants = std::env::temp_dir().join(format!("tenants-{}.yaml", random_suffix()));
    let file = json!({"tenants": [
        {"name": "team-a", "api_key_sha256": hex_digest(key_a), "max_sandboxes": 2},
        {"name": "team-b", "api_key_sha256": hex_digest(key_b), "clusters": ["b"]},
    ]});
    std::fs::write(&tenants, file.to_string()).unwrap();
    let mut args = fleet_args(&ns.a.name, &two_clusters(json!({}), json!({})));
    args.http.allow_no_api_key = false;
    args.tenancy.tenants = Some(tenants);
    let svc = TestService::start(args).await;
    let create_as = |key: &'static str, body: Value| {
        let req = svc
            .http
            .post(svc.url("/api/sandboxes"))
            .header("x-api-key", key)
            .json(&body);
        TestService::answer(req)
    };
    for (id, cluster) in [("q-1", "a"), ("q-2", "b")] {
        let (code, body) = create_as(key_a, json!({"sandbox_id": id, "cluster": cluster})).await;
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = create_as(key_a, json!({"sandbox_id": "q-3"})).await;
    assert_eq!(code, 429, "one in each cluster is the tenant's two: {body}");
    let (code, body) = create_as(key_b, json!({"sandbox_id": "q-4", "cluster": "a"})).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("may not use cluster \"a\""),
        "{body}"
    );
    for i in 0..4 {
        let (code, body) = create_as(key_b, json!({"sandbox_id": format!("q-b-{i}")})).await;
        assert_eq!((code, body["cluster"].as_str()), (200, Some("b")), "{body}");
    }
    let (in_a, in_b) = ns.pods().await;
    assert_eq!(in_a, ["q-1"]);
    assert_eq!(in_b.len(), 5);
}

#[tokio::test]
async fn an_outage_is_logged_once_not_on_every_list() {
    let ns = TestNamespace::new("fleet-quiet").await;
    // Cluster b points at a port nobody listens on: unreachable from the start.
    let clusters = json!([
        entry("a", kubeconfig_path(), json!({})),
        entry(
            "b",
            kubeconfig_path(),
            json!({"api_server": format!("https://127.0.0.1:{}", testkit::free_port())})
        ),
    ]);
    let path = std::env::temp_dir().join(format!("clusters-{}.yaml", random_suffix()));
    std::fs::write(&path, json!({"clusters": clusters}).to_string()).unwrap();
    let mut running = testkit::RunningBinary::start(&[
        ("SANDBOX_CLUSTERS", path.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
    ])
    .await;
    let http = reqwest::Client::new();
    let list = || async {
        let answer = http
            .get(format!("{}/api/sandboxes", running.base))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        answer.json::<Value>().await.unwrap()
    };
    // Wait through capabilities (no LIST) until the probe has marked b unreachable.
    eventually(
        Duration::from_secs(15),
        "b to be marked unreachable",
        || async {
            let caps: Value = http
                .get(format!("{}/api/capabilities", running.base))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (caps["clusters"][1]["reachable"] == false).then_some(())
        },
    )
    .await;
    let listed = list().await;
    assert_eq!(listed["clusters"][0]["reachable"], true, "{listed}");
    let error = listed["clusters"][1]["error"].as_str().unwrap_or_default();
    assert!(error.contains("Connection refused"), "{listed}");
    for _ in 0..10 {
        list().await;
    }
    running.sigterm();
    let (_, log) = running.wait_exit(Duration::from_secs(15)).await;
    std::fs::remove_file(path).unwrap();
    let outage = log.matches("cluster unreachable").count();
    assert_eq!(outage, 1, "the outage is logged once:\n{log}");
    assert!(
        !log.contains("cannot list a cluster's sandboxes"),
        "LIST repeats the outage:\n{log}"
    );
}

/// Requests cluster `ns` answered through its service proxy, from its apiserver's metrics.
async fn proxied_requests(ns: &TestNamespace) -> u64 {
    let page = ns
        .client
        .request_text(http::Request::get("/metrics").body(vec![]).unwrap())
        .await
        .unwrap();
    page.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(r#"resource="services""#)
                && l.contains(r#"subresource="proxy""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn the_gateway_reaches_a_sandbox_in_the_second_cluster_through_its_apiserver() {
    let _shared = SECOND_CLUSTER.read().await;
    let ns = Both::new("fleet-reach").await;
    // Exactly the shipped Roles: in the second cluster with the apiserver-reach component.
    let clusters = json!([
        entry("a", shipped_role(&ns.a, &[]).await, json!({})),
        entry(
            "b",
            shipped_role(&ns.b, &["apiserver-reach"]).await,
            json!({"reach": "apiserver"})
        ),
    ]);
    let mut args = fleet_args(&ns.a.name, &clusters);
    testkit::gateway_mode(&mut args);
    args.sandbox.sandbox_service_type = "ClusterIP".into();
    let public = args.gateway.public_url.clone().unwrap();
    let svc = TestService::start(args).await;
    let (code, created) = create(
        &svc,
        json!({"sandbox_id": "reach-b", "cluster": "b", "wait_ready_seconds": 20}),
    )
    .await;
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["cluster"], "b", "{created}");
    let url = created["sandbox_url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{public}/sandboxes/reach-b/")));

    // The simulated Pod's address and port, where the sandbox's server listens.
    let pod = ns.b.pods().get("sandbox-reach-b").await.unwrap();
    let ip: std::net::IpAddr = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .expect("a pod IP")
        .parse()
        .unwrap();
    assert!(
        !ip.is_loopback(),
        "the second cluster's pods report {ip}, which the apiserver's proxy refuses: start it \
         with scripts/second-cluster, which gives them a non-loopback address (as root)"
    );
    let container_port = pod.spec.as_ref().unwrap().containers[0]
        .ports
        .as_ref()
        .unwrap()[0]
        .container_port as u16;
    let listener = tokio::net::TcpListener::bind((ip, container_port))
        .await
        .unwrap_or_else(|e| panic!("serving the sandbox at {ip}:{container_port}: {e}"));
    let home = std::env::temp_dir().join(format!("reach-home-{}", random_suffix()));
    std::fs::create_dir_all(&home).unwrap();
    let settings = sandbox_image::Settings {
        api_key: None,
        max_shell_sessions: 4,
        home_dir: home.clone(),
        run_as: None,
        identity: sandbox_image::Identity {
            sandbox_id: Some("reach-b".into()),
            ..Default::default()
        },
    };
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        sandbox_image::router(settings),
    )));

    let before = proxied_requests(&ns.b).await;
    let http = crate::real_node::http_client();
    // The Service's endpoints follow readiness a moment later: until then the apiserver
    // answers 503, which the caller retries as DeerFlow's client does.
    let context = eventually(
        Duration::from_secs(30),
        "an answer through the second cluster's apiserver",
        || async {
            let response = http.get(format!("{url}/v1/sandbox")).send().await.ok()?;
            if response.status() != 200 {
                return None;
            }
            response.json::<Value>().await.ok()
        },
    )
    .await;
    assert_eq!(context["home_dir"], home.display().to_string(), "{context}");
    let identity = testkit::json_answer(http.get(format!("{url}/test/identity"))).await;
    assert_eq!(identity["data"]["sandbox_id"], "reach-b", "{identity}");
    let (out, code) = crate::real_node::exec(&http, &url, "echo across-clusters").await;
    assert_eq!((out.trim(), code), ("across-clusters", 0));
    let file = home.join("note.txt").display().to_string();
    testkit::json_answer(
        http.post(format!("{url}/v1/file/write"))
            .json(&json!({"file": file, "content": "via the apiserver"})),
    )
    .await;
    let read = testkit::json_answer(
        http.post(format!("{url}/v1/file/read"))
            .json(&json!({"file": file})),
    )
    .await;
    assert_eq!(read["data"]["content"], "via the apiserver", "{read}");
    // Each of those went through the second cluster's service proxy, not to the address.
    let proxied = proxied_requests(&ns.b).await - before;
    assert!(proxied >= 5, "{proxied} requests through the service proxy");

    let (code, _) = svc
        .call(Method::DELETE, "/api/sandboxes/reach-b", None)
        .await;
    assert_eq!(code, 200);
    let gone = http.get(format!("{url}/v1/sandbox")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    server.abort();
    std::fs::remove_dir_all(home).ok();
}
