//! node-sim: plays kubelet and kube-proxy for a local test apiserver that has no real nodes.
//!
//! It registers one Node, binds every unscheduled pod left to the default scheduler to it, reports pod status as a kubelet
//! would (including simulated failures chosen per pod), serves a stub of the sandbox HTTP API on
//! 127.0.0.1 at the node port of every NodePort Service that selects a ready pod, and finishes
//! pod deletions. Everything goes through the Kubernetes API, like kwok does.

mod behaviour;
mod images;
mod kubelet;
mod node;
mod pods;
mod status;
mod stubs;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

/// Command-line settings of the simulator.
#[derive(Parser, Debug, Clone)]
#[command(name = "node-sim", version, about)]
pub struct Args {
    /// Kubeconfig of the cluster to simulate a node for (default: the standard inference).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Name of the simulated Node.
    #[arg(long, default_value = "local-node")]
    node_name: String,
    /// Address the stubs listen on and the pods report as their IP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::Ipv4Addr,
    /// The address pods report as their IP (default: the node's). The apiserver's service
    /// proxy refuses loopback addresses, so a cluster whose Pods are reached through it sets a
    /// local, non-loopback address here.
    #[arg(long)]
    pod_ip: Option<std::net::Ipv4Addr>,
    /// How long a container takes to boot (until it answers probes) when its pod's annotation
    /// and image tag set none, in milliseconds.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
    /// How long pulling an image the node lacks takes when the pod's annotation and the image's
    /// tag set none, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pull_ms: u64,
    /// How often a crash-looping container "restarts", in milliseconds.
    #[arg(long, default_value_t = 2000)]
    crash_interval_ms: u64,
    /// Time limit of each apiserver call, in seconds.
    #[arg(long, default_value_t = 10)]
    api_timeout_secs: u64,
}

impl Args {
    /// The addresses the pods' status reports.
    fn addresses(&self) -> status::Addresses {
        status::Addresses {
            host: self.node_ip.to_string(),
            pod: self.pod_ip.unwrap_or(self.node_ip).to_string(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let client = client(&args).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    let present = node::register(&client, &args).await?;
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), args.clone()));
    tracing::info!(node = %args.node_name, "node registered and Ready; watching pods");

    let result = tokio::select! {
        r = pods::run(client, args, present) => r,
        _ = &mut shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    heartbeat.abort();
    result
}

async fn client(args: &Args) -> anyhow::Result<Client> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    config.connect_timeout = Some(Duration::from_secs(args.api_timeout_secs));
    Ok(Client::try_from(config)?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
