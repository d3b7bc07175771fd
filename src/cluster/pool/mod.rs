//! Warm pools in one cluster: the keeper's round (on the leader), and a create's claim of a
//! ready pool Pod (on any replica).
//!
//! ```text
//!  keeper (leader)        pool Pods (label pool=SIZE)        create (any replica)
//!  plan → create/remove → [ready] [ready] [starting]  ← claim: one conditional patch
//!                                    │                   (resourceVersion), then
//!                          node agent binds the thread's  wait for the data-bound
//!                          directories onto the slots →   condition
//! ```

use std::time::Instant;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

use super::{Cluster, Error, Result};
use crate::{
    k8s::{manifests, record::PoolPodRecord},
    sandbox::{SandboxId, SandboxRequest},
    spec::{keys::DATA_NOT_BOUND_REASON, warm_pool::ColdReason},
};

mod plan;

pub use plan::{plan, Action};

/// Pool Pods a create tries before it goes cold (each failed try lost a race for that Pod).
const CLAIM_ATTEMPTS: usize = 4;

/// What one keeper round did.
#[derive(Debug, Default)]
pub struct KeeperRound {
    pub created: usize,
    pub removed: usize,
    /// Failed steps, each with its cause (the keeper task logs them, rate-limited).
    pub failures: Vec<String>,
}

/// A random suffix for a pool Pod's name (10 lowercase hex digits).
fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 5];
    // The system's randomness does not fail on Linux; a failure leaves a time-based name.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = Timestamp::now().as_nanosecond().to_le_bytes();
        bytes.copy_from_slice(&nanos[..5]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// One round of the pool keeper: starts Pods up to each pool's target and replaces those
    /// that ended or are too old. `leading` is checked before every step.
    pub async fn keep_pools(&self, leading: impl Fn() -> bool) -> KeeperRound {
        let mut round = KeeperRound::default();
        let pool = &self.spec.warm_pool;
        let Some(pods) = self.cache.pool_pods() else {
            return round;
        };
        if !pool.on() || !self.cache.state().usable() {
            return round;
        }
        let view: Vec<(&str, &PoolPodRecord)> =
            pods.iter().map(|(name, pod)| (&**name, &**pod)).collect();
        let counts = plan::counts(&view);
        for class in &pool.classes {
            let (ready, starting) = counts.get(&class.name).copied().unwrap_or_default();
            self.metrics.pool_pods(&class.name, ready, starting);
        }
        let unclaimed: usize = counts.values().map(|(r, s)| r + s).sum();
        let held = self.cache.pod_count() + unclaimed;
        let room = self.max_sandboxes.map(|max| {
            isize::try_from(max).unwrap_or(isize::MAX) - isize::try_from(held).unwrap_or(0)
        });
        for action in plan(pool, &view, Timestamp::now(), room) {
            if !leading() {
                break;
            }
            match action {
                Action::Create { pool: class } => {
                    let Some(class) = pool.class(&class) else {
                        continue;
                    };
                    let name = manifests::pool_pod_name(&class.name, &random_suffix());
                    let pod = manifests::pool_pod(&self.spec, class, &name, Timestamp::now());
                    match self.create_pod(&pod).await {
                        Ok(_) => round.created += 1,
                        Err(e) => round
                            .failures
                            .push(format!("starting pool Pod {name} failed: {e}")),
                    }
                }
                Action::Remove { name, why } => match self.calls.delete::<Pod>(&name).await {
                    Ok(_) => {
                        tracing::info!(pod = %name, reason = why.label(), "removed a pool Pod");
                        round.removed += 1;
                    }
                    Err(e) => round
                        .failures
                        .push(format!("removing pool Pod {name} failed: {e}")),
                },
            }
        }
        round
    }

    /// Each pool: its size, its target, and its unclaimed Pods (ready, starting).
    pub fn warm_pools(&self) -> Vec<(String, u32, (usize, usize))> {
        let pods = self.cache.pool_pods().unwrap_or_default();
        let view: Vec<(&str, &PoolPodRecord)> =
            pods.iter().map(|(name, pod)| (&**name, &**pod)).collect();
        let counts = plan::counts(&view);
        self.spec
            .warm_pool
            .classes
            .iter()
            .filter(|c| c.target > 0)
            .map(|c| {
                let count = counts.get(&c.name).copied().unwrap_or_default();
                (c.name.clone(), c.target, count)
            })
            .collect()
    }

    /// Takes a ready Pod of the pool that serves `request`: one patch, conditional on the
    /// Pod's resourceVersion, gives it the sandbox's labels and annotations and what the node
    /// agent is to bind. None: the create goes cold (counted with the reason).
    pub(super) async fn claim(
        &self,
        request: &SandboxRequest,
        created: Timestamp,
    ) -> Result<Option<Pod>> {
        let pool = &self.spec.warm_pool;
        if !pool.on() {
            return Ok(None);
        }
        let (class, binds) = match pool.serving(&self.spec, request) {
            Ok(serving) => serving,
            Err(reason) => {
                self.metrics.claim_result("cold", reason.label());
                return Ok(None);
            }
        };
        let mut ready: Vec<_> = self
            .cache
            .pool_pods()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, p)| {
                *p.pool == *class.name && p.ready && !p.claimed && !p.terminating && !p.failed
            })
            .collect();
        // Replicas start at different Pods, so that they rarely race for one.
        if !ready.is_empty() {
            let start = usize::from(random_suffix().as_bytes()[0]) % ready.len();
            ready.rotate_left(start);
        }
        for (name, pod) in ready.iter().take(CLAIM_ATTEMPTS) {
            let patch =
                manifests::claim_patch(&self.spec, request, &binds, &pod.resource_version, created);
            match self.calls.patch_pod(name, &patch).await {
                Ok(claimed) => return Ok(Some(claimed)),
                // Another create took it first, or it went.
                Err(e) if e.is_conflict() || e.is_not_found() => continue,
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "claiming a pool Pod failed; the \
                        create goes cold");
                    break;
                }
            }
        }
        self.metrics.claim_result("cold", ColdReason::Empty.label());
        Ok(None)
    }

    /// Waits until the node agent has bound the claimed sandbox's data and its containers are
    /// ready. An error says why not (the agent's reason, or the time limit).
    pub(super) async fn wait_bound(&self, id: &SandboxId) -> Result<(), Error> {
        let limit = self.spec.warm_pool.bind_timeout;
        let mut failed = None;
        let bound = self
            .cache
            .wait_for(limit, |cache| match cache.pod(id.as_str()) {
                Some(pod) if pod.status.ready => true,
                Some(pod) if pod.status.reason.as_deref() == Some(DATA_NOT_BOUND_REASON) => {
                    failed = pod.status.message.clone();
                    true
                }
                _ => false,
            })
            .await;
        match (bound, failed) {
            (true, None) => Ok(()),
            (_, Some(message)) => Err(Error::DataNotBound {
                id: id.to_string(),
                reason: DATA_NOT_BOUND_REASON.into(),
                message,
            }),
            (false, None) => Err(Error::DataNotBound {
                id: id.to_string(),
                reason: "BindTimeout".into(),
                message: format!(
                    "the node agent did not report within {}s \
                    (SANDBOX_WARM_POOL_BIND_TIMEOUT)",
                    limit.as_secs()
                ),
            }),
        }
    }

    /// Another live Pod of the same sandbox than `mine`: two replicas creating one id at the
    /// same moment may each have claimed a Pod (or one claimed while the other created one).
    /// Read from the apiserver after our own write, so the later of two writers always sees
    /// the earlier.
    pub(super) async fn other_holder(&self, id: &SandboxId, mine: &Pod) -> Result<Option<Pod>> {
        let selector = format!("{}={id}", manifests::SANDBOX_ID_LABEL);
        let pods = self.calls.list::<Pod>(&selector).await?;
        Ok(pods.into_iter().find(|p| {
            p.metadata.uid != mine.metadata.uid && p.metadata.deletion_timestamp.is_none()
        }))
    }

    /// Records a warm create's time to ready.
    pub(super) fn served_warm(&self, started: Instant) {
        self.metrics.warm_claim(started.elapsed());
    }
}
