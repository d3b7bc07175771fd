//! The baseline NetworkPolicy: one policy that shuts off every managed sandbox that lacks its
//! own, so that the moments between a pod and its policy (or a crash between them) leave the
//! sandbox closed rather than open. What to do is a pure decision; the step applies it.

use std::sync::atomic::Ordering;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{Cluster, Result};
use crate::k8s::manifests;

/// What the baseline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineAction {
    /// Policies are on: create it (an existing one is fine).
    Create,
    /// Policies are off: a baseline left from before would shut every sandbox off.
    Remove,
}

/// `policies_on`: sandboxes get NetworkPolicies. `done`: this process already made the
/// baseline match. `watched`: whether the watched copy shows it (None when not known).
pub fn plan(policies_on: bool, done: bool, watched: Option<bool>) -> Option<BaselineAction> {
    match (policies_on, done, watched) {
        (true, _, Some(false)) | (true, false, _) => Some(BaselineAction::Create),
        (false, false, _) => Some(BaselineAction::Remove),
        _ => None,
    }
}

impl Cluster {
    pub(super) fn policies_on(&self) -> bool {
        self.spec.policies_on()
    }

    /// Brings the baseline in line with the configuration: once per process, and again when
    /// the watched copy shows it missing (`watched`). Returns whether it acted. Removal is
    /// quiet when the policy is absent or not permitted: without policies the service needs
    /// no rights on them.
    pub(super) async fn settle_baseline(&self, watched: Option<bool>) -> Result<bool> {
        let done = self.baseline_done.load(Ordering::Relaxed);
        let Some(action) = plan(self.policies_on(), done, watched) else {
            return Ok(false);
        };
        match action {
            BaselineAction::Create => {
                let baseline =
                    manifests::baseline_network_policy(&self.spec).expect("policies are on");
                match self.calls.create(&baseline).await {
                    Ok(_) => tracing::info!(
                        name = manifests::BASELINE_POLICY_NAME,
                        "created the baseline NetworkPolicy that shuts off sandboxes without \
                            their own"
                    ),
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            BaselineAction::Remove => match self
                .calls
                .delete::<NetworkPolicy>(manifests::BASELINE_POLICY_NAME)
                .await
            {
                Ok(true) => tracing::warn!(
                    name = manifests::BASELINE_POLICY_NAME,
                    "SANDBOX_NETWORK_POLICY is none: removed the baseline NetworkPolicy left from \
                        before"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not check for a baseline NetworkPolicy")
                }
            },
        }
        self.baseline_done.store(true, Ordering::Relaxed);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        use BaselineAction::*;
        // Policies on: created once, and again whenever the watch shows it gone.
        assert_eq!(plan(true, false, None), Some(Create));
        assert_eq!(plan(true, true, None), None);
        assert_eq!(plan(true, true, Some(true)), None);
        assert_eq!(plan(true, true, Some(false)), Some(Create));
        // Policies off: a leftover is removed once.
        assert_eq!(plan(false, false, None), Some(Remove));
        assert_eq!(plan(false, true, None), None);
        assert_eq!(plan(false, true, Some(true)), None);
    }
}
