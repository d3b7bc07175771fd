//! One Kubernetes cluster the service works in: its client, its timed calls, its watch cache,
//! its namespace, whether its apiserver answers, and the permissions it refused, behind one
//! type. Without SANDBOX_CLUSTERS there is one member, named `default`; with it, the fleet
//! holds one member per entry.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use tokio::sync::watch;

use crate::{
    config::ClusterSection,
    k8s::refusals::Refusals,
    k8s::{
        cache::{Cache, CacheScope},
        calls::Calls,
        client::{self, ClientError},
        manifests,
    },
    metrics::Metrics,
};

/// One cluster the service works in. Cheap to clone.
#[derive(Clone)]
pub struct Member {
    name: String,
    pub(crate) calls: Calls,
    pub(crate) cache: Cache,
    /// Why the apiserver did not answer the last reachability probe; None while it answers.
    unreachable: Arc<RwLock<Option<String>>>,
}

/// How often each cluster's apiserver is asked whether it answers. A stopped apiserver keeps
/// its connections open and the watch silent, so only asking shows it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Why a probe failed, as answers show it: a timeout (the client's own or the probe's) says
/// which setting bounds it; anything else keeps the whole chain, since the top error alone
/// ("client error (Connect)") hides the cause an operator needs (certificate, refused, ...).
fn probe_failure(e: &dyn std::error::Error, timeout: Duration) -> String {
    let chain = crate::k8s::calls::error_chain(e);
    if crate::k8s::calls::is_timeout_cause(&chain) {
        format!("the apiserver did not answer within {timeout:?} (K8S_API_TIMEOUT_SECONDS)")
    } else {
        chain
    }
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
        let cluster = Calls::new(
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
            shutdown.clone(),
        );
        let member = Member::new(name, cluster, cache);
        member.spawn_probe(section.api_timeout, shutdown);
        Ok(member)
    }

    /// Asks the apiserver for its version every [`PROBE_INTERVAL`] (within `timeout`) until
    /// `shutdown`, recording whether it answered; a change is logged once.
    fn spawn_probe(&self, timeout: Duration, mut shutdown: watch::Receiver<bool>) {
        let (client, state, name) = (self.client(), self.unreachable.clone(), self.name.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let failure = match tokio::time::timeout(timeout, client.apiserver_version()).await
                {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(probe_failure(&e, timeout)),
                    Err(elapsed) => Some(probe_failure(&elapsed, timeout)),
                };
                let mut current = state.write().unwrap_or_else(|e| e.into_inner());
                match (&*current, &failure) {
                    (None, Some(why)) => {
                        tracing::warn!(cluster = %name, cause = %why, "cluster unreachable: its sandboxes answer 503 and new ones go to other clusters until it answers again; check that its apiserver runs and is reachable from here")
                    }
                    (Some(_), None) => tracing::info!(cluster = %name, "cluster reachable again"),
                    _ => {}
                }
                *current = failure;
            }
        });
    }

    /// Why the cluster's apiserver is taken to be unreachable now, if it is.
    pub fn unreachable(&self) -> Option<String> {
        self.unreachable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A member from parts (tests build one whose calls go nowhere).
    pub fn new(name: &str, calls: Calls, cache: Cache) -> Member {
        Member {
            name: name.to_string(),
            calls,
            cache,
            unreachable: Arc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        self.calls.namespace()
    }

    /// Whether the cache holds the sandbox's pod, even from before the watch broke: where a
    /// sandbox lives does not change while its cluster is out of reach.
    pub fn holds(&self, pod_name: &str) -> bool {
        self.cache.pod(pod_name).is_some()
    }

    /// Sandboxes in the cluster as the synced cache counts them (None while it is not usable).
    pub fn sandbox_count(&self) -> Option<usize> {
        let cache = &self.cache;
        cache.state().usable().then(|| cache.pods().len())
    }

    /// The client, for tasks that need their own API access.
    pub fn client(&self) -> kube::Client {
        self.calls.client()
    }

    /// The Leases of this cluster's namespace, taken as `holder`.
    pub fn leases(&self, holder: String) -> crate::k8s::lease::Leases {
        crate::k8s::lease::Leases::new(self.calls.clone(), holder)
    }

    /// The permissions this cluster refused and that have not worked since.
    pub fn refusals(&self) -> &Refusals {
        self.calls.refusals()
    }
}

/// How the Kubernetes client connects, from the cluster section.
pub fn connection(section: &ClusterSection) -> client::Connection {
    client::Connection {
        kubeconfig_path: section.kubeconfig_path.clone(),
        context: section.context.clone(),
        api_server: section.api_server.clone(),
        insecure_skip_tls_verify: section.insecure_skip_tls_verify,
        timeout: section.api_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_probe_failure_names_the_root_cause_or_the_timeout_setting() {
        let tls = Outer(std::io::Error::other(
            "invalid peer certificate: NotValidForName",
        ));
        assert_eq!(
            probe_failure(&tls, Duration::from_secs(5)),
            "client error (Connect): invalid peer certificate: NotValidForName"
        );
        let slow = Outer(std::io::Error::other("deadline has elapsed"));
        assert_eq!(
            probe_failure(&slow, Duration::from_secs(1)),
            "the apiserver did not answer within 1s (K8S_API_TIMEOUT_SECONDS)"
        );
    }
}
