//! Kubernetes access: the client, timed cluster operations, the watch cache, the objects a
//! sandbox is made of (pure builders) and the way back from objects to the domain.

pub mod cache;
pub mod client;
pub mod cluster;
pub mod manifests;
pub mod read;
pub mod status;
