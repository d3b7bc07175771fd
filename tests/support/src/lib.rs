//! What the integration tests and the benchmarks share: the local clusters, a namespace per
//! test, the service in-process and as a binary, waiting, and the gate that lets a test run
//! alone. Every item is exported at the top.

mod bench;
mod binary;
mod cluster;
mod gate;
mod namespace;
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
pub use rounds::{counted, metric_sum, reaper_rounds, LEADER, REAPER_ROUNDS, TENANT_FILE_CHECKS};
pub use service::{json_answer, serve_args, TestService};
pub use wait::{eventually, random_suffix};
