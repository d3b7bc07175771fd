//! Checks the service runs before it serves: the namespace, the claims, and a dry run of the
//! pod this configuration makes.

use jiff::Timestamp;

use super::{Cluster, Result};
use crate::{
    k8s::{calls, manifests},
    sandbox::{LarkRequest, SandboxId, SandboxRequest, ThreadId},
};

impl Cluster {
    /// Has the apiserver validate and admit the pod this configuration makes (dry run), so that
    /// a placement, size or security setting it refuses is found at start, not at first use.
    pub async fn check_pod_template(&self) -> Result<(), calls::Error> {
        let id = SandboxId::parse("startup-check").expect("a valid id");
        let thread = ThreadId::parse("startup-check").expect("a valid thread id");
        let mut request = SandboxRequest::new(id, thread);
        request.resources = self.spec.default_resources.clone();
        request.timers = self.lifecycle.timers;
        // With the helpers the configuration allows, so that their containers are checked too.
        request.lark = LarkRequest {
            runtime: true,
            broker: true,
        };
        let pod = manifests::pod(&self.spec, &request, Timestamp::now());
        self.calls.dry_run_pod(&pod).await.map(|_| ())
    }

    /// Whether the configured PersistentVolumeClaim exists in the sandbox namespace.
    pub async fn pvc_exists(&self, name: &str) -> Result<bool> {
        Ok(self.calls.pvc_exists(name).await?)
    }
}
