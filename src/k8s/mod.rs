//! Kubernetes access: building the client, manifest builders (pure), and cluster operations.

pub mod cache;
pub mod client;
pub mod cluster;
pub mod manifests;
pub mod network_policy;
pub mod placement;
