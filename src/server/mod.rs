//! Start-up and shutdown: connect, prepare the namespace, serve until SIGTERM or Ctrl-C.

mod connections;

use tokio::{sync::watch, task::JoinHandle};

use connections::ConnectionLimits;

use crate::tasks::{
    leader::{self, Leadership},
    pool_keeper, reaper,
};

use crate::{
    api::{self, ApiSettings},
    cluster::{Arbiter, Cluster},
    config::Config,
    fleet::Fleet,
    gateway::Gateway,
    k8s::{calls, client},
    metrics::Metrics,
    spec::{SkillsMount, UserDataMount},
};

/// What stops the service from starting; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cluster {name:?}: {cause}")]
    Cluster {
        name: String,
        cause: client::ClientError,
    },
    #[error(
        "cannot listen on {addr}: {cause}; choose another address with PROVISIONER_LISTEN (or \
        --listen)"
    )]
    Listen { addr: String, cause: String },
    #[error(
        "{0}. The sandbox pod this configuration describes is invalid: check \
        SANDBOX_POD_TEMPLATE, SANDBOX_PLACEMENT, SANDBOX_SIZES, SANDBOX_SECCOMP_PROFILE and the \
        capability settings"
    )]
    PodRefused(String),
    #[error(
        "{variable}={claim}: there is no PersistentVolumeClaim {claim:?} in namespace \
        {namespace}; create it (it must hold the data the sandboxes expect) or unset {variable}"
    )]
    MissingClaim {
        variable: &'static str,
        claim: String,
        namespace: String,
    },
}

/// Builds one provisioner per configured cluster and starts their watch caches, which run
/// until `shutdown` turns true or its sender is dropped.
async fn fleet(config: &Config, shutdown: watch::Receiver<bool>) -> Result<Fleet, StartError> {
    let metrics = Metrics::new();
    let mut clusters = Vec::new();
    for cluster in &config.clusters {
        let connected = Cluster::connect(cluster, config.lifecycle, &metrics, shutdown.clone())
            .await
            .map_err(|cause| StartError::Cluster {
                name: cluster.name.clone(),
                cause,
            })?;
        clusters.push(connected);
    }
    // Quota locks live in the first cluster's namespace.
    let arbiter = Arbiter::new(
        clusters[0].leases(replica_identity()),
        config.clusters[0].connection.api_timeout,
    );
    let admission = config.tenancy.admission(metrics.clone());
    Ok(Fleet::new(clusters, admission, metrics).with_arbiter(arbiter))
}

/// A service built from its configuration: the provisioner with its watch cache, the router,
/// and (once started) the background tasks. `main`, the tests and the benchmark's binary all
/// build the service here.
pub struct Server {
    config: Config,
    fleet: Fleet,
    stop: watch::Sender<bool>,
    background: Option<Background>,
}

/// Ends a server's leader election at once without giving the lease up, as a crash would.
pub struct CrashHandle(Vec<tokio::task::AbortHandle>);

impl CrashHandle {
    pub fn crash(&self) {
        for election in &self.0 {
            election.abort();
        }
    }
}

impl Server {
    /// Connects to Kubernetes and starts the watch cache; serves nothing yet.
    pub async fn build(config: Config) -> Result<Server, StartError> {
        let (stop, stopped) = watch::channel(false);
        let fleet = fleet(&config, stopped).await?;
        Ok(Server {
            config,
            fleet,
            stop,
            background: None,
        })
    }

    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// The HTTP API over this server's clusters, with the gateway's routes when it shares the
    /// API's port.
    pub fn app(&self) -> axum::Router {
        let app = api::app(self.fleet.clone(), ApiSettings::from_config(&self.config));
        match (self.config.gateway.on, self.config.gateway.listen) {
            (true, None) => app.merge(self.gateway()),
            _ => app,
        }
    }

    /// The gateway's routes.
    pub fn gateway(&self) -> axum::Router {
        Gateway::new(self.fleet.clone(), self.config.gateway.limits).router()
    }

    /// The start-up checks: the namespace (created when missing), the claims, and a dry run of
    /// the sandbox pod. Only a configuration the apiserver refuses stops the service; an
    /// apiserver that cannot be asked now is logged and left to the requests.
    pub async fn prepare(&self) -> Result<(), StartError> {
        for cluster in self.fleet.clusters() {
            prepare(cluster).await?;
        }
        Ok(())
    }

    /// Starts the leader election (when configured) and the reaper.
    pub fn start_background(&mut self) {
        if self.background.is_none() {
            if let Some(file) = self.config.tenancy.tenant_file(&self.config) {
                self.fleet
                    .admission()
                    .watch_file(file, self.stop.subscribe());
            }
            self.background = Some(Background::spawn(&self.config, &self.fleet, &self.stop));
        }
    }

    pub fn crash_handle(&self) -> CrashHandle {
        CrashHandle(
            self.background
                .as_ref()
                .map(|b| b.elections.iter().map(|e| e.abort_handle()).collect())
                .unwrap_or_default(),
        )
    }

    /// Serves on `listener` until `shutdown` resolves, lets in-flight requests finish within
    /// PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS, then stops the background tasks (handing the
    /// lease over).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let (signalled, signal) = watch::channel(false);
        let bounds = self.config.http.limits.connections;
        let limits = ConnectionLimits {
            header_read: bounds.header_read,
            keep_alive: bounds.keep_alive,
            max_connections: bounds.max_connections,
        };
        let metrics = self.fleet.metrics().clone();
        let gateway_listen = self
            .config
            .gateway
            .listen
            .filter(|_| self.config.gateway.on);
        let gateway = match gateway_listen {
            Some(addr) => {
                let listener =
                    tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| StartError::Listen {
                            addr: addr.to_string(),
                            cause: e.to_string(),
                        })?;
                tracing::info!(%addr, "gateway serving");
                Some(tokio::spawn(connections::serve(
                    listener,
                    self.gateway(),
                    limits,
                    "gateway",
                    metrics.clone(),
                    signal.clone(),
                )))
            }
            None => None,
        };
        let api = connections::serve(listener, self.app(), limits, "api", metrics, signal.clone());
        let served = async move {
            api.await;
            if let Some(gateway) = gateway {
                let _ = gateway.await;
            }
        };
        tokio::spawn(async move {
            shutdown.await;
            let _ = signalled.send(true);
        });
        let grace = self.config.http.limits.shutdown_timeout;
        let mut signal = signal;
        let deadline = async move {
            let _ = signal.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            _ = served => {}
            _ = deadline => tracing::warn!(?grace, "in-flight requests did not finish within \
                PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS; exiting anyway"),
        }
        self.stop().await;
        Ok(())
    }

    /// Stops the background tasks and the watch cache, waiting until the election has given
    /// the lease up (itself bounded) so that another replica can take over at once.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(background) = self.background.take() {
            background.finished().await;
        }
    }
}

/// Runs the service until a shutdown signal arrives.
pub async fn run(config: Config) -> Result<(), StartError> {
    let mut server = Server::build(config).await?;
    warn_about_defaults(&server.config);
    server.prepare().await?;
    server.start_background();
    let config = &server.config;
    let listen = config.http.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Listen {
            addr: listen.to_string(),
            cause: e.to_string(),
        })?;
    for member in &config.clusters {
        tracing::info!(cluster = %member.name, namespace = %member.connection.namespace,
            image = %member.sandbox.image, exposure = ?member.sandbox.exposure,
                weight = member.weight, "cluster");
    }
    tracing::info!(%listen, clusters = config.clusters.len(), "serving");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The background tasks of a running service, per cluster: the leader election (when
/// configured; a Lease in each cluster's namespace) and the reaper, so that a dead cluster
/// stops nothing elsewhere. All stop when the `stop` channel they were given turns true.
struct Background {
    elections: Vec<JoinHandle<()>>,
}

impl Background {
    fn spawn(config: &Config, fleet: &Fleet, stop: &watch::Sender<bool>) -> Self {
        let lease = config.lifecycle.leader_lease;
        let identity = replica_identity();
        let mut elections = Vec::new();
        for cluster in fleet.clusters() {
            let leadership = if lease.is_zero() {
                Leadership::always()
            } else {
                let (leadership, task) =
                    leader::spawn(cluster.leases(identity.clone()), lease, stop.subscribe());
                elections.push(task);
                leadership
            };
            pool_keeper::spawn(cluster.clone(), leadership.clone(), stop.subscribe());
            reaper::spawn(
                cluster.clone(),
                config.lifecycle.reap_interval,
                leadership,
                stop.subscribe(),
            );
        }
        Background { elections }
    }

    async fn finished(self) {
        for election in self.elections {
            let _ = election.await;
        }
    }
}

/// One cluster's start-up checks: the namespace, the claims, the pod dry run.
async fn prepare(provisioner: &Cluster) -> Result<(), StartError> {
    let cluster_name = provisioner.name();
    match provisioner.ensure_namespace().await {
        // Its creation is logged where it happens (here, or by the cluster's first probe).
        Ok(true) => {}
        Ok(false) => tracing::info!(
            cluster = cluster_name,
            namespace = provisioner.namespace(),
            "namespace present"
        ),
        Err(e) => {
            tracing::warn!(cluster = cluster_name, error = %e, "cannot prepare the namespace now; \
                sandbox requests will retry it and answer 503 while Kubernetes is unreachable")
        }
    }
    check_claims(provisioner).await?;
    match provisioner.check_pod_template().await {
        Ok(()) => tracing::info!(
            cluster = cluster_name,
            "the apiserver accepts the sandbox pod this configuration makes (dry run)"
        ),
        Err(
            e @ calls::Error::Refused {
                code: 400 | 422, ..
            },
        ) => {
            return Err(StartError::PodRefused(format!(
                "cluster {cluster_name:?}: {e}"
            )))
        }
        Err(e) => {
            tracing::warn!(cluster = cluster_name, error = %e, "cannot dry-run a sandbox pod now; \
                configuration problems will show on the first create")
        }
    }
    Ok(())
}

/// The configured PersistentVolumeClaims must exist; when the apiserver cannot be asked, the
/// check is left to the pods (which then stay Pending with the reason).
async fn check_claims(provisioner: &Cluster) -> Result<(), StartError> {
    for (variable, claim) in provisioner.spec().claims() {
        match provisioner.pvc_exists(claim).await {
            Ok(true) => tracing::info!(variable, claim, "PersistentVolumeClaim present"),
            Ok(false) => {
                return Err(StartError::MissingClaim {
                    variable,
                    claim: claim.to_string(),
                    namespace: provisioner.namespace().to_string(),
                })
            }
            Err(e) => {
                tracing::warn!(variable, claim, error = %e, "cannot check the \
                    PersistentVolumeClaim now")
            }
        }
    }
    Ok(())
}

/// A name for this replica in the leader Lease: host name (the pod name in a cluster), process
/// id and start time, so that a restarted replica is a new holder.
pub fn replica_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "provisioner".into());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    format!("{host}-{}-{started}", std::process::id())
}

fn warn_about_defaults(config: &Config) {
    match (&config.http.api_key, config.http.allow_no_api_key) {
        (Some(_), _) => {}
        (None, true) => tracing::warn!(
            "PROVISIONER_ALLOW_NO_API_KEY=true and no \
            PROVISIONER_API_KEY: ANYONE WHO CAN REACH THIS PORT CAN CREATE SANDBOXES THAT MOUNT \
            HOST PATHS. Set a key unless the port is reachable only by the backend"
        ),
        (None, false) => tracing::warn!(
            "PROVISIONER_API_KEY is not set: every /api/* request is \
            refused with 401. Set a key (for example from `openssl rand -hex 32`) and give the \
            backend the same one, or set PROVISIONER_ALLOW_NO_API_KEY=true to serve without a key"
        ),
    }
    if config.sandbox.skills == SkillsMount::None {
        tracing::warn!(
            "no skills source is set (SKILLS_HOST_PATH, SKILLS_PVC_NAME, \
            DEER_FLOW_HOST_BASE_DIR or a THREADS_HOST_PATH ending in /threads): sandboxes get no \
            /mnt/skills"
        );
    }
    if config.sandbox.user_data == UserDataMount::EmptyDir {
        tracing::warn!(
            "THREADS_HOST_PATH is not set: /mnt/user-data is an emptyDir that is lost \
            with the sandbox"
        );
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
