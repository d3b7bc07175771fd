//! Expiry against the real apiserver with short timers: lifetime, idle (with and without
//! keepalive), never-ready, and activity that survives a restart.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use reqwest::Method;
use sandbox_provisioner::{k8s::manifests, spec::keys::LEADER_LEASE};
use serde_json::json;
use testkit::{eventually, serve_args, TestNamespace, TestService, LEADER};

/// Waits until `svc` leads (or follows, with `leads` false).
async fn leadership(svc: &TestService, leads: bool, limit: Duration, what: &str) {
    let wanted = if leads { 1.0 } else { 0.0 };
    eventually(limit, what, || async {
        (svc.metric(LEADER).await == wanted).then_some(())
    })
    .await;
}

/// Reclaim lag the issue promises: the reap interval plus 5 s.
const LAG: Duration = Duration::from_secs(1 + 5);

async fn pod_exists(ns: &TestNamespace, id: &str) -> bool {
    ns.pods()
        .get_opt(&manifests::pod_name(id))
        .await
        .unwrap()
        .is_some()
}

async fn gone_within(ns: &TestNamespace, id: &str, limit: Duration) {
    eventually(limit, &format!("{id} to be removed"), || async {
        (!pod_exists(ns, id).await).then_some(())
    })
    .await;
}

fn fast(ns: &TestNamespace) -> sandbox_provisioner::config::ServeArgs {
    let mut args = serve_args(&ns.name);
    args.lifecycle.sandbox_reap_interval = "1s".into();
    args.lifecycle.sandbox_ready_timeout = "0".into();
    // With the election on (the default) idle deadlines include this interval.
    args.lifecycle.sandbox_activity_persist_interval = "1s".into();
    args
}

#[tokio::test]
async fn lifetime_removes_exactly_the_expired_sandbox() {
    let ns = TestNamespace::new("lifetime").await;
    let svc = TestService::start(fast(&ns)).await;
    let (code, short) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "lt-1", "thread_id": "t", "ttl_seconds": 2})),
        )
        .await;
    assert_eq!(code, 200, "{short}");
    let created: Timestamp = short["created_at"].as_str().unwrap().parse().unwrap();
    let expires: Timestamp = short["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(created).as_secs(), 2);
    for too_long in [31_536_001u64, 4_000_000_000] {
        let (code, body) = svc
            .call(
                Method::POST,
                "/api/sandboxes",
                Some(json!({"sandbox_id": "lt-bad", "thread_id": "t", "ttl_seconds": too_long})),
            )
            .await;
        assert_eq!(code, 422, "{body}");
    }
    let (_, kept) = svc.create("keep-1", "t").await;
    assert!(kept["expires_at"].is_null(), "{kept}");

    gone_within(&ns, "lt-1", Duration::from_secs(2) + LAG).await;
    assert_eq!(svc.get("lt-1").await.0, 404);
    assert!(
        pod_exists(&ns, "keep-1").await,
        "a sandbox without a lifetime stays"
    );
    // Counted once the reaper's delete has returned (the pod may vanish a moment earlier).
    eventually(
        Duration::from_secs(5),
        "the lifetime deletion to be counted",
        || async {
            (svc.metric(r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="lifetime"}"#)
                .await
                == 1.0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn idle_sandboxes_go_and_kept_alive_ones_stay() {
    let ns = TestNamespace::new("idle").await;
    let mut args = fast(&ns);
    args.lifecycle.sandbox_idle_timeout = "3s".into();
    let svc = TestService::start(args).await;
    assert_eq!(svc.create("idle-1", "t").await.0, 200);
    assert_eq!(svc.create("busy-1", "t").await.0, 200);
    assert_eq!(svc.create("read-1", "t").await.0, 200);
    // busy-1 gets keepalives, read-1 gets GETs, idle-1 nothing, for twice the idle timeout.
    let started = std::time::Instant::now();
    let mut last_expiry = String::new();
    while started.elapsed() < Duration::from_secs(6) {
        let (code, body) = svc
            .call(Method::POST, "/api/sandboxes/busy-1/keepalive", None)
            .await;
        assert_eq!(code, 200, "{body}");
        last_expiry = body["expires_at"].as_str().unwrap().to_string();
        assert_eq!(svc.get("read-1").await.0, 200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        !pod_exists(&ns, "idle-1").await,
        "idle-1 was idle for 6 s with a 3 s timeout"
    );
    assert!(
        pod_exists(&ns, "busy-1").await && pod_exists(&ns, "read-1").await,
        "activity keeps sandboxes"
    );
    let expiry: Timestamp = last_expiry.parse().unwrap();
    assert!(
        expiry > Timestamp::now(),
        "keepalive moves the deadline ahead"
    );
    // Once left alone, they go too.
    gone_within(&ns, "busy-1", Duration::from_secs(3) + LAG).await;
    gone_within(&ns, "read-1", Duration::from_secs(3) + LAG).await;
    assert_eq!(
        svc.call(Method::POST, "/api/sandboxes/busy-1/keepalive", None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn never_ready_sandboxes_are_removed_and_ready_ones_are_not() {
    let ns = TestNamespace::new("neverready").await;
    let with_image = |image: &str| {
        let mut args = fast(&ns);
        args.lifecycle.sandbox_ready_timeout = "2s".into();
        args.sandbox.sandbox_image = image.into();
        args
    };
    let ready = TestService::start(with_image("sandbox:test")).await;
    let never = TestService::start(with_image("sandbox:sim-never-ready")).await;
    let pull = TestService::start(with_image("sandbox:sim-image-pull-failure")).await;
    assert_eq!(ready.create("ok-1", "t").await.0, 200);
    assert_eq!(never.create("nr-1", "t").await.0, 200);
    assert_eq!(pull.create("pull-1", "t").await.0, 200);
    gone_within(&ns, "nr-1", Duration::from_secs(2) + LAG).await;
    gone_within(&ns, "pull-1", Duration::from_secs(2) + LAG).await;
    assert!(
        pod_exists(&ns, "ok-1").await,
        "a ready sandbox is not touched by the ready timeout"
    );
    let counted = || async {
        let mut removed = 0.0;
        for svc in [&ready, &never, &pull] {
            removed += svc
                .metric(r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="never-ready"}"#)
                .await;
        }
        removed
    };
    eventually(
        Duration::from_secs(5),
        "never-ready deletions to be counted",
        || async { (counted().await >= 2.0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn activity_is_written_to_the_pod_and_survives_a_restart() {
    let ns = TestNamespace::new("activity").await;
    let mut args = fast(&ns);
    args.lifecycle.sandbox_idle_timeout = "10m".into();
    args.lifecycle.sandbox_activity_persist_interval = "0".into();
    let first = TestService::start(args.clone()).await;
    assert_eq!(first.create("act-1", "t").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, seen) = first.get("act-1").await;
    let seen_expiry: Timestamp = seen["expires_at"].as_str().unwrap().parse().unwrap();
    let activity = seen_expiry
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(600))
        .unwrap();
    // The GET's activity is written to the pod in the background.
    let recorded = eventually(
        Duration::from_secs(10),
        "the GET's activity on the pod",
        || async {
            let pod = ns.pods().get("sandbox-act-1").await.ok()?;
            let value = pod
                .metadata
                .annotations?
                .get(manifests::ACTIVITY_ANNOTATION)
                .cloned()?;
            (value.parse::<Timestamp>().ok()? == activity).then_some(value)
        },
    )
    .await;
    drop(first);

    let second = TestService::start(args).await;
    let (code, body) = second.call(Method::GET, "/api/sandboxes", None).await;
    assert_eq!(code, 200);
    let listed = body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sandbox_id"] == "act-1")
        .unwrap()
        .clone();
    let recorded: Timestamp = recorded.parse().unwrap();
    let expires: Timestamp = listed["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires.duration_since(recorded).as_secs(), 600, "{listed}");
    assert_eq!(
        listed["expires_at"], seen["expires_at"],
        "a new process sees the deadline the old one computed"
    );
}

#[tokio::test]
async fn orphans_are_repaired_or_removed() {
    use k8s_openapi::api::core::v1::Service;
    let ns = TestNamespace::new("orphans").await;
    let mut args = fast(&ns);
    args.lifecycle.sandbox_orphan_grace = "1s".into();
    let svc = TestService::start(args).await;

    // A pod whose Service vanished gets it back.
    assert_eq!(svc.create("orph-1", "t").await.0, 200);
    ns.services()
        .delete("sandbox-orph-1-svc", &Default::default())
        .await
        .unwrap();
    let pod = ns.pods().get("sandbox-orph-1").await.unwrap();
    eventually(
        Duration::from_secs(1) + LAG,
        "the Service to be restored",
        || async {
            let s = ns.services().get_opt("sandbox-orph-1-svc").await.unwrap()?;
            let owner = s.metadata.owner_references?.first()?.uid.clone();
            (Some(owner) == pod.metadata.uid).then_some(())
        },
    )
    .await;

    // A managed Service without any pod is removed.
    let ghost: Service = serde_json::from_value(json!({
        "metadata": {"name": "sandbox-ghost-svc", "labels": {
            "app": "deer-flow-sandbox", "sandbox-id": "ghost", "app.kubernetes.io/managed-by": "sandbox-provisioner"}},
        "spec": {"type": "NodePort", "selector": {"sandbox-id": "ghost"}, "ports": [{"name": "http", "port": 8080}]},
    }))
    .unwrap();
    ns.services()
        .create(&Default::default(), &ghost)
        .await
        .unwrap();
    // An unmanaged Service is never touched.
    let stranger: Service = serde_json::from_value(json!({
        "metadata": {"name": "stranger", "labels": {"app": "deer-flow-sandbox", "sandbox-id": "stranger"}},
        "spec": {"selector": {"x": "y"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    ns.services()
        .create(&Default::default(), &stranger)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(1) + LAG,
        "the orphaned Service to be removed",
        || async {
            ns.services()
                .get_opt("sandbox-ghost-svc")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    // A sandbox whose pod ended is removed instead of being reported forever.
    assert_eq!(svc.create("orph-3", "t").await.0, 200);
    // Once the simulated kubelet has reported it running, the pod "ends".
    eventually(Duration::from_secs(30), "orph-3 ready", || async {
        (svc.get("orph-3").await.1["ready"] == true).then_some(())
    })
    .await;
    let failed =
        json!({"status": {"phase": "Failed", "reason": "Evicted", "message": "simulated"}});
    ns.pods()
        .patch_status(
            "sandbox-orph-3",
            &Default::default(),
            &kube::api::Patch::Merge(&failed),
        )
        .await
        .unwrap();
    gone_within(&ns, "orph-3", LAG).await;

    assert!(
        ns.services().get_opt("stranger").await.unwrap().is_some(),
        "unmanaged objects stay"
    );
    assert!(pod_exists(&ns, "orph-1").await);
    // The ghost Service and the ended sandbox, counted as orphans.
    eventually(
        Duration::from_secs(5),
        "two orphan deletions to be counted",
        || async {
            let orphans = svc
                .metric(r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="orphan"}"#)
                .await;
            (orphans >= 2.0).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_lost_network_policy_is_put_back() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = TestNamespace::new("orphan-netpol").await;
    let mut args = fast(&ns);
    args.lifecycle.sandbox_orphan_grace = "1s".into();
    args.security.sandbox_network_policy = "isolated".into();
    let svc = TestService::start(args).await;
    let policies: kube::Api<NetworkPolicy> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    assert_eq!(svc.create("np-1", "t").await.0, 200);
    let first = policies.get("sandbox-np-1-netpol").await.unwrap();
    policies
        .delete("sandbox-np-1-netpol", &Default::default())
        .await
        .unwrap();
    let pod = ns.pods().get("sandbox-np-1").await.unwrap();
    let restored = eventually(
        Duration::from_secs(1) + LAG,
        "the NetworkPolicy to be restored",
        || async {
            let p = policies.get_opt("sandbox-np-1-netpol").await.unwrap()?;
            (p.metadata.uid != first.metadata.uid).then_some(p)
        },
    )
    .await;
    assert_eq!(
        restored.metadata.owner_references.unwrap()[0].uid,
        pod.metadata.uid.unwrap(),
        "owned by the pod, so that it goes with it"
    );
    assert_eq!(restored.spec, first.spec, "the same policy as at creation");

    // The baseline that shuts off sandboxes without their own policy comes back too.
    let baseline = policies.get("sandbox-provisioner-baseline").await.unwrap();
    policies
        .delete("sandbox-provisioner-baseline", &Default::default())
        .await
        .unwrap();
    eventually(LAG, "the baseline NetworkPolicy to be restored", || async {
        let p = policies
            .get_opt("sandbox-provisioner-baseline")
            .await
            .unwrap()?;
        (p.metadata.uid != baseline.metadata.uid).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_baseline_policy_left_from_before_goes_when_policies_are_off() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = TestNamespace::new("stale-baseline").await;
    let policies: kube::Api<NetworkPolicy> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let stale: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "sandbox-provisioner-baseline", "labels": {
            "app": "deer-flow-sandbox", "app.kubernetes.io/managed-by": "sandbox-provisioner"}},
        "spec": {"podSelector": {"matchLabels": {
            "app": "deer-flow-sandbox", "app.kubernetes.io/managed-by": "sandbox-provisioner"}},
            "policyTypes": ["Ingress", "Egress"]},
    }))
    .unwrap();
    policies.create(&Default::default(), &stale).await.unwrap();
    // An unrelated policy stays.
    let other: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"name": "operators-own"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
    .unwrap();
    policies.create(&Default::default(), &other).await.unwrap();
    let _svc = TestService::start(fast(&ns)).await;
    eventually(LAG, "the stale baseline to be removed", || async {
        policies
            .get_opt("sandbox-provisioner-baseline")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(policies.get_opt("operators-own").await.unwrap().is_some());
}

#[tokio::test]
async fn two_replicas_elect_one_reaper_and_fail_over() {
    let ns = TestNamespace::new("replicas").await;
    let args = || {
        let mut a = fast(&ns);
        a.lifecycle.sandbox_leader_lease = "3s".into();
        a
    };
    let first = TestService::start(args()).await;
    let second = TestService::start(args()).await;
    let leaders = || async { (first.metric(LEADER).await, second.metric(LEADER).await) };
    let (a, b) = eventually(Duration::from_secs(10), "a leader", || async {
        let (a, b) = leaders().await;
        (a + b == 1.0).then_some((a, b))
    })
    .await;
    assert_eq!(a + b, 1.0, "exactly one replica leads");

    // Both serve; the leader reaps, once.
    assert_eq!(second.create("rep-1", "t").await.0, 200);
    assert_eq!(first.get("rep-1").await.0, 200);
    let (code, _) = first
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "rep-ttl", "thread_id": "t", "ttl_seconds": 1})),
        )
        .await;
    assert_eq!(code, 200);
    gone_within(&ns, "rep-ttl", Duration::from_secs(1) + LAG).await;
    let lifetime =
        r#"sandbox_provisioner_sandbox_deletions_total{cluster="default",reason="lifetime"}"#;
    eventually(
        Duration::from_secs(5),
        "the deletion to be counted",
        || async {
            (first.metric(lifetime).await + second.metric(lifetime).await >= 1.0).then_some(())
        },
    )
    .await;
    // Two more reaper rounds on both replicas: still counted once.
    testkit::reaper_rounds(&first.base, 2).await;
    testkit::reaper_rounds(&second.base, 2).await;
    assert_eq!(
        first.metric(lifetime).await + second.metric(lifetime).await,
        1.0,
        "deleted exactly once"
    );

    // The leader goes away without a word: the other takes over within the lease.
    let (leader, follower) = if a == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    drop(leader);
    let took_over = std::time::Instant::now();
    leadership(
        &follower,
        true,
        Duration::from_secs(3 + 2 + 3),
        "the follower to take over",
    )
    .await;
    eprintln!("took over after {:?}", took_over.elapsed());
    let (code, _) = follower
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "rep-ttl-2", "thread_id": "t", "ttl_seconds": 1})),
        )
        .await;
    assert_eq!(code, 200);
    gone_within(&ns, "rep-ttl-2", Duration::from_secs(1) + LAG).await;
    assert!(pod_exists(&ns, "rep-1").await, "nothing else was deleted");
}

#[tokio::test]
async fn a_replica_that_loses_the_lease_stops_reaping_until_it_wins_it_back() {
    use k8s_openapi::{api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime};
    let ns = TestNamespace::new("lease-lost").await;
    let mut args = fast(&ns);
    args.lifecycle.sandbox_leader_lease = "3s".into();
    let svc = TestService::start(args).await;
    leadership(&svc, true, Duration::from_secs(10), "the lease").await;

    // Another holder takes the lease and keeps renewing it.
    let leases: kube::Api<Lease> = kube::Api::namespaced(ns.client.clone(), &ns.name);
    let intruder = {
        let leases = leases.clone();
        tokio::spawn(async move {
            loop {
                let mut lease = leases.get(LEADER_LEASE).await.unwrap();
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some("intruder".into());
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                spec.lease_duration_seconds = Some(3);
                // A 409 (the replica wrote in between) just means: again.
                let _ = leases
                    .replace(LEADER_LEASE, &Default::default(), &lease)
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    leadership(
        &svc,
        false,
        Duration::from_secs(5),
        "the replica to step down",
    )
    .await;

    // While it follows, nothing is reaped, not even what is due.
    let (code, _) = svc
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "lost-1", "thread_id": "t", "ttl_seconds": 1})),
        )
        .await;
    assert_eq!(code, 200);
    // The deadline, then three reaper rounds of this (following) replica.
    tokio::time::sleep(Duration::from_secs(1)).await;
    testkit::reaper_rounds(&svc.base, 3).await;
    assert!(pod_exists(&ns, "lost-1").await, "a follower must not reap");
    assert_eq!(svc.metric(LEADER).await, 0.0);

    // The intruder stops renewing: once its lease ran out the replica takes over and reaps.
    intruder.abort();
    gone_within(&ns, "lost-1", Duration::from_secs(3 + 1) + LAG).await;
    let holder = leases
        .get(LEADER_LEASE)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_ne!(
        holder.as_deref(),
        Some("intruder"),
        "the replica holds the lease again"
    );
    assert_eq!(svc.metric(LEADER).await, 1.0);
}

#[tokio::test]
async fn a_stopping_leader_hands_the_lease_over_at_once() {
    let ns = TestNamespace::new("handover").await;
    // A long lease: waiting it out would take 10 s; a handover takes one round (10/3 s).
    let args = || {
        let mut a = fast(&ns);
        a.lifecycle.sandbox_leader_lease = "10s".into();
        a
    };
    let first = TestService::start(args()).await;
    leadership(
        &first,
        true,
        Duration::from_secs(10),
        "the first replica to lead",
    )
    .await;
    let second = TestService::start(args()).await;
    let stopped = std::time::Instant::now();
    first.stop_gracefully().await;
    leadership(
        &second,
        true,
        Duration::from_secs(10 / 3 + 3),
        "the second replica to take over before the lease would have run out",
    )
    .await;
    eprintln!("took over {:?} after the leader stopped", stopped.elapsed());
    let (code, _) = second
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "ho-1", "thread_id": "t", "ttl_seconds": 1})),
        )
        .await;
    assert_eq!(code, 200);
    gone_within(&ns, "ho-1", Duration::from_secs(1) + LAG).await;
}

#[tokio::test]
async fn a_replica_that_cannot_take_the_lease_says_so_and_does_not_reap() {
    let ns = TestNamespace::new("no-lease").await;
    // The provisioner's rules without `leases`.
    let rules = json!([{"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["create", "get", "list", "delete"]}]);
    let kubeconfig = ns.service_account_kubeconfig("no-lease", rules).await;
    let mut running = testkit::RunningBinary::start(&[
        ("KUBECONFIG_PATH", kubeconfig.display().to_string()),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("NODE_HOST", "127.0.0.1".into()),
        ("SANDBOX_IMAGE", "sandbox:test".into()),
        ("SANDBOX_LEADER_LEASE", "3s".into()),
        ("SANDBOX_REAP_INTERVAL", "1s".into()),
        ("RUST_LOG", "warn".into()),
    ])
    .await;
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/api/sandboxes", running.base))
        .json(&json!({"sandbox_id": "nl-1", "thread_id": "t", "ttl_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // The deadline, then three reaper rounds: nobody may reap without the lease.
    tokio::time::sleep(Duration::from_secs(1)).await;
    testkit::reaper_rounds(&running.base, 3).await;
    assert!(pod_exists(&ns, "nl-1").await, "reaped without the lease");
    running.sigterm();
    let (status, log) = running.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("leader election failed") && log.contains("leases"),
        "the failure is logged with its cause:\n{log}"
    );
    assert_eq!(
        log.matches("leader election failed").count(),
        1,
        "logged once, not every round:\n{log}"
    );
}

#[tokio::test]
async fn the_leader_waits_for_activity_another_replica_has_not_written_yet() {
    let ns = TestNamespace::new("idle-replicas").await;
    let args = || {
        let mut a = fast(&ns);
        a.lifecycle.sandbox_leader_lease = "3s".into();
        a.lifecycle.sandbox_activity_persist_interval = "3s".into();
        a
    };
    let first = TestService::start(args()).await;
    let second = TestService::start(args()).await;
    let first_leads = eventually(Duration::from_secs(10), "a leader", || async {
        let (a, b) = (first.metric(LEADER).await, second.metric(LEADER).await);
        (a + b == 1.0).then_some(a == 1.0)
    })
    .await;
    let (leader, follower) = if first_leads {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let created = std::time::Instant::now();
    let (code, _) = leader
        .call(
            Method::POST,
            "/api/sandboxes",
            Some(json!({"sandbox_id": "ir-1", "thread_id": "t", "idle_timeout_seconds": 4})),
        )
        .await;
    assert_eq!(code, 200);
    // Activity on the follower at 2 s: within the persist interval of the creation, so it is
    // not written to the pod, and the leader cannot know it.
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(created.elapsed())).await;
    assert_eq!(follower.get("ir-1").await.0, 200);
    // Once the deadline the leader knows (4 s) has passed, two rounds of the leader's reaper
    // (so one began after it); the true deadline (6 s) has not passed: the sandbox must still
    // be there.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(created.elapsed())).await;
    testkit::reaper_rounds(&leader.base, 2).await;
    assert!(
        pod_exists(&ns, "ir-1").await,
        "removed before its idle deadline"
    );
    // It still goes: at most one persist interval after the deadline the leader knows.
    gone_within(&ns, "ir-1", Duration::from_secs(2) + LAG).await;
    eprintln!("removed {:?} after creation", created.elapsed());
}

/// LIST keeps each sandbox's view and the last answer between listings; this checks that every
/// kind of change still shows in the next LIST: activity, readiness, deletion, creation.
#[tokio::test]
async fn every_change_shows_in_the_next_list() {
    let ns = TestNamespace::new("listchange").await;
    let mut args = fast(&ns);
    args.lifecycle.sandbox_idle_timeout = "60s".into();
    let svc = TestService::start(args).await;
    svc.synced().await;
    assert_eq!(svc.create("lc-a", "t").await.0, 200);
    assert_eq!(svc.create("lc-b", "t").await.0, 200);
    let listed =
        |body: serde_json::Value| -> std::collections::BTreeMap<String, serde_json::Value> {
            body["sandboxes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| (s["sandbox_id"].as_str().unwrap().to_string(), s.clone()))
                .collect()
        };
    // Readiness (the node simulator starts the pods): a later LIST shows it.
    eventually(Duration::from_secs(30), "both ready in a LIST", || async {
        let all = listed(svc.list().await.1);
        (all.len() == 2 && all.values().all(|s| s["ready"] == true)).then_some(())
    })
    .await;
    let before = listed(svc.list().await.1);
    assert_eq!(listed(svc.list().await.1), before, "nothing changed");

    // Activity moves the idle deadline of that sandbox only.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, kept) = svc
        .call(Method::POST, "/api/sandboxes/lc-a/keepalive", None)
        .await;
    assert_eq!(code, 200, "{kept}");
    let after = listed(svc.list().await.1);
    assert_eq!(after["lc-a"]["expires_at"], kept["expires_at"]);
    assert_ne!(after["lc-a"]["expires_at"], before["lc-a"]["expires_at"]);
    assert_eq!(after["lc-b"], before["lc-b"]);

    // A deleted sandbox leaves the list; a new one joins it.
    assert_eq!(svc.delete("lc-b").await.0, 200);
    assert_eq!(svc.create("lc-c", "t").await.0, 200);
    eventually(
        Duration::from_secs(30),
        "lc-b gone and lc-c listed",
        || async {
            let all = listed(svc.list().await.1);
            let ids: Vec<&String> = all.keys().collect();
            (ids == ["lc-a", "lc-c"]).then_some(())
        },
    )
    .await;
}
