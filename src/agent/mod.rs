//! `sandbox-provisioner node-agent`: binds a claimed warm pool Pod's thread data into its
//! running container, on the node the Pod runs on (one agent per node: a DaemonSet, or a
//! process on the host).
//!
//! The agent watches the pool Pods of its node. When one is claimed (it carries the binds
//! annotation), it checks every bind against its own list of allowed directories (a Pod
//! annotation is not trusted), bind-mounts each onto the Pod's slot and sets the data-bound
//! condition: True, or False with the reason, with everything it mounted undone. A slot
//! directory whose Pod is gone is unmounted and removed. All of this is a reconciliation of
//! what the apiserver says with what is mounted, so an agent that restarts (or a node that
//! rebooted) finishes or cleans up whatever was under way.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};

use crate::spec::{
    keys::{
        BINDS_ANNOTATION, DATA_BOUND_CONDITION, DATA_BOUND_REASON, DATA_NOT_BOUND_REASON,
        POOL_LABEL, SANDBOX_ID_LABEL,
    },
    warm_pool::{slot_name, Bind, DEFAULT_SLOT_ROOT},
};

pub mod mounts;

/// A slot directory without a Pod is left alone this long: the kubelet makes a new Pod's
/// slots before the agent's watch may have shown the Pod.
const ORPHAN_GRACE: Duration = Duration::from_secs(10);
/// A full reconciliation runs at least this often, also without events.
const RESYNC: Duration = Duration::from_secs(10);

/// Flags of `sandbox-provisioner node-agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The node this agent serves: only Pods scheduled there are its.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,

    /// The namespace of the sandboxes (the provisioner's K8S_NAMESPACE); empty: every
    /// namespace (the permissions must then be cluster-wide).
    #[arg(long, env = "K8S_NAMESPACE", default_value = "deer-flow")]
    pub namespace: String,

    /// The directory that holds pool Pods' slots (the provisioner's
    /// SANDBOX_WARM_POOL_SLOT_ROOT).
    #[arg(long, env = "SANDBOX_WARM_POOL_SLOT_ROOT", default_value = DEFAULT_SLOT_ROOT)]
    pub slot_root: PathBuf,

    /// The directories binds may come from, comma-separated: the provisioner's
    /// THREADS_HOST_PATH, the skills base directory and DEER_FLOW_HOST_BASE_DIR. Anything
    /// else a Pod asks for is refused.
    #[arg(
        long,
        env = "NODE_AGENT_ALLOWED_BASES",
        value_delimiter = ',',
        required = true
    )]
    pub allowed_bases: Vec<PathBuf>,

    /// A directory of the agent's own where read-only binds are prepared.
    #[arg(
        long,
        env = "NODE_AGENT_STAGING_DIR",
        default_value = "/run/sandbox-provisioner-node-agent"
    )]
    pub staging: PathBuf,

    /// Time limit of each Kubernetes call, in seconds.
    #[arg(long, env = "K8S_API_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub api_timeout: f64,
}

/// Why the agent cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}: give NODE_NAME (--node), and absolute directories in NODE_AGENT_ALLOWED_BASES")]
    Settings(String),
    #[error(
        "cannot prepare {dir}: {cause}; the agent needs CAP_SYS_ADMIN in the host's mount \
        namespace (docs/operations.md, \"Warm pools\")"
    )]
    Mounts { dir: String, cause: std::io::Error },
    #[error("cannot reach the Kubernetes API: {0}")]
    Kubernetes(#[from] kube::Error),
}

/// The agent's settings, checked.
struct Agent {
    pods: Api<Pod>,
    /// None: every namespace.
    namespace: Option<String>,
    slot_root: PathBuf,
    bases: Vec<PathBuf>,
    staging: PathBuf,
    timeout: Duration,
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    args: AgentArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    check(&args)?;
    let client = Client::try_default().await?;
    run_with(args, client, shutdown).await
}

/// Refuses settings the agent cannot work with.
fn check(args: &AgentArgs) -> Result<(), AgentError> {
    if args.node.trim().is_empty() {
        return Err(AgentError::Settings("the node name is empty".into()));
    }
    if let Some(bad) = args
        .allowed_bases
        .iter()
        .find(|b| !b.is_absolute() || b == &Path::new("/"))
    {
        return Err(AgentError::Settings(format!(
            "allowed base {} is not an absolute directory other than /",
            bad.display()
        )));
    }
    Ok(())
}

/// Runs the agent with this client (its credential decides what it may do) until `shutdown`
/// completes.
pub async fn run_with(
    args: AgentArgs,
    client: Client,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    check(&args)?;
    let prepare = |dir: &Path, result: std::io::Result<()>| {
        result.map_err(|cause| AgentError::Mounts {
            dir: dir.display().to_string(),
            cause,
        })
    };
    prepare(&args.slot_root, mounts::share(&args.slot_root))?;
    prepare(&args.staging, mounts::make_private(&args.staging))?;
    let namespace = Some(args.namespace.trim().to_string()).filter(|n| !n.is_empty());
    let agent = Arc::new(Agent {
        pods: match &namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::all(client),
        },
        namespace,
        slot_root: args.slot_root.clone(),
        bases: args.allowed_bases.clone(),
        staging: args.staging.clone(),
        timeout: Duration::from_secs_f64(args.api_timeout.max(0.1)),
    });
    let (reader, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(POOL_LABEL)
        .fields(&format!("spec.nodeName={}", args.node));
    let changes = Arc::new(tokio::sync::Notify::new());
    let events = reflector(writer, watcher(agent.pods.clone(), config)).default_backoff();
    let notify = changes.clone();
    let watching = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => {
                    failing = false;
                    notify.notify_one();
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "watching this node's pool Pods failed; \
                        retrying (logged once until it recovers)");
                }
                Err(_) => {}
            }
        }
    });
    tracing::info!(node = %args.node, namespace = %args.namespace,
        slot_root = %args.slot_root.display(), "node agent started");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = changes.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            _ = &mut shutdown => break,
        }
        if reader.wait_until_ready().await.is_err() {
            break;
        }
        let pods = reader.state();
        agent.reconcile(&pods).await;
    }
    watching.abort();
    tracing::info!("node agent stopped");
    Ok(())
}

/// The binds a claimed Pod asks for; None for a Pod that is not claimed (or is going).
fn claimed_binds(pod: &Pod) -> Option<Result<Vec<Bind>, String>> {
    if pod.metadata.deletion_timestamp.is_some() || !pod.labels().contains_key(SANDBOX_ID_LABEL) {
        return None;
    }
    let text = pod.annotations().get(BINDS_ANNOTATION)?;
    Some(serde_json::from_str(text).map_err(|e| format!("the binds annotation is not valid: {e}")))
}

/// The data-bound condition's status on the Pod ("True", "False"), if set.
fn bound_status(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == DATA_BOUND_CONDITION)
        .map(|c| c.status.as_str())
}

impl Agent {
    fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.slot_root
            .join(pod.namespace().unwrap_or_default())
            .join(pod.name_any())
    }

    /// The Api of the Pod's namespace (status patches name one Pod).
    fn pods_of(&self, pod: &Pod) -> Api<Pod> {
        match &self.namespace {
            Some(_) => self.pods.clone(),
            None => Api::namespaced(
                self.pods.clone().into_client(),
                &pod.namespace().unwrap_or_default(),
            ),
        }
    }

    /// Makes the node match the Pods: binds for claimed Pods, no slots for Pods that are gone.
    async fn reconcile(&self, pods: &[Arc<Pod>]) {
        // Read once per round: a node may hold many bound Pods.
        let mounted: BTreeSet<PathBuf> = mounts::mount_points()
            .unwrap_or_default()
            .into_iter()
            .collect();
        for pod in pods.iter().filter(|p| self.has_slots_here(p)) {
            let Some(binds) = claimed_binds(pod) else {
                continue;
            };
            let status = bound_status(pod);
            let outcome = match (status, binds) {
                // It failed once; the provisioner removes it.
                (Some("False"), _) => continue,
                (Some("True"), Ok(binds)) if self.all_mounted(pod, &binds, &mounted) => continue,
                (_, Err(problem)) => Err(problem),
                (_, Ok(binds)) => self.bind_all(pod, &binds),
            };
            self.report(pod, outcome).await;
        }
        self.remove_orphans(pods);
    }

    /// Whether the Pod's slots are below this agent's slot root (another agent, with another
    /// root, may serve the same node).
    fn has_slots_here(&self, pod: &Pod) -> bool {
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        volumes.into_iter().flatten().any(|v| {
            v.name.starts_with("slot-")
                && v.host_path
                    .as_ref()
                    .is_some_and(|h| Path::new(&h.path).starts_with(&self.slot_root))
        })
    }

    fn all_mounted(&self, pod: &Pod, binds: &[Bind], mounted: &BTreeSet<PathBuf>) -> bool {
        let dir = self.pod_dir(pod);
        binds
            .iter()
            .all(|b| mounted.contains(&dir.join(slot_name(&b.path))))
    }

    /// Binds every directory, or none: a failure undoes what was mounted.
    fn bind_all(&self, pod: &Pod, binds: &[Bind]) -> Result<(), String> {
        let (dir, name) = (self.pod_dir(pod), pod.name_any());
        let bound = binds.iter().try_for_each(|bind| {
            let base = mounts::check_source(bind, &self.bases)?;
            let slot = dir.join(slot_name(&bind.path));
            mounts::bind_onto(bind, base, &slot, &self.staging)
        });
        bound.map_err(|e| {
            if let Err(undo) = mounts::unmount_all(&dir) {
                tracing::error!(pod = %name, error = %undo, "undoing a failed bind failed");
            }
            e.to_string()
        })
    }

    /// Sets the data-bound condition on the Pod.
    async fn report(&self, pod: &Pod, outcome: Result<(), String>) {
        let name = &pod.name_any();
        let (status, reason, message) = match &outcome {
            Ok(()) => (
                "True",
                DATA_BOUND_REASON,
                "the thread's data is bound".to_string(),
            ),
            Err(problem) => ("False", DATA_NOT_BOUND_REASON, problem.clone()),
        };
        match &outcome {
            Ok(()) => tracing::info!(pod = name, "bound a claimed Pod's data"),
            Err(problem) => tracing::warn!(
                pod = name,
                problem,
                "could not bind a claimed Pod's \
                data"
            ),
        }
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": DATA_BOUND_CONDITION,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        let (params, patch) = (PatchParams::default(), Patch::Strategic(&patch));
        let pods = self.pods_of(pod);
        let call = pods.patch_status(name, &params, &patch);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(pod = name, error = %e, "reporting the binding failed; \
                retried on the next round"),
            Err(_) => tracing::warn!(
                pod = name,
                "reporting the binding timed out; retried on \
                the next round"
            ),
        }
    }

    /// Unmounts and removes the slots of Pods that no longer exist.
    fn remove_orphans(&self, pods: &[Arc<Pod>]) {
        let existing: BTreeSet<PathBuf> = pods.iter().map(|p| self.pod_dir(p)).collect();
        let namespaces: Vec<PathBuf> = match &self.namespace {
            Some(namespace) => vec![self.slot_root.join(namespace)],
            None => std::fs::read_dir(&self.slot_root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect(),
        };
        let entries = namespaces
            .iter()
            .flat_map(std::fs::read_dir)
            .flatten()
            .flatten();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if existing.contains(&entry.path()) {
                continue;
            }
            let young = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age < ORPHAN_GRACE);
            if young {
                continue;
            }
            match mounts::remove_slots(&entry.path()) {
                Ok(()) => tracing::info!(pod = %name, "removed the slots of a Pod that is gone"),
                Err(e) => tracing::warn!(pod = %name, error = %e, "removing the slots of a Pod \
                    that is gone failed; retried on the next round"),
            }
        }
    }
}
