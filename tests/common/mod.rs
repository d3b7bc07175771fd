//! Test support: a client for the local cluster, a fresh namespace per test (deleted afterwards,
//! even when the test panics), and the provisioner served in-process on a free port.
#![allow(dead_code)]

use std::{
    collections::hash_map::RandomState,
    future::Future,
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client,
};
use sandbox_provisioner::{
    api::{self, AppState},
    config::{Config, ServeArgs},
    server,
};

/// The local cluster's kubeconfig, or a panic that says how to start the cluster.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var("KUBECONFIG") {
        Ok(p) if !p.is_empty() && std::path::Path::new(&p).is_file() => PathBuf::from(p),
        _ => panic!(
            "these tests need the local Kubernetes cluster, but KUBECONFIG does not name a kubeconfig file.\n\
             Start the cluster and export its kubeconfig first:\n    eval \"$(scripts/local-cluster up)\"\n\
             or run everything with: scripts/test"
        ),
    }
}

pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).expect("reading KUBECONFIG");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("loading KUBECONFIG");
    Client::try_from(config).expect("building a client")
}

/// A short random suffix, different for every call in this process.
pub fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// A namespace that exists for one test only.
pub struct TestNamespace {
    pub client: Client,
    pub name: String,
}

impl TestNamespace {
    /// Creates `t-{prefix}-{random}` and waits until its default service account exists (pods
    /// are refused before that).
    pub async fn new(prefix: &str) -> TestNamespace {
        let client = client().await;
        let name = format!("t-{}-{}", &prefix[..prefix.len().min(30)], random_suffix());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"sandbox-provisioner.dev/test": "true"}}})).unwrap();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        eventually(
            Duration::from_secs(30),
            "the default service account and its token",
            || async {
                let sa = accounts.get_opt("default").await.ok().flatten()?;
                sa.secrets.filter(|s| !s.is_empty()).map(|_| ())
            },
        )
        .await;
        TestNamespace { client, name }
    }

    /// A namespace name for a test that lets the code under test create it.
    pub async fn uncreated(prefix: &str) -> TestNamespace {
        TestNamespace {
            client: client().await,
            name: format!("t-{}-{}", &prefix[..prefix.len().min(30)], random_suffix()),
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Pods and services left in the namespace, as `kind/name` strings.
    pub async fn leftovers(&self) -> Vec<String> {
        let lp = ListParams::default();
        let pods = self.pods().list(&lp).await.unwrap().items;
        let services = self.services().list(&lp).await.unwrap().items;
        pods.iter()
            .map(|p| format!("pod/{}", p.metadata.name.as_deref().unwrap_or("")))
            .chain(
                services
                    .iter()
                    .map(|s| format!("service/{}", s.metadata.name.as_deref().unwrap_or(""))),
            )
            .collect()
    }
}

impl Drop for TestNamespace {
    /// Deletes the namespace from a thread of its own, so that it also happens after a panic
    /// and outside the test's (possibly finished) runtime.
    fn drop(&mut self) {
        let name = self.name.clone();
        let panicking = std::thread::panicking();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = client().await;
                if panicking {
                    dump(&client, &name).await;
                }
                let namespaces: Api<Namespace> = Api::all(client);
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
            });
        })
        .join();
    }
}

/// Prints the pods of a failed test's namespace, to see what the cluster thought.
async fn dump(client: &Client, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list.items {
            eprintln!(
                "[{namespace}] pod {} status: {}",
                p.metadata.name.unwrap_or_default(),
                serde_json::to_string(&p.status).unwrap_or_default()
            );
        }
    }
}

/// Polls `probe` until it yields a value, failing the test with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The service's flags, as a test would give them on the command line.
pub fn serve_args(namespace: &str) -> ServeArgs {
    ServeArgs {
        listen: "127.0.0.1:0".into(),
        namespace: namespace.into(),
        sandbox_image: "sandbox:test".into(),
        skills_host_path: Some("/srv/skills".into()),
        threads_host_path: Some("/srv/threads".into()),
        kubeconfig_path: kubeconfig_path(),
        node_host: "127.0.0.1".into(),
        k8s_api_server: None,
        k8s_insecure_skip_tls_verify: false,
        k8s_api_timeout_seconds: 5.0,
    }
}

/// The provisioner's HTTP API served in-process on a free port.
pub struct TestService {
    pub base: String,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl TestService {
    pub async fn start(args: ServeArgs) -> TestService {
        let config = Config::try_from(args).expect("valid test configuration");
        let provisioner = server::provisioner(&config)
            .await
            .expect("building the provisioner");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = api::router(AppState { provisioner });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestService {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request and returns the status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the provisioner answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text:?}"));
        (status, json)
    }

    pub async fn create(&self, sandbox_id: &str, thread_id: &str) -> (u16, serde_json::Value) {
        self.call(
            reqwest::Method::POST,
            "/api/sandboxes",
            Some(serde_json::json!({"sandbox_id": sandbox_id, "thread_id": thread_id})),
        )
        .await
    }

    pub async fn get(&self, sandbox_id: &str) -> (u16, serde_json::Value) {
        self.call(
            reqwest::Method::GET,
            &format!("/api/sandboxes/{sandbox_id}"),
            None,
        )
        .await
    }

    pub async fn delete(&self, sandbox_id: &str) -> (u16, serde_json::Value) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/sandboxes/{sandbox_id}"),
            None,
        )
        .await
    }

    pub async fn list(&self) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, "/api/sandboxes", None)
            .await
    }
}

impl Drop for TestService {
    fn drop(&mut self) {
        self.task.abort();
    }
}
