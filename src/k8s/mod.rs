//! Kubernetes access: the client, timed cluster operations, the watch cache, the objects a
//! sandbox is made of (pure builders) and the way back from objects to the domain.

pub mod cache;
pub mod calls;
pub mod client;
pub mod lease;
pub mod manifests;
pub mod read;
pub mod record;
pub mod refusals;
pub mod status;
