//! Expiry: which sandboxes are due (a pure plan over a snapshot of the cache and the clock),
//! and the reaper's thin step that removes them, several at a time.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;

use super::Cluster;
use crate::{
    config::IdleAction,
    k8s::{manifests::SuspendTrigger, record::SuspendedRecord},
    metrics::DeletionReason as Reason,
    sandbox::{Expiry, SandboxId, SandboxStatus, Timers},
};

/// How many expired sandboxes the reaper removes at a time.
const REAP_CONCURRENCY: usize = 32;

/// One managed sandbox as expiry sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: SandboxId,
    pub timers: Timers,
    pub created: Timestamp,
    /// Where the idle timer starts (last activity plus the replicas' grace).
    pub idle_since: Timestamp,
    pub status: SandboxStatus,
}

/// A sandbox to remove, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: SandboxId,
    pub reason: Reason,
    /// For the log line.
    pub why: String,
}

/// The sandboxes due at `now`.
pub fn plan(candidates: &[Candidate], now: Timestamp) -> Vec<Removal> {
    candidates
        .iter()
        .filter_map(|c| {
            let expiry = c.timers.due(now, c.created, c.idle_since, c.status.ready)?;
            let (reason, why) = match expiry {
                Expiry::Lifetime => (Reason::Lifetime, "its lifetime ended".to_string()),
                Expiry::Idle => (Reason::Idle, "it was idle too long".to_string()),
                Expiry::NeverReady => (
                    Reason::NeverReady,
                    format!(
                        "it never became ready ({}: {})",
                        c.status.reason.as_deref().unwrap_or("no reason reported"),
                        c.status.message.as_deref().unwrap_or("-")
                    ),
                ),
            };
            Some(Removal {
                id: c.id.clone(),
                reason,
                why,
            })
        })
        .collect()
}

/// When a suspended sandbox is deleted: at the end of its lifetime (counted from its creation,
/// as while it ran) or `max_age` after it was suspended, whichever comes first; None when
/// neither applies. Also the reason.
fn suspended_due(record: &SuspendedRecord, max_age: Duration) -> Option<(Timestamp, Reason)> {
    let after = |t: Timestamp, d: Duration| {
        (!d.is_zero())
            .then(|| t.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok())
            .flatten()
    };
    let lifetime = record
        .pod
        .created
        .and_then(|c| after(c, Duration::from_secs(record.pod.lifetime.into())))
        .map(|t| (t, Reason::Lifetime));
    let aged = after(record.suspended_at, max_age).map(|t| (t, Reason::SuspendedTooLong));
    [lifetime, aged]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
}

/// The deadline a suspended sandbox's answers publish.
pub fn suspended_deadline(record: &SuspendedRecord, max_age: Duration) -> Option<Timestamp> {
    suspended_due(record, max_age).map(|(t, _)| t)
}

/// The suspended sandboxes due for deletion at `now`.
pub fn plan_suspended(
    records: &[(SandboxId, Arc<SuspendedRecord>)],
    max_age: Duration,
    now: Timestamp,
) -> Vec<Removal> {
    records
        .iter()
        .filter_map(|(id, record)| {
            let (at, reason) = suspended_due(record, max_age)?;
            (at <= now).then(|| Removal {
                id: id.clone(),
                reason,
                why: match reason {
                    Reason::Lifetime => "its lifetime ended while it was suspended".into(),
                    _ => format!(
                        "it stayed suspended since {} (SANDBOX_SUSPENDED_MAX_AGE)",
                        record.suspended_at
                    ),
                },
            })
        })
        .collect()
}

impl Cluster {
    /// The suspended sandboxes in the cache whose Pod is gone (a record beside a live Pod is
    /// a resume's leftover, not a suspended sandbox).
    pub(super) fn suspended_candidates(&self) -> Vec<(SandboxId, Arc<SuspendedRecord>)> {
        self.cache
            .all_suspended()
            .into_iter()
            .filter(|(id, _)| self.cache.pod(id).is_none())
            .filter_map(|(id, record)| Some((SandboxId::parse(&id).ok()?, record)))
            .collect()
    }

    /// The managed sandboxes in the cache, as expiry sees them.
    pub(super) fn expiry_candidates(&self, now: Timestamp) -> Vec<Candidate> {
        self.cache
            .pods()
            .iter()
            .filter_map(|(id, pod)| {
                let id = SandboxId::parse(id).ok()?;
                Some(Candidate {
                    timers: pod.timers(self.lifecycle.timers.ready),
                    created: pod.created.unwrap_or(now),
                    idle_since: self.idle_since(id.as_str(), pod),
                    status: pod.status.clone(),
                    id,
                })
            })
            .collect()
    }

    /// Deletes every managed sandbox whose lifetime, idle or ready timer ran out. Only objects
    /// that carry this service's labels are seen (the cache is label-selected). Returns how
    /// many were removed. Stops early once `leading` says this replica lost the lease.
    pub async fn reap(&self, leading: impl Fn() -> bool) -> usize {
        if !self.cache.state().usable() {
            return 0;
        }
        // The plan reads every sandbox (about 3 ms for 10,000): on a blocking thread, so that
        // requests never wait behind it on the async workers.
        let me = self.clone();
        let planned = tokio::task::spawn_blocking(move || {
            let now = Timestamp::now();
            let candidates = me.expiry_candidates(now);
            let cache = &me.cache;
            me.memory.keep_only(|id| cache.pod(id).is_some());
            let mut due = plan(&candidates, now);
            due.extend(plan_suspended(
                &me.suspended_candidates(),
                me.lifecycle.suspended_max_age,
                now,
            ));
            due
        });
        let due = match planned.await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "planning expiry failed; retrying next round");
                return 0;
            }
        };
        // Several at a time, so that many deadlines falling together (a backend that went
        // away with all its sandboxes) are still met within the promised lag.
        let removals = futures::stream::iter(due).map(|removal| {
            let leading = &leading;
            async move {
                if !leading() {
                    return false;
                }
                // With SANDBOX_IDLE_ACTION=suspend, an idle sandbox is suspended instead.
                if removal.reason == Reason::Idle
                    && self.lifecycle.idle_action == IdleAction::Suspend
                {
                    match self.suspend(&removal.id, SuspendTrigger::Idle).await {
                        Ok(_) => return true,
                        Err(super::Error::NotSuspendable(_)) => {
                            tracing::info!(sandbox_id = %removal.id, "an idle sandbox made \
                                before requests were recorded cannot be suspended; it is \
                                deleted instead");
                        }
                        Err(e) if e.is_permission_denied() => return false,
                        Err(e) => {
                            tracing::warn!(sandbox_id = %removal.id, error = %e, "suspending an \
                                idle sandbox failed; retrying next round");
                            return false;
                        }
                    }
                }
                match self.remove(&removal.id, removal.reason).await {
                    Ok(true) => {
                        tracing::warn!(sandbox_id = %removal.id, reason = %removal.why,
                            "sandbox expired and was removed");
                        true
                    }
                    Ok(false) => false,
                    Err(e) if e.is_permission_denied() => false,
                    Err(e) => {
                        tracing::warn!(sandbox_id = %removal.id, error = %e, "removing an expired \
                            sandbox failed; retrying next round");
                        false
                    }
                }
            }
        });
        removals
            .buffer_unordered(REAP_CONCURRENCY)
            .filter(|removed| std::future::ready(*removed))
            .count()
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Phase;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn candidate(id: &str, timers: Timers, ready: bool) -> Candidate {
        Candidate {
            id: SandboxId::parse(id).unwrap(),
            timers,
            created: at("2026-01-01T00:00:00Z"),
            idle_since: at("2026-01-01T00:05:00Z"),
            status: SandboxStatus {
                phase: if ready {
                    Phase::Running
                } else {
                    Phase::Pending
                },
                ready,
                reason: (!ready).then(|| "ImagePullBackOff".to_string()),
                message: (!ready).then(|| "back-off pulling".to_string()),
            },
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn each_timer_removes_for_its_own_reason() {
        let now = at("2026-01-01T00:10:00Z");
        let candidates = [
            candidate(
                "lifetime",
                Timers {
                    lifetime: 10 * MIN,
                    ..Timers::default()
                },
                true,
            ),
            candidate(
                "idle",
                Timers {
                    idle: 5 * MIN,
                    ..Timers::default()
                },
                true,
            ),
            candidate(
                "never",
                Timers {
                    ready: 10 * MIN,
                    ..Timers::default()
                },
                false,
            ),
            candidate(
                "young",
                Timers {
                    lifetime: 11 * MIN,
                    idle: 6 * MIN,
                    ready: 11 * MIN,
                },
                false,
            ),
            candidate(
                "ready",
                Timers {
                    ready: MIN,
                    ..Timers::default()
                },
                true,
            ),
            candidate("untimed", Timers::default(), false),
        ];
        let removed = plan(&candidates, now);
        let reasons: Vec<(&str, Reason)> =
            removed.iter().map(|r| (r.id.as_str(), r.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("lifetime", Reason::Lifetime),
                ("idle", Reason::Idle),
                ("never", Reason::NeverReady)
            ]
        );
        assert!(
            removed[2]
                .why
                .contains("ImagePullBackOff: back-off pulling"),
            "{}",
            removed[2].why
        );
    }

    #[test]
    fn lifetime_wins_over_idle() {
        let timers = Timers {
            lifetime: MIN,
            idle: MIN,
            ready: MIN,
        };
        let removed = plan(
            &[candidate("both", timers, false)],
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(removed[0].reason, Reason::Lifetime);
    }

    #[test]
    fn idle_counts_from_the_last_activity_not_the_creation() {
        let timers = Timers {
            idle: 10 * MIN,
            ..Timers::default()
        };
        // Created at 00:00, last active at 00:05 (the fixture): due at 00:15, not 00:10.
        let c = [candidate("active", timers, true)];
        assert!(plan(&c, at("2026-01-01T00:14:59Z")).is_empty());
        assert_eq!(plan(&c, at("2026-01-01T00:15:00Z"))[0].reason, Reason::Idle);
    }

    #[test]
    fn a_sandbox_that_never_said_why_it_is_not_ready_is_still_explained() {
        let mut c = candidate(
            "silent",
            Timers {
                ready: MIN,
                ..Timers::default()
            },
            false,
        );
        c.status.reason = None;
        c.status.message = None;
        let removed = plan(&[c], at("2026-01-01T00:01:00Z"));
        assert_eq!(
            removed[0].why,
            "it never became ready (no reason reported: -)"
        );
    }

    fn suspended(created: &str, lifetime_secs: u32, suspended_at: &str) -> Arc<SuspendedRecord> {
        use crate::k8s::manifests::{self, test_support::*, SuspendTrigger};
        let t = spec(None, None);
        let mut request = a_request();
        request.timers.lifetime = Duration::from_secs(lifetime_secs.into());
        let pod = manifests::pod(&t, &request, at(created));
        let record =
            manifests::suspended_record(&request.id, &pod, at(suspended_at), SuspendTrigger::Idle);
        Arc::new(SuspendedRecord::of(&record).unwrap().1)
    }

    #[test]
    fn suspended_sandboxes_go_at_their_lifetime_or_the_maximum_age_whichever_is_first() {
        let id = |s: &str| SandboxId::parse(s).unwrap();
        let records = [
            (
                id("aged"),
                suspended("2026-01-01T00:00:00Z", 0, "2026-01-01T00:10:00Z"),
            ),
            (
                id("lived"),
                suspended("2026-01-01T00:00:00Z", 1800, "2026-01-01T00:10:00Z"),
            ),
            (
                id("young"),
                suspended("2026-01-01T00:00:00Z", 0, "2026-01-01T00:50:00Z"),
            ),
        ];
        let max_age = 30 * MIN;
        let now = at("2026-01-01T00:45:00Z");
        let due = plan_suspended(&records, max_age, now);
        let due: Vec<_> = due.iter().map(|r| (r.id.as_str(), r.reason)).collect();
        assert_eq!(
            due,
            [
                ("aged", Reason::SuspendedTooLong),
                ("lived", Reason::Lifetime)
            ]
        );
        // The deadline an answer publishes is the one planned with.
        assert_eq!(
            suspended_deadline(&records[1].1, max_age),
            Some(at("2026-01-01T00:30:00Z"))
        );
        assert_eq!(
            suspended_deadline(&records[0].1, max_age),
            Some(at("2026-01-01T00:40:00Z"))
        );
        // A maximum age of 0 keeps them until their lifetime, or forever.
        assert_eq!(suspended_deadline(&records[0].1, Duration::ZERO), None);
        assert!(plan_suspended(&records[..1], Duration::ZERO, now).is_empty());
    }
}
