//! The simulated Node: registered once, then kept fresh with a heartbeat.

use std::time::Duration;

use k8s_openapi::{api::core::v1::Node, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api, Client,
};
use serde_json::json;

use crate::Args;

/// Creates the Node when missing and marks it Ready with generous capacity; returns the images
/// its status already lists (pulled before a restart of the simulator).
pub async fn register(client: &Client, args: &Args) -> anyhow::Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": args.node_name,
            "labels": {
                "kubernetes.io/hostname": args.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "node-sim",
            },
        },
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    patch_status(&nodes, args).await?;
    let node = nodes.get(&args.node_name).await?;
    // The apiserver taints a new node not-ready; the node lifecycle controller (not run here)
    // lifts that once the node reports Ready. Without it, DaemonSets would skip the node.
    let taints: Vec<serde_json::Value> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            t.key != "node.kubernetes.io/not-ready" && t.key != "node.kubernetes.io/unreachable"
        })
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .collect();
    let lifted = json!({"spec": {"taints": taints}});
    nodes
        .patch(
            &args.node_name,
            &PatchParams::default(),
            &Patch::Merge(&lifted),
        )
        .await?;
    Ok(node
        .status
        .and_then(|s| s.images)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.names.unwrap_or_default())
        .collect())
}

/// Refreshes the Ready condition now and then, so the node looks alive to anyone who checks.
pub async fn heartbeat(client: Client, args: Args) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        if let Err(e) = patch_status(&nodes, &args).await {
            tracing::warn!(error = %e, "node heartbeat failed");
        }
    }
}

async fn patch_status(nodes: &Api<Node>, args: &Args) -> anyhow::Result<()> {
    let now = Time(Timestamp::now());
    let capacity = json!({
        "cpu": "64", "memory": "256Gi", "pods": "10000", "ephemeral-storage": "1Ti",
    });
    let condition = |type_: &str, status: &str, reason: &str| {
        json!({
            "type": type_, "status": status, "reason": reason,
            "message": "simulated by node-sim",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("Ready", "True", "KubeletReady"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": args.node_ip.to_string()},
                {"type": "Hostname", "address": args.node_name},
            ],
            "nodeInfo": {
                "machineID": "node-sim", "systemUUID": "node-sim", "bootID": "node-sim",
                "kernelVersion": "simulated", "osImage": "node-sim", "containerRuntimeVersion": "sim://1",
                "kubeletVersion": "v1.20.2-sim", "kubeProxyVersion": "v1.20.2-sim",
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }
    });
    tokio::time::timeout(
        Duration::from_secs(args.api_timeout_secs),
        nodes.patch_status(
            &args.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        ),
    )
    .await??;
    Ok(())
}
