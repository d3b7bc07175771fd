//! Leader election over a `coordination.k8s.io/v1` Lease, so that only one of several replicas
//! reaps and sweeps. Every replica serves the API; only the lease holder runs those tasks.
//!
//! The holder renews the lease every third of its duration; another replica takes it over
//! once it has not been renewed for a whole duration. Updates carry the resourceVersion they
//! read, so two replicas can never both win the same round. A replica that fails to renew
//! stops counting itself leader at once.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{api::PostParams, Api, Client};
use tokio::{sync::watch, task::JoinHandle};

use crate::permissions::Refusals;

/// Name of the Lease in the sandbox namespace.
pub const LEASE_NAME: &str = "sandbox-provisioner-leader";

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

/// Outcome of one round, pure so that it can be tested without a cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it with us as holder.
    Create,
    /// Ours, or expired: write it with us as holder.
    Take,
    /// Someone else holds a live lease.
    Follow,
}

/// Decides what to do with the lease as read.
pub fn decide(lease: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => return Decision::Take,
        // Given up by its last holder.
        None | Some("") => return Decision::Take,
        Some(_) => {}
    }
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let held_for = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(duration);
    match renewed {
        Some(t)
            if now.duration_since(t)
                < SignedDuration::try_from(held_for).unwrap_or(SignedDuration::MAX) =>
        {
            Decision::Follow
        }
        _ => Decision::Take,
    }
}

/// Runs the election until `shutdown`; returns the leadership to consult and the task, which
/// ends after giving the lease up (await it so that a successor need not wait out the lease).
pub fn spawn(
    client: Client,
    namespace: &str,
    identity: String,
    duration: Duration,
    refusals: Refusals,
    mut shutdown: watch::Receiver<bool>,
) -> (Leadership, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(duration / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = FailureLog::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let outcome = tokio::time::timeout(duration / 3, round(&leases, &refusals, &identity, duration)).await;
                    let leading = match outcome {
                        Ok(Ok(leading)) => {
                            failing.recovered();
                            leading
                        }
                        Ok(Err(e)) => {
                            failing.failed(&crate::k8s::cluster::error_chain(&e));
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
            match tokio::time::timeout(RELEASE_TIMEOUT, release(&leases, &identity)).await {
                Ok(Ok(())) => tracing::info!(identity, "gave up the leader lease"),
                Ok(Err(e)) => {
                    tracing::warn!(identity, error = %e, "could not give up the leader lease; another replica takes over once it expires")
                }
                Err(_) => {
                    tracing::warn!(identity, "giving up the leader lease timed out; another replica takes over once it expires")
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
            tracing::warn!(error, failing_for = ?(now - since), "leader election failed; this replica does not reap or sweep until it succeeds (check the leases permission with `sandbox-provisioner doctor`)");
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

/// Clears the holder of a lease we hold, so that the next replica to look takes it at once.
/// Guarded by the resourceVersion read: a lease someone else took meanwhile is left alone.
async fn release(leases: &Api<Lease>, me: &str) -> kube::Result<()> {
    let Some(mut lease) = leases.get_opt(LEASE_NAME).await? else {
        return Ok(());
    };
    let Some(spec) = lease.spec.as_mut() else {
        return Ok(());
    };
    if spec.holder_identity.as_deref() != Some(me) {
        return Ok(());
    }
    spec.holder_identity = None;
    match leases
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// One round: read the lease and act on `decide`. Returns whether we hold it afterwards.
async fn round(
    leases: &Api<Lease>,
    refusals: &Refusals,
    me: &str,
    duration: Duration,
) -> kube::Result<bool> {
    let now = Timestamp::now();
    let current = noted(refusals, "get", leases.get_opt(LEASE_NAME)).await?;
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        me,
        now,
        duration,
    );
    let ours = |previous: Option<&Lease>| {
        let spec = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
        let taking_over = spec.holder_identity.as_deref() != Some(me);
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                resource_version: previous.and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(duration.as_secs().max(1) as i32),
                acquire_time: if taking_over {
                    Some(MicroTime(now))
                } else {
                    spec.acquire_time
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(
                    spec.lease_transitions.unwrap_or(0)
                        + i32::from(taking_over && previous.is_some()),
                ),
                ..LeaseSpec::default()
            }),
        }
    };
    let result = match decision {
        Decision::Follow => return Ok(false),
        Decision::Create => noted(
            refusals,
            "create",
            leases.create(&PostParams::default(), &ours(None)),
        )
        .await
        .map(|_| ()),
        Decision::Take => noted(
            refusals,
            "update",
            leases.replace(LEASE_NAME, &PostParams::default(), &ours(current.as_ref())),
        )
        .await
        .map(|_| ()),
    };
    match result {
        Ok(()) => Ok(true),
        // Someone else wrote first (409): not ours this round.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs one Lease call and tells `refusals` whether `verb` was allowed.
async fn noted<T>(
    refusals: &Refusals,
    verb: &str,
    call: impl std::future::Future<Output = kube::Result<T>>,
) -> kube::Result<T> {
    let result = call.await;
    match &result {
        Ok(_) => refusals.allowed(verb, "leases"),
        Err(kube::Error::Api(status)) if status.code == 403 => {
            refusals.refused(verb, "leases", &status.message)
        }
        Err(_) => {}
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(10),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().unwrap();
        let d = Duration::from_secs(10);
        assert_eq!(decide(None, "a", now, d), Decision::Create);
        let fresh = spec("b", "2026-01-01T00:00:25Z".parse().unwrap());
        assert_eq!(decide(Some(&fresh), "a", now, d), Decision::Follow);
        let stale = spec("b", "2026-01-01T00:00:15Z".parse().unwrap());
        assert_eq!(decide(Some(&stale), "a", now, d), Decision::Take);
        let mine = spec("a", "2026-01-01T00:00:29Z".parse().unwrap());
        assert_eq!(decide(Some(&mine), "a", now, d), Decision::Take);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now, d),
            Decision::Take
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..spec("b", "2026-01-01T00:00:29Z".parse().unwrap())
        };
        assert_eq!(decide(Some(&released), "a", now, d), Decision::Take);
    }
}
