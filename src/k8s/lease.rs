//! Leases (`coordination.k8s.io/v1`) that one replica holds at a time: the leader election
//! and the quota locks both take them here. What to do with a lease as read is a pure decision
//! ([`decide`]); every call goes through the cluster's timed call path (time limit, retries of
//! 429/5xx, metrics, refusals); a write carries the resourceVersion it read, so two replicas
//! can never both win the same round.
//!
//! `kubert::lease` does the same for linkerd, but its newest release is built on kube 1.1 and
//! k8s-openapi 0.25: with this crate's kube 5 it would link a second client and a second set
//! of API types. The protocol is small enough to keep here, tested without a cluster.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};

use super::calls::{Calls, Result};

/// What to do with a lease as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No lease yet: create it with us as holder.
    Create,
    /// Ours, given up, or expired: write it with us as holder.
    Take,
    /// Someone else holds a live lease, until this moment (None: it does not say).
    Follow { until: Option<Timestamp> },
}

/// Decides what to do with the lease as read; `duration` is ours, used when the lease names
/// none.
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
    let held_for = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(duration);
    let held_for = SignedDuration::try_from(held_for).unwrap_or(SignedDuration::MAX);
    match spec.renew_time.as_ref().map(|t| t.0) {
        Some(renewed) if now.duration_since(renewed) < held_for => Decision::Follow {
            until: renewed.checked_add(held_for).ok(),
        },
        _ => Decision::Take,
    }
}

/// The lease `previous` (or a new one named `name`) written with `me` as holder at `now`: the
/// acquire time stays while we renew our own, and a takeover counts as a transition.
fn held_by(
    name: &str,
    previous: Option<&Lease>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> Lease {
    let spec = previous.and_then(|l| l.spec.clone()).unwrap_or_default();
    let taking_over = spec.holder_identity.as_deref() != Some(me);
    Lease {
        metadata: match previous {
            Some(lease) => lease.metadata.clone(),
            None => ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(me.into()),
            lease_duration_seconds: Some(duration.as_secs().max(1).min(i32::MAX as u64) as i32),
            acquire_time: if taking_over {
                Some(MicroTime(now))
            } else {
                spec.acquire_time
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                spec.lease_transitions.unwrap_or(0) + i32::from(taking_over && previous.is_some()),
            ),
            ..LeaseSpec::default()
        }),
    }
}

/// The outcome of one attempt to take a lease.
#[derive(Debug)]
pub enum Attempt {
    /// We hold it: the lease as written (its annotations included).
    Held(Box<Lease>),
    /// Another replica holds it (until this moment, when it says), or wrote first.
    Busy { until: Option<Timestamp> },
}

/// The leases of one namespace, taken as one holder. Cheap to clone.
#[derive(Clone)]
pub struct Leases {
    calls: Calls,
    holder: String,
}

impl Leases {
    pub fn new(calls: Calls, holder: String) -> Leases {
        Leases { calls, holder }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One round: reads `name` and takes (or renews) it when [`decide`] says so.
    pub async fn try_take(&self, name: &str, duration: Duration) -> Result<Attempt> {
        let current = self.calls.get::<Lease>(name).await?;
        let now = Timestamp::now();
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let written = match decide(spec, &self.holder, now, duration) {
            Decision::Follow { until } => return Ok(Attempt::Busy { until }),
            Decision::Create => {
                let lease = held_by(name, None, &self.holder, now, duration);
                self.calls.create(&lease).await
            }
            Decision::Take => {
                let lease = held_by(name, current.as_ref(), &self.holder, now, duration);
                self.calls.replace(&lease).await
            }
        };
        match written {
            Ok(lease) => Ok(Attempt::Held(Box::new(lease))),
            // Someone else wrote first: not ours this round.
            Err(e) if e.is_conflict() => Ok(Attempt::Busy { until: None }),
            Err(e) => Err(e),
        }
    }

    /// Gives up a lease we hold, as last written by us (annotations added to it are kept): the
    /// next replica to look takes it at once. A lease someone else took meanwhile is left to
    /// them.
    pub async fn give_up(&self, mut lease: Lease) -> Result<()> {
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        match self.calls.replace(&lease).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives up the lease `name` if we hold it (read first: the election's hand-over).
    pub async fn give_up_named(&self, name: &str) -> Result<()> {
        match self.calls.get::<Lease>(name).await? {
            Some(lease)
                if lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(self.holder.as_str()) =>
            {
                self.give_up(lease).await
            }
            _ => Ok(()),
        }
    }
}

/// How long to wait before trying a busy lease again: 10 ms doubling up to 320 ms, with up to
/// 50% jitter so that waiters do not retry in lockstep, and never past the moment the holder's
/// lease expires.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_millis(320);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The wait before the next attempt, given until when the holder holds the lease.
    pub fn wait(&mut self, held_until: Option<Timestamp>, now: Timestamp) -> Duration {
        use std::hash::{BuildHasher, Hasher};
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(base.as_nanos());
        let jitter = Duration::from_nanos(h.finish() % (base.as_nanos() as u64 / 2 + 1));
        let wait = base + jitter;
        let until_expiry = held_until
            .map(|t| t.duration_since(now))
            .and_then(|d| Duration::try_from(d).ok());
        match until_expiry {
            // Just past the expiry, so that the next read finds it expired.
            Some(left) => wait.min(left + Duration::from_millis(1)),
            None => wait,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
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

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn decisions() {
        let now = at("2026-01-01T00:00:30Z");
        let d = Duration::from_secs(10);
        assert_eq!(decide(None, "a", now, d), Decision::Create);
        let fresh = spec("b", at("2026-01-01T00:00:25Z"));
        assert_eq!(
            decide(Some(&fresh), "a", now, d),
            Decision::Follow {
                until: Some(at("2026-01-01T00:00:35Z"))
            }
        );
        let stale = spec("b", at("2026-01-01T00:00:15Z"));
        assert_eq!(decide(Some(&stale), "a", now, d), Decision::Take);
        let mine = spec("a", at("2026-01-01T00:00:29Z"));
        assert_eq!(decide(Some(&mine), "a", now, d), Decision::Take);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "a", now, d),
            Decision::Take
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..spec("b", at("2026-01-01T00:00:29Z"))
        };
        assert_eq!(decide(Some(&released), "a", now, d), Decision::Take);
    }

    #[test]
    fn renewing_keeps_the_acquire_time_and_a_takeover_counts() {
        let d = Duration::from_secs(15);
        let first = held_by("l", None, "a", at("2026-01-01T00:00:00Z"), d);
        let spec = first.spec.as_ref().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("l"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        let renewed = held_by("l", Some(&first), "a", at("2026-01-01T00:00:05Z"), d);
        let spec = renewed.spec.as_ref().unwrap();
        assert_eq!(
            spec.acquire_time,
            Some(MicroTime(at("2026-01-01T00:00:00Z")))
        );
        assert_eq!(spec.renew_time, Some(MicroTime(at("2026-01-01T00:00:05Z"))));
        assert_eq!(spec.lease_transitions, Some(0));
        let taken = held_by("l", Some(&renewed), "b", at("2026-01-01T00:00:30Z"), d);
        let spec = taken.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(
            spec.acquire_time,
            Some(MicroTime(at("2026-01-01T00:00:30Z")))
        );
        assert_eq!(spec.lease_transitions, Some(1));
    }

    #[test]
    fn waits_grow_stay_bounded_and_stop_at_the_expiry() {
        let now = at("2026-01-01T00:00:00Z");
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| backoff.wait(None, now)).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = (Backoff::FIRST * 2u32.pow(i as u32)).min(Backoff::MAX);
            assert!(*w >= base && *w <= base * 3 / 2, "{i}: {w:?}");
        }
        let expiry = at("2026-01-01T00:00:00.004Z");
        assert_eq!(backoff.wait(Some(expiry), now), Duration::from_millis(5));
        let past = at("2025-12-31T23:59:59Z");
        assert!(backoff.wait(Some(past), now) <= Backoff::MAX * 3 / 2);
    }

    #[test]
    fn a_lease_that_names_no_duration_is_held_for_ours() {
        let now = at("2026-01-01T00:00:30Z");
        let silent = LeaseSpec {
            lease_duration_seconds: None,
            ..spec("b", at("2026-01-01T00:00:25Z"))
        };
        assert_eq!(
            decide(Some(&silent), "a", now, Duration::from_secs(10)),
            Decision::Follow {
                until: Some(at("2026-01-01T00:00:35Z"))
            }
        );
        assert_eq!(
            decide(Some(&silent), "a", now, Duration::from_secs(3)),
            Decision::Take
        );
    }

    #[test]
    fn a_lease_that_was_never_renewed_is_free() {
        let unrenewed = LeaseSpec {
            renew_time: None,
            ..spec("b", at("2026-01-01T00:00:00Z"))
        };
        let now = at("2026-01-01T00:00:01Z");
        assert_eq!(
            decide(Some(&unrenewed), "a", now, Duration::from_secs(10)),
            Decision::Take
        );
    }

    #[test]
    fn nonsense_durations_neither_block_forever_nor_overflow() {
        let now = at("2026-01-01T00:00:30Z");
        let d = Duration::from_secs(10);
        // Zero or negative: held for one second.
        for seconds in [0, -5] {
            let odd = LeaseSpec {
                lease_duration_seconds: Some(seconds),
                ..spec("b", at("2026-01-01T00:00:29.5Z"))
            };
            assert_eq!(
                decide(Some(&odd), "a", now, d),
                Decision::Follow {
                    until: Some(at("2026-01-01T00:00:30.5Z"))
                },
                "{seconds}"
            );
        }
        // The longest a lease can say: followed, with a deadline that exists.
        let long = LeaseSpec {
            lease_duration_seconds: Some(i32::MAX),
            ..spec("b", at("2026-01-01T00:00:00Z"))
        };
        assert!(matches!(
            decide(Some(&long), "a", now, d),
            Decision::Follow { until: Some(_) }
        ));
        // What we write is within what a Lease can hold.
        let huge = held_by("l", None, "a", now, Duration::from_secs(u64::MAX));
        assert_eq!(huge.spec.unwrap().lease_duration_seconds, Some(i32::MAX));
    }
}
