//! A stress run against the real binary: many concurrent create/delete cycles, the process
//! killed (SIGKILL, no shutdown path) at a random moment in each round, and at the end one more
//! start whose orphan sweep must leave every sandbox whole: no pod without its Service or its
//! NetworkPolicy, and no Service or NetworkPolicy without its pod. The counts are printed (`-- --nocapture` shows them); the rounds
//! and the random seed can be set with `STRESS_ROUNDS` and `STRESS_SEED` to repeat a run.

use sandbox_provisioner::k8s::manifests;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
    },
    NamespaceResourceScope,
};
use kube::{api::ListParams, Api, Resource};
use serde::de::DeserializeOwned;
use testkit::{eventually, kubeconfig_path, RunningBinary, TestNamespace};

const WORKERS: usize = 12;
/// Few ids, so that creates and deletes of the same sandbox collide.
const IDS: u64 = 24;

/// A small deterministic generator (xorshift64*), so a failing run can be repeated by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the namespace holds: sandbox ids with a pod, with a Service, with a NetworkPolicy.
#[derive(Debug, Default)]
struct Census {
    pods: BTreeSet<String>,
    services: BTreeSet<String>,
    policies: BTreeSet<String>,
}

/// The sandbox ids among the managed objects of one kind.
async fn sandbox_ids<K>(ns: &TestNamespace) -> BTreeSet<String>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ns.client.clone(), &ns.name);
    api.list(&ListParams::default().labels(&manifests::managed_selector()))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|o| {
            o.meta()
                .labels
                .as_ref()?
                .get(manifests::SANDBOX_ID_LABEL)
                .cloned()
        })
        .collect()
}

impl Census {
    async fn take(ns: &TestNamespace) -> Census {
        Census {
            pods: sandbox_ids::<Pod>(ns).await,
            services: sandbox_ids::<Service>(ns).await,
            policies: sandbox_ids::<NetworkPolicy>(ns).await,
        }
    }

    fn pods_without_service(&self) -> usize {
        self.pods.difference(&self.services).count()
    }

    fn services_without_pod(&self) -> usize {
        self.services.difference(&self.pods).count()
    }

    fn pods_without_policy(&self) -> usize {
        self.pods.difference(&self.policies).count()
    }

    fn policies_without_pod(&self) -> usize {
        self.policies.difference(&self.pods).count()
    }

    fn orphans(&self) -> usize {
        self.pods_without_service()
            + self.services_without_pod()
            + self.pods_without_policy()
            + self.policies_without_pod()
    }

    fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.services.is_empty() && self.policies.is_empty()
    }

    fn summary(&self) -> String {
        format!(
            "{} pods, {} Services, {} NetworkPolicies; orphans: {} pods without a Service, \
             {} Services without a pod, {} pods without a NetworkPolicy, {} NetworkPolicies without a pod",
            self.pods.len(),
            self.services.len(),
            self.policies.len(),
            self.pods_without_service(),
            self.services_without_pod(),
            self.pods_without_policy(),
            self.policies_without_pod()
        )
    }
}

/// Requests answered, by outcome, across all rounds.
#[derive(Default)]
struct Tally {
    created: AtomicUsize,
    deleted: AtomicUsize,
    /// Any other answer, by status code (e.g. 409 for a create racing a delete).
    other: Mutex<BTreeMap<u16, usize>>,
    cut_off: AtomicUsize,
}

/// Sends creates and deletes of random ids until the service stops answering.
async fn worker(base: String, mut rng: Rng, tally: Arc<Tally>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    loop {
        let id = format!("st-{}", rng.below(IDS));
        let sent = if rng.below(2) == 0 {
            http.post(format!("{base}/api/sandboxes"))
                .json(&serde_json::json!({"sandbox_id": id, "thread_id": "stress"}))
                .send()
                .await
        } else {
            http.delete(format!("{base}/api/sandboxes/{id}"))
                .send()
                .await
        };
        match sent {
            Ok(r) => {
                match (r.status().as_u16(), r.url().path().ends_with("sandboxes")) {
                    (200, true) => tally.created.fetch_add(1, Ordering::Relaxed),
                    (200, false) => tally.deleted.fetch_add(1, Ordering::Relaxed),
                    (code, _) => {
                        *tally.other.lock().unwrap().entry(code).or_default() += 1;
                        0
                    }
                };
            }
            Err(_) => {
                // The process was killed under this request (or before it).
                tally.cut_off.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

fn binary_env(ns: &TestNamespace, orphan_grace: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "KUBECONFIG_PATH",
            kubeconfig_path().to_string_lossy().into_owned(),
        ),
        ("K8S_NAMESPACE", ns.name.clone()),
        ("NODE_HOST", "127.0.0.1".into()),
        ("SANDBOX_IMAGE", "sandbox:test".into()),
        ("SANDBOX_REAP_INTERVAL", "1s".into()),
        ("SANDBOX_READY_TIMEOUT", "0".into()),
        ("SANDBOX_ORPHAN_GRACE", orphan_grace.into()),
        // A killed leader's lease must run out before the next process reaps and sweeps.
        ("SANDBOX_LEADER_LEASE", "3s".into()),
        // Three objects per sandbox, so that there are two places for a kill to fall between.
        ("SANDBOX_NETWORK_POLICY", "isolated".into()),
        // Little logging: nobody reads the pipes while the load runs.
        ("RUST_LOG", "error".into()),
    ]
}

#[tokio::test]
async fn provisioners_killed_mid_flight_leave_no_orphans_once_swept() {
    // Loads the machine on purpose: the other tests wait.
    let _alone = testkit::alone().await;
    let ns = TestNamespace::new("stress").await;
    let rounds: usize = env_or("STRESS_ROUNDS", 10);
    let seed: u64 = env_or(
        "STRESS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    println!(
        "stress: {rounds} rounds, {WORKERS} clients, seed {seed} (STRESS_ROUNDS, STRESS_SEED)"
    );
    let mut rng = Rng(seed);
    let tally = Arc::new(Tally::default());
    let mut most_orphans = 0;

    // The rounds run with a grace period longer than the test, so that what the kills leave
    // behind stays for the census; the sweep comes at the end.
    for round in 1..=rounds {
        let mut running = RunningBinary::start(&binary_env(&ns, "1h")).await;
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                let worker_rng = Rng(rng.next() | 1);
                tokio::spawn(worker(running.base.clone(), worker_rng, tally.clone()))
            })
            .collect();
        let kill_after = Duration::from_millis(100 + rng.below(900));
        tokio::time::sleep(kill_after).await;
        running.child.kill().expect("killing the provisioner");
        running.child.wait().unwrap();
        for w in workers {
            w.await.unwrap();
        }
        let census = Census::take(&ns).await;
        most_orphans = most_orphans.max(census.orphans());
        println!(
            "round {round}: killed after {kill_after:?}; {}",
            census.summary()
        );
    }
    let before = Census::take(&ns).await;
    println!(
        "after {rounds} kills: {} creates and {} deletes answered 200, other answers {:?}, {} requests cut off; {}",
        tally.created.load(Ordering::Relaxed),
        tally.deleted.load(Ordering::Relaxed),
        tally.other.lock().unwrap(),
        tally.cut_off.load(Ordering::Relaxed),
        before.summary()
    );
    assert!(
        tally.created.load(Ordering::Relaxed) > 0 && tally.deleted.load(Ordering::Relaxed) > 0,
        "the load never got through; nothing was tested"
    );
    assert!(
        most_orphans > 0,
        "no kill landed between two writes, so the sweep has nothing to prove; raise STRESS_ROUNDS"
    );

    // One more start, this time sweeping with a short grace period.
    let running = RunningBinary::start(&binary_env(&ns, "1s")).await;
    let after = eventually(
        Duration::from_secs(30),
        "the sweep to leave no orphans",
        || async {
            let census = Census::take(&ns).await;
            (census.orphans() == 0).then_some(census)
        },
    )
    .await;
    println!("after the sweep: {}", after.summary());

    // Every sandbox left is whole and served: the API lists exactly those, with a URL each.
    let listed: serde_json::Value = reqwest::get(format!("{}/api/sandboxes", running.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed_ids: BTreeSet<String> = listed["sandboxes"]
        .as_array()
        .expect("a list of sandboxes")
        .iter()
        .map(|s| {
            assert!(
                s["sandbox_url"].as_str().is_some_and(|u| !u.is_empty()),
                "{s}"
            );
            s["sandbox_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed_ids, after.pods, "the API lists every sandbox left");

    // And deleting them through the API leaves nothing at all.
    let http = reqwest::Client::new();
    for id in &listed_ids {
        let r = http
            .delete(format!("{}/api/sandboxes/{id}", running.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "deleting {id}");
    }
    let empty = eventually(Duration::from_secs(30), "no objects left", || async {
        let census = Census::take(&ns).await;
        census.is_empty().then_some(census)
    })
    .await;
    println!("after deleting the rest: {}", empty.summary());
}
