//! What the integration tests and the benchmarks share: the local clusters, a namespace per
//! test, the service in-process and as a binary, waiting, and the gate that lets a test run
//! alone. Every item is exported at the top.

mod bench;
mod binary;
mod cluster;
mod gate;
mod namespace;
mod real_node;
mod rounds;
mod service;
mod wait;

pub use bench::{bench_env, ms, percentiles_ms};
pub use binary::{binary, RunningBinary};
pub use cluster::{
    apiserver_port, client, client_for, free_port, kubeconfig_path, second_client,
    second_kubeconfig_path, silent_apiserver, BlackholeProxy, ExtraApiserver,
};
pub use gate::{alone, Alone};
pub use namespace::{provisioner_rules, TestNamespace};
pub use real_node::{
    gateway_mode, real_node_containers, real_node_gateway_args, real_node_pod_template,
    real_node_pod_template_with, real_node_running, real_node_serve_args, real_node_slot_root,
    real_node_state, start_node_agent, stop_node_agent, warm_pool_mode, GATEWAY_TEST_SECRET,
    REAL_NODE, REAL_NODE_ADDRESS, REAL_NODE_IMAGE,
};
pub use rounds::{counted, metric_sum, reaper_rounds, LEADER, REAPER_ROUNDS, TENANT_FILE_CHECKS};
pub use service::{json_answer, serve_args, TestService};
pub use wait::{eventually, random_suffix};
