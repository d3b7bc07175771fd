//! Start-up and shutdown: connect, prepare the namespace, serve until SIGTERM or Ctrl-C.

use tokio::{sync::watch, task::JoinHandle};

use crate::tasks::{
    leader::{self, Leadership},
    reaper,
};

use crate::{
    api::{self, ApiAccess, ApiKey, ApiSettings, Capabilities},
    config::Config,
    k8s::{client, cluster},
    member::{Member, DEFAULT_MEMBER},
    metrics::Metrics,
    provisioner::Provisioner,
    spec::{NetworkPolicyMode, SkillsMount, UserDataMount},
};

/// What stops the service from starting; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("cannot listen on {addr}: {cause}; choose another address with PROVISIONER_LISTEN (or --listen)")]
    Listen { addr: String, cause: String },
    #[error("the HTTP server failed: {0}")]
    Serve(String),
    #[error("{0}. The sandbox pod this configuration describes is invalid: check SANDBOX_PLACEMENT, SANDBOX_SIZES, SANDBOX_SECCOMP_PROFILE and the capability settings")]
    PodRefused(String),
    #[error("{variable}={claim}: there is no PersistentVolumeClaim {claim:?} in namespace {namespace}; create it (it must hold the data the sandboxes expect) or unset {variable}")]
    MissingClaim {
        variable: &'static str,
        claim: String,
        namespace: String,
    },
}

/// Builds the provisioner from validated configuration and starts its watch cache, which runs
/// until `shutdown` turns true or its sender is dropped.
async fn provisioner(
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> Result<Provisioner, StartError> {
    let metrics = Metrics::new();
    let member = Member::connect(
        DEFAULT_MEMBER,
        &config.cluster,
        config.sandbox.policies_on(),
        &metrics,
        shutdown,
    )
    .await?;
    Ok(Provisioner::new(
        member,
        config.sandbox.clone(),
        config.lifecycle,
        metrics,
    ))
}

/// A service built from its configuration: the provisioner with its watch cache, the router,
/// and (once started) the background tasks. `main`, the tests and the benchmark's binary all
/// build the service here.
pub struct Server {
    config: Config,
    provisioner: Provisioner,
    stop: watch::Sender<bool>,
    background: Option<Background>,
}

/// Ends a server's leader election at once without giving the lease up, as a crash would.
pub struct CrashHandle(Option<tokio::task::AbortHandle>);

impl CrashHandle {
    pub fn crash(&self) {
        if let Some(election) = &self.0 {
            election.abort();
        }
    }
}

impl Server {
    /// Connects to Kubernetes and starts the watch cache; serves nothing yet.
    pub async fn build(config: Config) -> Result<Server, StartError> {
        let (stop, stopped) = watch::channel(false);
        let provisioner = provisioner(&config, stopped).await?;
        Ok(Server {
            config,
            provisioner,
            stop,
            background: None,
        })
    }

    pub fn provisioner(&self) -> &Provisioner {
        &self.provisioner
    }

    /// The HTTP API over this server's provisioner.
    pub fn app(&self) -> axum::Router {
        api::app(self.provisioner.clone(), api_settings(&self.config))
    }

    /// The start-up checks: the namespace (created when missing), the claims, and a dry run of
    /// the sandbox pod. Only a configuration the apiserver refuses stops the service; an
    /// apiserver that cannot be asked now is logged and left to the requests.
    pub async fn prepare(&self) -> Result<(), StartError> {
        let provisioner = &self.provisioner;
        match provisioner.ensure_namespace().await {
            Ok(true) => tracing::info!(namespace = provisioner.namespace(), "namespace created"),
            Ok(false) => tracing::info!(namespace = provisioner.namespace(), "namespace present"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot prepare the namespace now; sandbox requests will retry it and answer 503 while Kubernetes is unreachable")
            }
        }
        check_claims(&self.config, provisioner).await?;
        match provisioner.check_pod_template().await {
            Ok(()) => tracing::info!(
                "the apiserver accepts the sandbox pod this configuration makes (dry run)"
            ),
            Err(
                e @ cluster::Error::Refused {
                    code: 400 | 422, ..
                },
            ) => return Err(StartError::PodRefused(e.to_string())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot dry-run a sandbox pod now; configuration problems will show on the first create")
            }
        }
        Ok(())
    }

    /// Starts the leader election (when configured) and the reaper.
    pub fn start_background(&mut self) {
        if self.background.is_none() {
            self.background = Some(Background::spawn(
                &self.config,
                &self.provisioner,
                &self.stop,
            ));
        }
    }

    pub fn crash_handle(&self) -> CrashHandle {
        CrashHandle(
            self.background
                .as_ref()
                .and_then(|b| b.election.as_ref())
                .map(|e| e.abort_handle()),
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
        let (signalled, mut signal) = watch::channel(false);
        let server = axum::serve(listener, self.app()).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = signalled.send(true);
        });
        let grace = self.config.http.limits.shutdown_timeout;
        let deadline = async move {
            let _ = signal.wait_for(|s| *s).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = server => served.map_err(|e| StartError::Serve(e.to_string()))?,
            _ = deadline => tracing::warn!(?grace, "in-flight requests did not finish within PROVISIONER_SHUTDOWN_TIMEOUT_SECONDS; exiting anyway"),
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
    tracing::info!(%listen, namespace = %config.cluster.namespace, image = %config.sandbox.image, exposure = ?config.sandbox.exposure, "serving");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The background tasks of a running service: the leader election (when configured) and the
/// reaper. Both stop when the `stop` channel they were given turns true.
struct Background {
    election: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(config: &Config, provisioner: &Provisioner, stop: &watch::Sender<bool>) -> Self {
        let lease = config.lifecycle.leader_lease;
        let (leadership, election) = if lease.is_zero() {
            (Leadership::always(), None)
        } else {
            let member = provisioner.member();
            let (leadership, task) = leader::spawn(
                member.client(),
                member.namespace(),
                replica_identity(),
                lease,
                member.refusals().clone(),
                stop.subscribe(),
            );
            (leadership, Some(task))
        };
        reaper::spawn(
            provisioner.clone(),
            config.lifecycle.reap_interval,
            leadership,
            stop.subscribe(),
        );
        Background { election }
    }

    async fn finished(self) {
        if let Some(election) = self.election {
            let _ = election.await;
        }
    }
}

/// The configured PersistentVolumeClaims must exist; when the apiserver cannot be asked, the
/// check is left to the pods (which then stay Pending with the reason).
async fn check_claims(config: &Config, provisioner: &Provisioner) -> Result<(), StartError> {
    for (variable, claim) in config.sandbox.claims() {
        match provisioner.pvc_exists(claim).await {
            Ok(true) => tracing::info!(variable, claim, "PersistentVolumeClaim present"),
            Ok(false) => {
                return Err(StartError::MissingClaim {
                    variable,
                    claim: claim.to_string(),
                    namespace: config.cluster.namespace.clone(),
                })
            }
            Err(e) => {
                tracing::warn!(variable, claim, error = %e, "cannot check the PersistentVolumeClaim now")
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

/// The router's settings from the configuration.
pub(crate) fn api_settings(config: &Config) -> ApiSettings {
    ApiSettings {
        access: match (&config.http.api_key, config.http.allow_no_api_key) {
            (Some(key), _) => ApiAccess::Key(ApiKey::new(key)),
            (None, true) => ApiAccess::Open,
            (None, false) => ApiAccess::Closed,
        },
        limits: config.http.limits.clone(),
        capabilities: Capabilities {
            sizes: config.sizes.clone(),
            service_type: config.sandbox.exposure.service_type().into(),
            container_port: config.sandbox.port,
            network_policy: match config.sandbox.network_policy {
                NetworkPolicyMode::None => "none",
                NetworkPolicyMode::Isolated { .. } => "isolated",
                NetworkPolicyMode::Template(_) => "template",
            }
            .into(),
            lark_cli_init_image: config.sandbox.lark.init_image.is_some(),
            lark_cli_broker_image: config.sandbox.lark.broker_image.is_some(),
        },
    }
}

fn warn_about_defaults(config: &Config) {
    match (&config.http.api_key, config.http.allow_no_api_key) {
        (Some(_), _) => {}
        (None, true) => tracing::warn!("PROVISIONER_ALLOW_NO_API_KEY=true and no PROVISIONER_API_KEY: ANYONE WHO CAN REACH THIS PORT CAN CREATE SANDBOXES THAT MOUNT HOST PATHS. Set a key unless the port is reachable only by the backend"),
        (None, false) => tracing::warn!("PROVISIONER_API_KEY is not set: every /api/* request is refused with 401. Set a key (for example from `openssl rand -hex 32`) and give the backend the same one, or set PROVISIONER_ALLOW_NO_API_KEY=true to serve without a key"),
    }
    if config.sandbox.skills == SkillsMount::None {
        tracing::warn!("no skills source is set (SKILLS_HOST_PATH, SKILLS_PVC_NAME, DEER_FLOW_HOST_BASE_DIR or a THREADS_HOST_PATH ending in /threads): sandboxes get no /mnt/skills");
    }
    if config.sandbox.user_data == UserDataMount::EmptyDir {
        tracing::warn!("THREADS_HOST_PATH is not set: /mnt/user-data is an emptyDir that is lost with the sandbox");
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
