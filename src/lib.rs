//! sandbox-provisioner: isolated code-execution sandboxes for AI agents on Kubernetes.
//!
//! Layers, outermost first: [`api`] (HTTP) → [`provisioner`] (the sandbox rules) →
//! [`k8s`] (manifests and cluster calls), with the pure [`sandbox`] domain beside them and
//! [`config`] parsed once at start.

pub mod api;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod healthcheck;
pub mod k8s;
pub mod metrics;
pub mod permissions;
pub mod provisioner;
pub mod sandbox;
pub mod server;
pub mod tasks;
pub mod telemetry;
