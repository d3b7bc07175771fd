//! The provisioner served in-process on a free port, built as `main` builds it, and the flags
//! tests start it with.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use sandbox_provisioner::{
    cli::Cli,
    config::{Config, ServeArgs},
    server,
};

use crate::{eventually, kubeconfig_path};
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
        let listen = config.http.listen;
        let mut server = server::Server::build(config)
            .await
            .expect("building the provisioner");
        server.start_background();
        let crash = server.crash_handle();
        // serve_args listens on a free port; a test that must know it first (the gateway's
        // public URL) sets its own.
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
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

/// Sends a prepared request and returns its JSON body (whatever the status).
pub async fn json_answer(req: reqwest::RequestBuilder) -> serde_json::Value {
    TestService::answer(req).await.1
}
