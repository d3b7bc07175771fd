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

use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::{
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    Api, Client,
};
use sandbox_provisioner::{
    cli::Cli,
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

/// The second local cluster's kubeconfig (for the tests of several clusters), or a panic that
/// says how to start it.
pub fn second_kubeconfig_path() -> PathBuf {
    match std::env::var("SECOND_KUBECONFIG") {
        Ok(p) if !p.is_empty() && std::path::Path::new(&p).is_file() => PathBuf::from(p),
        _ => panic!(
            "the tests of several clusters need the second local cluster, but SECOND_KUBECONFIG does not name a kubeconfig file.\n\
             Start it and export its kubeconfig first:\n    eval \"$(scripts/second-cluster up)\"\n\
             or run everything with: scripts/test"
        ),
    }
}

pub async fn client() -> Client {
    client_for(&kubeconfig_path()).await
}

pub async fn second_client() -> Client {
    client_for(&second_kubeconfig_path()).await
}

pub async fn client_for(path: &std::path::Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("reading the kubeconfig");
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
    /// The cluster it is in.
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Creates `t-{prefix}-{random}` and waits until its default service account exists (pods
    /// are refused before that).
    pub async fn new(prefix: &str) -> TestNamespace {
        let name = format!("t-{}-{}", &prefix[..prefix.len().min(30)], random_suffix());
        TestNamespace::create(kubeconfig_path(), name).await
    }

    /// The namespace of the same name in the second cluster.
    pub async fn in_second_cluster(&self) -> TestNamespace {
        TestNamespace::create(second_kubeconfig_path(), self.name.clone()).await
    }

    async fn create(kubeconfig: PathBuf, name: String) -> TestNamespace {
        let client = client_for(&kubeconfig).await;
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
        TestNamespace {
            client,
            name,
            kubeconfig,
        }
    }

    /// A namespace name for a test that lets the code under test create it.
    pub async fn uncreated(prefix: &str) -> TestNamespace {
        TestNamespace {
            client: client().await,
            name: format!("t-{}-{}", &prefix[..prefix.len().min(30)], random_suffix()),
            kubeconfig: kubeconfig_path(),
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace and waits until it is gone, with everything in it.
    pub async fn delete_and_wait(&self, what: &str) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap();
        eventually(Duration::from_secs(60), what, || async {
            namespaces
                .get_opt(&self.name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
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
        let kubeconfig = self.kubeconfig.clone();
        let panicking = std::thread::panicking();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = client_for(&kubeconfig).await;
                if panicking {
                    dump(&client, &name).await;
                }
                let namespaces: Api<Namespace> = Api::all(client.clone());
                let _ = namespaces.delete(&name, &DeleteParams::default()).await;
                // Cluster-scoped objects a test made for this namespace carry its name.
                use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
                let dp = DeleteParams::default();
                for suffix in ["-reader", "-deploy"] {
                    let object = format!("{name}{suffix}");
                    let _ = Api::<ClusterRole>::all(client.clone())
                        .delete(&object, &dp)
                        .await;
                    let _ = Api::<ClusterRoleBinding>::all(client.clone())
                        .delete(&object, &dp)
                        .await;
                }
                use k8s_openapi::api::{node::v1::RuntimeClass, scheduling::v1::PriorityClass};
                let pc = format!("{name}-pc");
                let _ = Api::<PriorityClass>::all(client.clone())
                    .delete(&pc, &dp)
                    .await;
                let rc = format!("{name}-rc");
                let _ = Api::<RuntimeClass>::all(client.clone())
                    .delete(&rc, &dp)
                    .await;
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
/// The defaults (as with no flags), pointed at the local cluster and the given namespace.
pub fn serve_args(namespace: &str) -> ServeArgs {
    let mut args = Cli::try_parse_from(["sandbox-provisioner"])
        .unwrap()
        .serve_args()
        .unwrap();
    args.http.listen = "127.0.0.1:0".into();
    args.cluster.namespace = namespace.into();
    args.sandbox.sandbox_image = "sandbox:test".into();
    args.storage.skills_host_path = Some("/srv/skills".into());
    args.storage.threads_host_path = Some("/srv/threads".into());
    args.cluster.kubeconfig_path = kubeconfig_path();
    args.sandbox.node_host = "127.0.0.1".into();
    args.cluster.k8s_api_server = None;
    args.cluster.k8s_api_timeout_seconds = 5.0;
    // Tests that are not about the key run without one, which must be said explicitly.
    args.http.allow_no_api_key = true;
    args
}

/// The provisioner's HTTP API served in-process on a free port, built as `main` builds it
/// (without the start-up checks, which tests of them run through the binary).
pub struct TestService {
    pub base: String,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    crash: server::CrashHandle,
}

impl TestService {
    pub async fn start(args: ServeArgs) -> TestService {
        let config = Config::try_from(args).expect("valid test configuration");
        let mut server = server::Server::build(config)
            .await
            .expect("building the provisioner");
        server.start_background();
        let crash = server.crash_handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server.serve(listener, shutdown).await.unwrap();
        });
        TestService {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            task,
            stop: Some(stop),
            crash,
        }
    }

    /// Stops as on SIGTERM: in-flight requests finish, background tasks end and the leader
    /// lease is given up.
    pub async fn stop_gracefully(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
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
        Self::answer(req).await
    }

    /// Sends a prepared request and returns the status and the JSON body.
    pub async fn answer(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
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

    /// The service's /metrics page.
    pub async fn metrics_text(&self) -> String {
        let resp = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET /metrics");
        resp.text().await.unwrap()
    }

    /// One sample from /metrics, `name` including its labels as printed; 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metrics_text()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Kubernetes calls the service has made, per `verb resource`, from its /metrics.
    pub async fn kube_calls(&self) -> std::collections::BTreeMap<String, u64> {
        self.metrics_text()
            .await
            .lines()
            .filter_map(|l| {
                l.strip_prefix(
                    "sandbox_provisioner_kubernetes_requests_total{cluster=\"default\",verb=\"",
                )
            })
            .filter_map(|l| {
                let (verb, rest) = l.split_once("\",resource=\"")?;
                let (resource, value) = rest.split_once("\"} ")?;
                Some((format!("{verb} {resource}"), value.parse().ok()?))
            })
            .collect()
    }

    /// Waits until `/readyz` reports the cache synced.
    pub async fn synced(&self) {
        eventually(Duration::from_secs(30), "the cache to sync", || async {
            let (_, body) = self.call(reqwest::Method::GET, "/readyz", None).await;
            (body["cache"] == "synced").then_some(())
        })
        .await;
    }

    pub async fn list(&self) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, "/api/sandboxes", None)
            .await
    }
}

impl Drop for TestService {
    /// Goes away as in a crash: the lease, if held, is left to expire.
    fn drop(&mut self) {
        self.crash.crash();
        self.task.abort();
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
/// An "apiserver" that accepts connections (through the backlog) and never answers a byte:
/// the listener, to keep alive while it is needed, and its URL for `k8s_api_server`.
pub fn silent_apiserver() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    (listener, url)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second kube-apiserver of the local cluster (same etcd), which a test may stop and start
/// to play an outage. Stopped when dropped.
pub struct ExtraApiserver {
    pub port: u16,
    flags: Vec<String>,
}

impl ExtraApiserver {
    pub fn start(flags: &[&str]) -> ExtraApiserver {
        let server = ExtraApiserver {
            port: free_port(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        server.up();
        server
    }

    fn script(&self, action: &str) -> std::process::Output {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/local-cluster");
        std::process::Command::new("bash")
            .arg(script)
            .arg("extra-apiserver")
            .arg(action)
            .arg(self.port.to_string())
            .args(if action == "start" {
                &self.flags[..]
            } else {
                &[]
            })
            .output()
            .expect("running scripts/local-cluster")
    }

    pub fn up(&self) {
        let out = self.script("start");
        assert!(
            out.status.success(),
            "extra apiserver failed to start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn down(&self) {
        let out = self.script("stop");
        assert!(
            out.status.success(),
            "extra apiserver failed to stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for ExtraApiserver {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
}

/// The real binary, started with a clean environment plus `env`, serving on a free port.
pub struct RunningBinary {
    pub child: std::process::Child,
    pub base: String,
}

impl RunningBinary {
    /// Starts the binary and waits until `/health` answers; its output is kept for
    /// `wait_exit`.
    pub async fn start(env: &[(&str, String)]) -> RunningBinary {
        Self::launch(env, true).await.0
    }

    /// Starts the binary with its output discarded (nobody reads it under load); returns it
    /// and how long it took to serve `/health`.
    pub async fn start_quiet(env: &[(&str, String)]) -> (RunningBinary, Duration) {
        Self::launch(env, false).await
    }

    async fn launch(env: &[(&str, String)], keep_output: bool) -> (RunningBinary, Duration) {
        let port = free_port();
        let output = || {
            if keep_output {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            }
        };
        let started = std::time::Instant::now();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox-provisioner"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("PROVISIONER_LISTEN", format!("127.0.0.1:{port}"))
            // Without a key the API is closed; tests about the key set one (or unset this).
            .env("PROVISIONER_ALLOW_NO_API_KEY", "true")
            .stdin(std::process::Stdio::null())
            .stdout(output())
            .stderr(output());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting the binary");
        let running = RunningBinary {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        loop {
            let answer = http.get(format!("{}/health", running.base)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return (running, started.elapsed());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the service did not answer /health within 30s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The process's resident memory, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap();
        kib / 1024.0
    }

    /// Waits until `/readyz` reports the cache synced.
    pub async fn wait_synced(&self) {
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(30), "the cache to sync", || async {
            let body: serde_json::Value = http
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (body["cache"] == "synced").then_some(())
        })
        .await;
    }

    pub fn sigterm(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, failing the test after `limit`; returns the status and
    /// what it logged.
    pub async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut log);
        }
        (status, log)
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestNamespace {
    /// A kubeconfig for a ServiceAccount of this namespace bound to a Role with `rules`
    /// (Role rule objects as JSON), e.g. to test with a credential that is not cluster-admin.
    pub async fn service_account_kubeconfig(
        &self,
        name: &str,
        rules: serde_json::Value,
    ) -> PathBuf {
        use k8s_openapi::api::{
            core::v1::ServiceAccount,
            rbac::v1::{Role, RoleBinding},
        };
        let pp = PostParams::default();
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<ServiceAccount>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &sa)
            .await
            .unwrap();
        let role: Role =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "rules": rules}))
                .unwrap();
        Api::<Role>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &role)
            .await
            .unwrap();
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": self.name}],
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(self.client.clone(), &self.name)
            .create(&pp, &binding)
            .await
            .unwrap();
        self.kubeconfig_for_service_account(name).await
    }

    /// A kubeconfig that authenticates as an existing ServiceAccount of this namespace.
    pub async fn kubeconfig_for_service_account(&self, name: &str) -> PathBuf {
        use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.name);
        let secret_name = eventually(
            Duration::from_secs(30),
            "the service account token",
            || async {
                accounts
                    .get(name)
                    .await
                    .ok()?
                    .secrets?
                    .first()?
                    .name
                    .clone()
            },
        )
        .await;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.name);
        let token = eventually(Duration::from_secs(30), "the token secret", || async {
            let data = secrets.get(&secret_name).await.ok()?.data?;
            String::from_utf8(data.get("token")?.0.clone()).ok()
        })
        .await;
        let original = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let mut rewritten = String::new();
        for line in original.lines() {
            match line.trim_start().strip_prefix("token: ") {
                Some(_) => rewritten.push_str(&format!("    token: {token}\n")),
                None => {
                    rewritten.push_str(line);
                    rewritten.push('\n');
                }
            }
        }
        // The same namespace name may exist in both clusters: the file names which.
        let path = std::env::temp_dir().join(format!(
            "kubeconfig-{}-{name}-{}",
            self.name,
            random_suffix()
        ));
        std::fs::write(&path, rewritten).unwrap();
        path
    }
}

impl TestNamespace {
    /// Lets a service account of this namespace read (only) this namespace, as the deployment's
    /// ClusterRole does for its own.
    pub async fn grant_namespace_read(&self, service_account: &str) {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let name = format!("{}-reader", self.name);
        let role: ClusterRole = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [self.name], "verbs": ["get"]}],
        }))
        .unwrap();
        Api::<ClusterRole>::all(self.client.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": self.name}],
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
    }
}

/// The Role rules the provisioner needs in its namespace with the leader election on and no
/// NetworkPolicies or claims (from the permissions table).
pub fn provisioner_rules() -> serde_json::Value {
    use sandbox_provisioner::permissions::{role_rules, Features};
    role_rules(Features {
        leader_election: true,
        ..Features::default()
    })
}

/// A TCP proxy to the local apiserver that a test can switch into a black hole: from then on
/// it forwards nothing (connections stay open, bytes go nowhere) and reports that a request
/// arrived, so the test knows the provisioner has a call in flight.
pub struct BlackholeProxy {
    pub port: u16,
    forwarding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    arrived: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackholeProxy {
    pub async fn start(upstream_port: u16) -> BlackholeProxy {
        use std::sync::{atomic::AtomicBool, Arc};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(true));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (fwd, arr) = (forwarding.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let (fwd_up, arr_up, fwd_down) = (fwd.clone(), arr.clone(), fwd.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if fwd_up.load(Ordering::SeqCst) {
                            if uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        } else {
                            arr_up.notify_one();
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = ur.read(&mut buf).await {
                        if n == 0
                            || !fwd_down.load(Ordering::SeqCst)
                            || cw.write_all(&buf[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                    std::future::pending::<()>().await;
                });
            }
        });
        BlackholeProxy {
            port,
            forwarding,
            arrived,
            task,
        }
    }

    /// From now on nothing is forwarded.
    pub fn swallow(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
    }

    /// Resolves once a request has arrived while swallowing.
    pub async fn request_arrived(&self) {
        self.arrived.notified().await
    }
}

impl Drop for BlackholeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The port of the local apiserver, from the kubeconfig.
pub fn apiserver_port() -> u16 {
    let text = std::fs::read_to_string(kubeconfig_path()).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("the local kubeconfig names https://127.0.0.1:PORT")
}
