//! One Kubernetes cluster the service works in: its client, its timed calls, its watch cache,
//! its namespace and the permissions it refused, behind one type. Today there is one member,
//! named `default`; serving several clusters means holding a set of members, not threading a
//! second client through every call.

use tokio::sync::watch;

use crate::{
    config::ClusterSection,
    k8s::{
        cache::{Cache, CacheScope},
        client::{self, ClientError},
        cluster::Cluster,
        manifests,
    },
    metrics::Metrics,
    permissions::Refusals,
};

/// The name of the single cluster of a configuration without a cluster list.
pub const DEFAULT_MEMBER: &str = "default";

/// One cluster the service works in. Cheap to clone.
#[derive(Clone)]
pub struct Member {
    name: String,
    pub(crate) cluster: Cluster,
    pub(crate) cache: Cache,
}

impl Member {
    /// Connects to the cluster and starts its watch cache, which runs until `shutdown` turns
    /// true (or its sender is dropped).
    pub async fn connect(
        name: &str,
        section: &ClusterSection,
        network_policies: bool,
        metrics: &Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Member, ClientError> {
        let connected = client::connect(&connection(section)).await?;
        tracing::info!(member = name, source = %connected.source, server = %connected.server, "Kubernetes client configured");
        let namespace = &section.namespace;
        let refusals = Refusals::new(namespace, metrics.clone());
        let cluster = Cluster::new(
            connected.client,
            namespace,
            section.api_timeout,
            metrics.clone(),
            refusals.clone(),
        );
        let cache = Cache::start(
            connected.watch_client,
            CacheScope {
                namespace,
                selector: &manifests::managed_selector(),
                network_policies,
                call_timeout: section.api_timeout,
            },
            refusals,
            shutdown,
        );
        Ok(Member::new(name, cluster, cache))
    }

    /// A member from parts (tests build one whose calls go nowhere).
    pub fn new(name: &str, cluster: Cluster, cache: Cache) -> Member {
        Member {
            name: name.to_string(),
            cluster,
            cache,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        self.cluster.namespace()
    }

    /// The client, for tasks that need their own API access (the leader election).
    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    /// The permissions this cluster refused and that have not worked since.
    pub fn refusals(&self) -> &Refusals {
        self.cluster.refusals()
    }
}

/// How the Kubernetes client connects, from the cluster section.
pub fn connection(section: &ClusterSection) -> client::Connection {
    client::Connection {
        kubeconfig_path: section.kubeconfig_path.clone(),
        api_server: section.api_server.clone(),
        insecure_skip_tls_verify: section.insecure_skip_tls_verify,
        timeout: section.api_timeout,
    }
}
