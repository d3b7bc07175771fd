//! Connecting to a cluster: its client, timed calls and watch cache, and the probe that says
//! whether its apiserver answers.

use std::time::Duration;

use tokio::sync::watch;

use super::Cluster;
use crate::{
    config::{ClusterConfig, Connection, Lifecycle},
    k8s::{
        cache::{Cache, CacheScope},
        calls::{self, Calls},
        client::{self, ClientError},
        manifests,
        refusals::Refusals,
    },
    metrics::Metrics,
};

/// How often each cluster's apiserver is asked whether it answers. A stopped apiserver keeps
/// its connections open and the watch silent, so only asking shows it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Why a probe failed, as answers show it: a timeout (the client's own or the probe's) says
/// which setting bounds it; anything else keeps the whole chain, since the top error alone
/// ("client error (Connect)") hides the cause an operator needs (certificate, refused, ...).
fn probe_failure(e: &dyn std::error::Error, timeout: Duration) -> String {
    let chain = calls::error_chain(e);
    if calls::is_timeout_cause(&chain) {
        format!("the apiserver did not answer within {timeout:?} (K8S_API_TIMEOUT_SECONDS)")
    } else {
        chain
    }
}

impl Cluster {
    /// Connects to the cluster and starts its watch cache and reachability probe, which run
    /// until `shutdown` turns true (or its sender is dropped).
    pub async fn connect(
        config: &ClusterConfig,
        lifecycle: Lifecycle,
        metrics: &Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Cluster, ClientError> {
        let connection = &config.connection;
        let connected = client::connect(&self::connection(connection)).await?;
        tracing::info!(cluster = %config.name, source = %connected.source,
            server = %connected.server, "Kubernetes client configured");
        let namespace = &connection.namespace;
        let metrics = metrics.for_cluster(&config.name);
        let refusals = Refusals::new(namespace, metrics.clone());
        let calls = Calls::new(
            connected.client,
            namespace,
            connection.api_timeout,
            metrics.clone(),
            refusals.clone(),
        );
        let cache = Cache::start(
            connected.watch_client,
            CacheScope {
                namespace,
                selector: &manifests::managed_selector(),
                network_policies: config.sandbox.policies_on(),
                pools: config.sandbox.warm_pool.on(),
                call_timeout: connection.api_timeout,
            },
            refusals,
            shutdown.clone(),
        );
        let mut cluster = Cluster::new(
            &config.name,
            (calls, cache),
            config.sandbox.clone(),
            lifecycle,
            metrics,
        )
        .with_placement(config.weight, config.max_sandboxes, config.labels.clone());
        cluster.probe = std::sync::Arc::new(tokio::sync::watch::Sender::new(Default::default()));
        cluster.spawn_probe(connection.api_timeout, shutdown);
        Ok(cluster)
    }

    /// Asks the apiserver for its version every [`PROBE_INTERVAL`] (within `timeout`) until
    /// `shutdown`, recording whether it answered (a change is logged once); on the first
    /// round that reaches it, and whenever it answers again after an outage, the namespace is
    /// prepared (created when missing), so that readiness has only to read.
    fn spawn_probe(&self, timeout: Duration, mut shutdown: watch::Receiver<bool>) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let client = cluster.calls.client();
            let mut tick = tokio::time::interval(PROBE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut namespace_known = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let failure = match tokio::time::timeout(timeout, client.apiserver_version()).await
                {
                    // Any answer, a 429 of an apiserver shedding load included, means it is
                    // there: only calls that get no answer make a cluster unreachable.
                    Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => None,
                    Ok(Err(e)) => Some(probe_failure(&e, timeout)),
                    Err(elapsed) => Some(probe_failure(&elapsed, timeout)),
                };
                let reachable = failure.is_none();
                if cluster.note_reachable(failure) {
                    namespace_known = false;
                }
                if reachable && !namespace_known {
                    // Known once it is usable, or refused for good (a permission the log and
                    // /readyz already name); a timeout or a transient failure asks again.
                    let prepared = tokio::time::timeout(timeout, cluster.ensure_namespace()).await;
                    namespace_known = match prepared {
                        Ok(Ok(_)) => true,
                        Ok(Err(e)) => e.is_permission_denied(),
                        Err(_) => false,
                    };
                }
                cluster.note_probed();
            }
        });
    }
}

/// How the Kubernetes client connects, from the cluster's connection settings.
pub fn connection(connection: &Connection) -> client::Connection {
    client::Connection {
        kubeconfig_path: connection.kubeconfig_path.clone(),
        context: connection.context.clone(),
        api_server: connection.api_server.clone(),
        insecure_skip_tls_verify: connection.insecure_skip_tls_verify,
        timeout: connection.api_timeout,
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
