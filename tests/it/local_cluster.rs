//! The local test ground behaves like a cluster: the real apiserver validates and allocates,
//! the garbage collector cascades, and the node simulator plays kubelet and kube-proxy.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    api::{DeleteParams, PostParams},
    Api,
};
use serde_json::json;
use testkit::{eventually, json_answer, TestNamespace};

const MODE: &str = "node-sim.sandbox-provisioner.dev/mode";
const DELAY: &str = "node-sim.sandbox-provisioner.dev/start-delay-ms";

fn pod(name: &str, annotations: serde_json::Value, host_path: Option<&str>) -> Pod {
    let mut spec = json!({
        "containers": [{"name": "sandbox", "image": "sandbox:test", "ports": [{"containerPort": 8080}]}],
    });
    if let Some(path) = host_path {
        spec["volumes"] =
            json!([{"name": "data", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}]);
        spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

/// The pod with a readiness probe every second.
fn with_readiness_probe(mut p: Pod) -> Pod {
    p.spec.as_mut().unwrap().containers[0].readiness_probe = Some(
        serde_json::from_value(
            json!({"httpGet": {"path": "/v1/sandbox", "port": 8080}, "periodSeconds": 1}),
        )
        .unwrap(),
    );
    p
}

fn node_port_service(name: &str, selector_app: &str, owner: Option<&Pod>) -> Service {
    let mut svc = json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": selector_app}, "ports": [{"port": 8080, "targetPort": 8080}]},
    });
    if let Some(p) = owner {
        svc["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "v1", "kind": "Pod",
            "name": p.metadata.name, "uid": p.metadata.uid,
        }]);
    }
    serde_json::from_value(svc).unwrap()
}

async fn wait_for_pod(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    check: impl Fn(&Pod) -> bool,
) -> Pod {
    eventually(Duration::from_secs(30), what, || async {
        pods.get_opt(name).await.ok().flatten().filter(|p| check(p))
    })
    .await
}

fn condition(p: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn is_ready(p: &Pod) -> bool {
    condition(p, "Ready").is_some_and(|(s, _)| s == "True")
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[tokio::test]
async fn apiserver_rejects_a_host_path_with_dotdot() {
    let ns = TestNamespace::new("hostpath").await;
    let err = ns
        .pods()
        .create(
            &PostParams::default(),
            &pod("bad", json!({}), Some("/srv/threads/../../etc")),
        )
        .await
        .expect_err("a hostPath with '..' must be refused");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains(".."), "{}", status.message);
        }
        other => panic!("expected a 422 from the apiserver, got {other}"),
    }
    assert!(ns.leftovers().await.is_empty());
}

#[tokio::test]
async fn nodeport_service_gets_a_port_in_range() {
    let ns = TestNamespace::new("nodeport").await;
    let svc = ns
        .services()
        .create(
            &PostParams::default(),
            &node_port_service("np", "none", None),
        )
        .await
        .unwrap();
    let port = svc.spec.unwrap().ports.unwrap()[0]
        .node_port
        .expect("a node port is allocated in the create reply");
    assert!((30000..=32767).contains(&port), "{port}");
}

#[tokio::test]
async fn simulated_pod_becomes_ready_and_its_stub_answers() {
    let ns = TestNamespace::new("ready").await;
    let pods = ns.pods();
    pods.create(&PostParams::default(), &pod("web", json!({}), None))
        .await
        .unwrap();
    let svc = ns
        .services()
        .create(
            &PostParams::default(),
            &node_port_service("web", "web", None),
        )
        .await
        .unwrap();
    let port = svc.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    let p = wait_for_pod(&pods, "web", "pod Ready", is_ready).await;
    let status = p.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("local-node"));
    for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let conditions = status.conditions.as_ref().unwrap();
        assert!(
            conditions
                .iter()
                .any(|x| x.type_ == c && x.status == "True"),
            "{c} must be True"
        );
    }
    let cs = &status.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.started == Some(true) && cs.state.as_ref().unwrap().running.is_some());

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let info: serde_json::Value =
        eventually(Duration::from_secs(10), "the stub to answer", || async {
            let r = http.get(format!("{url}/v1/sandbox")).send().await.ok()?;
            (r.status() == 200).then_some(r.json().await.ok()?)
        })
        .await;
    assert_eq!(info["namespace"], ns.name.as_str());
    let exec: serde_json::Value = json_answer(
        http.post(format!("{url}/v1/shell/exec"))
            .json(&json!({"command": "echo hello"})),
    )
    .await;
    assert_eq!(exec["data"]["output"], "hello\n");
}

#[tokio::test]
async fn deleting_a_pod_removes_it_and_cascades_to_its_service() {
    let ns = TestNamespace::new("cascade").await;
    let pods = ns.pods();
    let created = pods
        .create(&PostParams::default(), &pod("owner", json!({}), None))
        .await
        .unwrap();
    let svc = ns
        .services()
        .create(
            &PostParams::default(),
            &node_port_service("owned", "owner", Some(&created)),
        )
        .await
        .unwrap();
    let port = svc.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    wait_for_pod(&pods, "owner", "pod Ready", is_ready).await;
    // A normal (graceful) delete: the simulated kubelet finishes it.
    pods.delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the pod to be gone", || async {
        pods.get_opt("owner").await.unwrap().is_none().then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "the garbage collector to remove the owned service",
        || async {
            ns.services()
                .get_opt("owned")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the node port to close",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn image_pull_failure_is_reported() {
    let ns = TestNamespace::new("pull").await;
    let pods = ns.pods();
    pods.create(
        &PostParams::default(),
        &pod("p", json!({MODE: "image-pull-failure"}), None),
    )
    .await
    .unwrap();
    let p = wait_for_pod(&pods, "p", "ImagePullBackOff", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert!(!is_ready(&p));
}

#[tokio::test]
async fn crash_loop_is_reported_with_rising_restarts() {
    let ns = TestNamespace::new("crash").await;
    let pods = ns.pods();
    pods.create(
        &PostParams::default(),
        &pod("p", json!({MODE: "crash-loop"}), None),
    )
    .await
    .unwrap();
    let restarts = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c[0].restart_count)
    };
    let first = wait_for_pod(&pods, "p", "CrashLoopBackOff", |p| {
        waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let seen = restarts(&first);
    assert!(seen >= 1);
    wait_for_pod(&pods, "p", "the restart count to rise", |p| {
        restarts(p) > seen
    })
    .await;
    assert!(!is_ready(&first));
}

#[tokio::test]
async fn never_ready_pod_runs_but_is_not_ready() {
    let ns = TestNamespace::new("never").await;
    let pods = ns.pods();
    // The kubelet knows a container is not ready only from a probe.
    pods.create(
        &PostParams::default(),
        &with_readiness_probe(pod("p", json!({MODE: "never-ready"}), None)),
    )
    .await
    .unwrap();
    let p = wait_for_pod(&pods, "p", "phase Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    assert_eq!(
        condition(&p, "Ready"),
        Some(("False".into(), Some("ContainersNotReady".into())))
    );
}

#[tokio::test]
async fn unschedulable_pod_stays_pending() {
    let ns = TestNamespace::new("unsched").await;
    let pods = ns.pods();
    pods.create(
        &PostParams::default(),
        &pod("p", json!({MODE: "unschedulable"}), None),
    )
    .await
    .unwrap();
    let p = wait_for_pod(&pods, "p", "PodScheduled=False", |p| {
        condition(p, "PodScheduled").is_some()
    })
    .await;
    assert_eq!(
        condition(&p, "PodScheduled"),
        Some(("False".into(), Some("Unschedulable".into())))
    );
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        p.spec.unwrap().node_name,
        None,
        "an unschedulable pod is never bound"
    );
}

#[tokio::test]
async fn start_delay_postpones_readiness() {
    let ns = TestNamespace::new("delay").await;
    let pods = ns.pods();
    // The delay is the boot: the kubelet sees it end at the next readiness probe.
    pods.create(
        &PostParams::default(),
        &with_readiness_probe(pod("p", json!({DELAY: "2500"}), None)),
    )
    .await
    .unwrap();
    let bound = wait_for_pod(&pods, "p", "the pod to be bound", |p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
    })
    .await;
    let p = wait_for_pod(&pods, "p", "pod Ready", is_ready).await;
    let created = bound.metadata.creation_timestamp.unwrap().0;
    let ready_at = p
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .last_transition_time
        .unwrap()
        .0;
    let waited = ready_at.duration_since(created).as_secs_f64();
    // Timestamps have one-second resolution: 2.5 s of delay shows as at least 2 s.
    assert!(
        waited >= 2.0,
        "ready {waited}s after creation, expected the 2.5 s delay"
    );
}

#[tokio::test]
async fn a_namespace_holding_a_claim_is_deleted_completely() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let ns = TestNamespace::new("claim-gone").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    let created = claims.create(&PostParams::default(), &claim).await.unwrap();
    // The apiserver protects every claim with a finalizer that only a controller removes.
    assert!(created
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&"kubernetes.io/pvc-protection".to_string()));
    ns.delete_and_wait("the namespace and its claim to be gone")
        .await;
}

/// A pod whose one container has these probes (JSON, on `GET /v1/sandbox :8080`) and image.
fn probed_pod(name: &str, image: &str, probes: serde_json::Value) -> Pod {
    let mut container =
        json!({"name": "sandbox", "image": image, "imagePullPolicy": "IfNotPresent"});
    for (kind, timing) in probes.as_object().unwrap() {
        let mut probe = json!({"httpGet": {"path": "/v1/sandbox", "port": 8080}});
        probe
            .as_object_mut()
            .unwrap()
            .extend(timing.as_object().unwrap().clone());
        container[kind] = probe;
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container]},
    }))
    .unwrap()
}

fn deerflow_probes() -> serde_json::Value {
    json!({
        "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
    })
}

/// Creates the pods at once and returns, for each, the seconds from its creation until it was
/// first seen Ready (polled every 50 ms, for at most `limit`).
async fn seconds_to_ready(pods: &Api<Pod>, wanted: Vec<Pod>, limit: Duration) -> Vec<f64> {
    let mut created = Vec::new();
    for p in wanted {
        let name = p.metadata.name.clone().unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
        created.push((name, std::time::Instant::now()));
    }
    let mut ready: Vec<Option<f64>> = vec![None; created.len()];
    let deadline = std::time::Instant::now() + limit;
    while ready.iter().any(Option::is_none) && std::time::Instant::now() < deadline {
        for (i, (name, at)) in created.iter().enumerate() {
            if ready[i].is_none() && pods.get(name).await.is_ok_and(|p| is_ready(&p)) {
                ready[i] = Some(at.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ready
        .into_iter()
        .zip(created)
        .map(|(r, (name, _))| r.unwrap_or_else(|| panic!("{name} was not Ready within {limit:?}")))
        .collect()
}

#[tokio::test]
async fn deerflows_probes_make_a_sandbox_wait_for_the_readiness_ticker() {
    // Measures the simulated kubelet's timing: nothing else loads the machine meanwhile.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("probes-deerflow").await;
    let pods = ns.pods();
    let times = seconds_to_ready(
        &pods,
        vec![
            probed_pod("boot-1000", "sandbox:sim-delay-1000", deerflow_probes()),
            probed_pod("boot-5100", "sandbox:sim-delay-5100", deerflow_probes()),
        ],
        Duration::from_secs(30),
    )
    .await;
    // Booted after 1 s, seen at the first probe 5 s after the start; booted after 5.1 s,
    // missed by that probe and seen by the next, at 10 s. (The clock starts when the create
    // returns, which may be a moment after the simulator admitted the pod: 0.1 s of slack
    // below; the upper bounds leave room for a loaded machine.)
    assert!(
        (4.9..7.5).contains(&times[0]),
        "a 1 s boot was Ready after {:.2} s",
        times[0]
    );
    assert!(
        (9.9..12.5).contains(&times[1]),
        "a 5.1 s boot was Ready after {:.2} s",
        times[1]
    );
}

#[tokio::test]
async fn a_startup_probe_makes_ready_follow_the_boot() {
    // Measures the simulated kubelet's timing: nothing else loads the machine meanwhile.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("probes-startup").await;
    let probes = json!({
        "startupProbe": {"periodSeconds": 1, "failureThreshold": 120, "timeoutSeconds": 3},
        "readinessProbe": {"periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
    });
    let times = seconds_to_ready(
        &ns.pods(),
        vec![
            probed_pod("boot-1000", "sandbox:sim-delay-1000", probes.clone()),
            probed_pod("boot-2300", "sandbox:sim-delay-2300", probes),
        ],
        Duration::from_secs(30),
    )
    .await;
    // The startup probe runs every second: Ready at the first whole second after the boot.
    assert!(
        (0.9..2.5).contains(&times[0]),
        "a 1 s boot was Ready after {:.2} s",
        times[0]
    );
    assert!(
        (2.9..4.5).contains(&times[1]),
        "a 2.3 s boot was Ready after {:.2} s",
        times[1]
    );
}

#[tokio::test]
async fn an_absent_image_is_pulled_once_then_listed_on_the_node() {
    // Measures the simulated kubelet's timing: nothing else loads the machine meanwhile.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("pull").await;
    let pods = ns.pods();
    let image = format!("pull-{}:sim-pull-3000", testkit::random_suffix());
    let first = probed_pod("first", &image, json!({}));
    pods.create(&PostParams::default(), &first).await.unwrap();
    let pulling = wait_for_pod(&pods, "first", "the pull to be reported", |p| {
        waiting_reason(p).is_some()
    })
    .await;
    assert_eq!(
        waiting_reason(&pulling).as_deref(),
        Some("ContainerCreating")
    );
    let times = seconds_to_ready(
        &pods,
        vec![probed_pod("second", &image, json!({}))],
        Duration::from_secs(30),
    )
    .await;
    // The second pod waits for the first one's pull (3 s), not for a pull of its own.
    assert!((1.0..4.5).contains(&times[0]), "{:.2} s", times[0]);
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(ns.client.clone());
    let listed = eventually(
        Duration::from_secs(10),
        "the node to list the image",
        || async {
            let node = nodes.get("local-node").await.ok()?;
            let names: Vec<String> = node
                .status?
                .images?
                .into_iter()
                .flat_map(|i| i.names.unwrap_or_default())
                .collect();
            names
                .contains(&format!("docker.io/library/{image}"))
                .then_some(names)
        },
    )
    .await;
    assert!(listed.contains(&image), "{listed:?}");
    // Now present: a third pod starts without pulling.
    let times = seconds_to_ready(
        &pods,
        vec![probed_pod("third", &image, json!({}))],
        Duration::from_secs(30),
    )
    .await;
    assert!(times[0] < 1.5, "a present image took {:.2} s", times[0]);
}

#[tokio::test]
async fn pull_policy_never_refuses_an_absent_image() {
    let ns = TestNamespace::new("never-pull").await;
    let pods = ns.pods();
    let mut p = probed_pod(
        "p",
        &format!("absent-{}:1", testkit::random_suffix()),
        json!({}),
    );
    p.spec.as_mut().unwrap().containers[0].image_pull_policy = Some("Never".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    let p = wait_for_pod(&pods, "p", "ErrImageNeverPull", |p| {
        waiting_reason(p).as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    assert!(!is_ready(&p));
}
