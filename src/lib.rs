//! sandbox-provisioner: isolated code-execution sandboxes for AI agents on Kubernetes.
//!
//! Layers, outermost first (`server` wires everything; `sandbox` is the pure domain). Each
//! module uses only the modules named in its row, which all stand below it; the table is
//! `src/layers.rs`, and a test checks the imports of `src/` and this copy against it.
//!
//! ```text
//!   main ─► server ─► api ─► fleet ─► cluster ─► k8s ─► spec ─► sandbox
//!                 ├─► gateway ─┘
//!                 └─► tasks (election, reaper, pools) admission, config, metrics, permissions
//!   main ─► agent (node-agent: binds thread data into warm Pods) ─► spec
//! ```
//!
//! | module | may use |
//! | --- | --- |
//! | `server` | admission, api, cluster, config, fleet, gateway, k8s, metrics, spec, tasks |
//! | `doctor` | cli, cluster, config, k8s, permissions, spec |
//! | `api` | admission, cluster, config, fleet, k8s, metrics, sandbox |
//! | `gateway` | cluster, config, fleet, k8s, metrics, sandbox, spec |
//! | `fleet` | admission, cluster, config, metrics, sandbox |
//! | `tasks` | cluster, k8s, spec |
//! | `cluster` | admission, config, k8s, metrics, sandbox, spec |
//! | `k8s` | metrics, permissions, sandbox, spec |
//! | `cli` | agent, config |
//! | `config` | admission, metrics, sandbox, spec |
//! | `admission` | metrics, sandbox, spec |
//! | `healthcheck` |  |
//! | `telemetry` |  |
//! | `metrics` | sandbox |
//! | `permissions` |  |
//! | `agent` | spec |
//! | `spec` | sandbox |
//! | `sandbox` |  |

pub mod admission;
pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod doctor;
pub mod fleet;
pub mod gateway;
pub mod healthcheck;
pub mod k8s;
#[cfg(test)]
mod layers;
pub mod metrics;
pub mod permissions;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod tasks;
pub mod telemetry;
