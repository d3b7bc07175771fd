//! The local clusters: their kubeconfigs and clients, extra and silent apiservers, a proxy that
//! turns into a black hole, and free ports.

use std::{path::PathBuf, sync::atomic::Ordering};

use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client,
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
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/local-cluster");
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

/// A TCP proxy to the local apiserver that a test can switch into a black hole: from then on
/// it forwards nothing (connections stay open, bytes go nowhere), so calls made then hang.
pub struct BlackholeProxy {
    pub port: u16,
    forwarding: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl BlackholeProxy {
    pub async fn start(upstream_port: u16) -> BlackholeProxy {
        use std::sync::{atomic::AtomicBool, Arc};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let forwarding = Arc::new(AtomicBool::new(true));
        let fwd = forwarding.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let (fwd_up, fwd_down) = (fwd.clone(), fwd.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if fwd_up.load(Ordering::SeqCst) && uw.write_all(&buf[..n]).await.is_err() {
                            break;
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
            task,
        }
    }

    /// From now on nothing is forwarded.
    pub fn swallow(&self) {
        self.forwarding.store(false, Ordering::SeqCst);
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
