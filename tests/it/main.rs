//! The integration tests: one binary, one module per area, against the real local clusters
//! (`scripts/local-cluster`, `scripts/second-cluster`). Support code is the `testkit` crate
//! (`tests/support`), shared with the benchmarks.

mod api;
mod cache;
mod deerflow;
mod fleet;
mod gateway;
mod hardening;
mod lifecycle;
mod local_cluster;
mod openapi;
mod operations;
mod options;
mod real_node;
mod startup;
mod stress;
mod suspend;
mod tenants;
mod warm_pool;
