//! Leader election over a `coordination.k8s.io/v1` Lease, so that only one of several replicas
//! reaps and sweeps. Every replica serves the API; only the lease holder runs those tasks.
//!
//! The holder renews the lease every third of its duration; another replica takes it over
//! once it has not been renewed for a whole duration. Updates carry the resourceVersion they
//! read, so two replicas can never both win the same round. A replica that fails to renew
//! stops counting itself leader at once.

use std::time::{Duration, Instant};

use tokio::{sync::watch, task::JoinHandle};

use crate::k8s::lease::{Attempt, Leases};
pub use crate::spec::keys::LEADER_LEASE as LEASE_NAME;

/// Whether this replica holds the lease right now.
#[derive(Clone)]
pub struct Leadership {
    /// None: no election (a single replica), always the leader.
    state: Option<watch::Receiver<bool>>,
}

impl Leadership {
    /// Leadership without an election, for a single replica.
    pub fn always() -> Leadership {
        Leadership { state: None }
    }

    pub fn is_leader(&self) -> bool {
        self.state.as_ref().is_none_or(|s| *s.borrow())
    }
}

/// Runs the election until `shutdown`; returns the leadership to consult and the task, which
/// ends after giving the lease up (await it so that a successor need not wait out the lease).
pub fn spawn(
    leases: Leases,
    duration: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> (Leadership, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let identity = leases.holder().to_string();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(duration / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = FailureLog::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let round = leases.try_take(LEASE_NAME, duration);
                    let leading = match tokio::time::timeout(duration / 3, round).await {
                        Ok(Ok(attempt)) => {
                            failing.recovered();
                            matches!(attempt, Attempt::Held(_))
                        }
                        Ok(Err(e)) => {
                            failing.failed(&e.to_string());
                            false
                        }
                        Err(_) => {
                            failing.failed("the apiserver did not answer in time");
                            false
                        }
                    };
                    if leading != *tx.borrow() {
                        tracing::info!(identity, leading, "leadership changed");
                    }
                    let _ = tx.send(leading);
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        let was_leading = *tx.borrow();
        // Stop acting as leader before the lease is free for another replica.
        let _ = tx.send(false);
        if was_leading {
            let release = leases.give_up_named(LEASE_NAME);
            match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
                Ok(Ok(())) => tracing::info!(identity, "gave up the leader lease"),
                Ok(Err(e)) => {
                    tracing::warn!(identity, error = %e, "could not give up the leader lease; \
                        another replica takes over once it expires")
                }
                Err(_) => {
                    tracing::warn!(
                        identity,
                        "giving up the leader lease timed out; another \
                        replica takes over once it expires"
                    )
                }
            }
        }
    });
    (Leadership { state: Some(rx) }, task)
}

/// Election failures, logged as warnings when they start and then once a minute while they
/// last: a replica that can never take the lease (say, RBAC without `leases`) never reaps, and
/// that must not stay silent.
#[derive(Default)]
struct FailureLog {
    since: Option<Instant>,
    last_logged: Option<Instant>,
}

impl FailureLog {
    const EVERY: Duration = Duration::from_secs(60);

    fn failed(&mut self, error: &str) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if self.last_logged.is_none_or(|t| now - t >= Self::EVERY) {
            self.last_logged = Some(now);
            tracing::warn!(error, failing_for = ?(now - since), "leader election failed; this \
                replica does not reap or sweep until it succeeds (check the leases permission \
                with `sandbox-provisioner doctor`)");
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(failed_for = ?since.elapsed(), "leader election works again");
        }
        self.last_logged = None;
    }
}

/// How long a stopping replica tries to hand the lease back.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);
