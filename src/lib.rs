//! sandbox-provisioner: isolated code-execution sandboxes for AI agents on Kubernetes.
//!
//! Layers, outermost first:
//!
//! ```text
//!   main ─► server (the one wiring: Server::build / prepare / serve)
//!             ├─► api          HTTP: app(), handlers, auth, limits, error → status + JSON
//!             ├─► admission    tenants (key digests) and quotas (pure decisions)
//!             ├─► fleet        every cluster behind one API; placement (pure) picks one
//!             ├─► provisioner  the sandbox rules; expiry / sweep / baseline as pure plans
//!             │     └─► member one cluster: client, timed calls, watch cache, namespace
//!             │           └─► k8s  client, timed calls, watch cache, manifests, objects → domain
//!             └─► tasks        leader election, the reaper loop
//!   config ─► spec, sandbox    parsed once at start into typed sections (no k8s)
//!   spec                       what operators configure about the sandbox objects
//!   sandbox                    the pure domain: ids, status, timers, resources, the API view
//!   permissions                the one table of Kubernetes verbs (Role check, doctor, refusals)
//! ```
//!
//! `config` and `k8s` do not import each other: the manifests receive a [`spec::SandboxSpec`].

pub mod admission;
pub mod api;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod fleet;
pub mod healthcheck;
pub mod k8s;
pub mod member;
pub mod metrics;
pub mod permissions;
pub mod provisioner;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod tasks;
pub mod telemetry;
