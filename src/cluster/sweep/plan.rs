//! The sweep's decision: what to repair or remove, from a snapshot of the watched objects
//! and the clock. Pure, so that every kind of action is unit tested.

use std::{collections::HashSet, time::Duration};

use jiff::Timestamp;

use crate::sandbox::{SandboxId, ThreadId};

/// A sandbox pod as the sweep sees it.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub id: SandboxId,
    pub uid: String,
    pub thread: Option<ThreadId>,
    pub created: Option<Timestamp>,
    /// It ran to an end (Succeeded or Failed).
    pub ended: bool,
    pub terminating: bool,
}

/// A Service or NetworkPolicy as the sweep sees it.
#[derive(Debug, Clone)]
pub struct OwnedFacts {
    pub name: String,
    /// Uids of the pods it belongs to.
    pub owners: Vec<String>,
    pub created: Option<Timestamp>,
    /// It carries a sandbox id (the baseline policy belongs to no sandbox).
    pub per_sandbox: bool,
}

/// What the sweep looks at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: Vec<PodFacts>,
    /// Sandboxes have Services (not with SANDBOX_SERVICE_TYPE=None).
    pub services_wanted: bool,
    pub services: Vec<OwnedFacts>,
    /// None when sandboxes get no NetworkPolicies.
    pub policies: Option<Vec<OwnedFacts>>,
    pub baseline_present: bool,
}

/// The kinds of object a sandbox owns besides its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    Service,
    NetworkPolicy,
}

/// One thing the sweep does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Its pod is gone.
    RemoveOwnerless {
        kind: Owned,
        name: String,
    },
    /// The pod ran to an end.
    RemoveEnded(SandboxId),
    /// The pod lacks its Service; without a thread (or when it fails) the sandbox is removed.
    RestoreService {
        id: SandboxId,
        thread: Option<ThreadId>,
    },
    RestorePolicy {
        id: SandboxId,
        thread: ThreadId,
    },
    RestoreBaseline,
}

fn old(created: Option<Timestamp>, now: Timestamp, grace: Duration) -> bool {
    created.is_some_and(|t| now.duration_since(t).unsigned_abs() >= grace)
}

/// What to do about `snapshot` at `now`, in order.
pub fn plan(snapshot: &Snapshot, now: Timestamp, grace: Duration) -> Vec<Action> {
    let uids: HashSet<&str> = snapshot.pods.iter().map(|p| p.uid.as_str()).collect();
    let ownerless = |objects: &[OwnedFacts], kind: Owned| -> Vec<Action> {
        objects
            .iter()
            .filter(|o| o.per_sandbox && old(o.created, now, grace))
            .filter(|o| !o.owners.iter().any(|u| uids.contains(u.as_str())))
            .map(|o| Action::RemoveOwnerless {
                kind,
                name: o.name.clone(),
            })
            .collect()
    };
    let mut actions = ownerless(&snapshot.services, Owned::Service);
    if let Some(policies) = &snapshot.policies {
        if !snapshot.baseline_present {
            actions.push(Action::RestoreBaseline);
        }
        actions.extend(ownerless(policies, Owned::NetworkPolicy));
    }
    // The uids that own a Service (a NetworkPolicy), as sets: with thousands of sandboxes,
    // scanning every object per pod made each round quadratic.
    let owner_uids = |objects: &[OwnedFacts]| -> HashSet<String> {
        objects
            .iter()
            .flat_map(|o| o.owners.iter().cloned())
            .collect()
    };
    let with_service = owner_uids(&snapshot.services);
    let with_policy = snapshot.policies.as_deref().map(owner_uids);
    for pod in &snapshot.pods {
        if pod.ended {
            actions.push(Action::RemoveEnded(pod.id.clone()));
            continue;
        }
        if pod.terminating || !old(pod.created, now, grace) {
            continue;
        }
        if snapshot.services_wanted && !with_service.contains(&pod.uid) {
            actions.push(Action::RestoreService {
                id: pod.id.clone(),
                thread: pod.thread.clone(),
            });
        }
        let lacks_policy = with_policy
            .as_ref()
            .is_some_and(|owners| !owners.contains(&pod.uid));
        if let (true, Some(thread)) = (lacks_policy, &pod.thread) {
            actions.push(Action::RestorePolicy {
                id: pod.id.clone(),
                thread: thread.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::manifests;

    const GRACE: Duration = Duration::from_secs(60);

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn now() -> Timestamp {
        at("2026-01-01T01:00:00Z")
    }
    fn long_ago() -> Option<Timestamp> {
        Some(at("2026-01-01T00:00:00Z"))
    }
    fn just_now() -> Option<Timestamp> {
        Some(at("2026-01-01T00:59:59Z"))
    }
    fn id(s: &str) -> SandboxId {
        SandboxId::parse(s).unwrap()
    }
    fn thread() -> Option<ThreadId> {
        Some(ThreadId::parse("t").unwrap())
    }
    fn pod(name: &str) -> PodFacts {
        PodFacts {
            id: id(name),
            uid: format!("uid-{name}"),
            thread: thread(),
            created: long_ago(),
            ended: false,
            terminating: false,
        }
    }
    fn owned(name: &str, owner: &str) -> OwnedFacts {
        OwnedFacts {
            name: format!("{name}-obj"),
            owners: vec![format!("uid-{owner}")],
            created: long_ago(),
            per_sandbox: true,
        }
    }

    #[test]
    fn a_whole_sandbox_needs_nothing() {
        let s = Snapshot {
            services_wanted: true,
            pods: vec![pod("a")],
            services: vec![owned("a", "a")],
            policies: Some(vec![owned("a", "a")]),
            baseline_present: true,
        };
        assert_eq!(plan(&s, now(), GRACE), []);
    }

    #[test]
    fn every_kind_of_repair() {
        let mut ended = pod("ended");
        ended.ended = true;
        ended.created = just_now();
        let mut threadless = pod("threadless");
        threadless.thread = None;
        let mut young = pod("young");
        young.created = just_now();
        let mut leaving = pod("leaving");
        leaving.terminating = true;
        let mut young_orphan = owned("gone-young", "gone");
        young_orphan.created = just_now();
        let s = Snapshot {
            services_wanted: true,
            pods: vec![
                pod("no-svc"),
                pod("no-policy"),
                ended,
                threadless,
                young,
                leaving,
            ],
            services: vec![
                owned("no-policy", "no-policy"),
                owned("gone", "gone"),
                young_orphan,
            ],
            policies: Some(vec![owned("no-svc", "no-svc"), owned("gone", "gone")]),
            baseline_present: false,
        };
        assert_eq!(
            plan(&s, now(), GRACE),
            [
                Action::RemoveOwnerless {
                    kind: Owned::Service,
                    name: "gone-obj".into()
                },
                Action::RestoreBaseline,
                Action::RemoveOwnerless {
                    kind: Owned::NetworkPolicy,
                    name: "gone-obj".into()
                },
                Action::RestoreService {
                    id: id("no-svc"),
                    thread: thread()
                },
                Action::RestorePolicy {
                    id: id("no-policy"),
                    thread: thread().unwrap()
                },
                Action::RemoveEnded(id("ended")),
                Action::RestoreService {
                    id: id("threadless"),
                    thread: None
                },
            ]
        );
    }

    #[test]
    fn without_policies_none_are_checked() {
        let s = Snapshot {
            services_wanted: true,
            pods: vec![pod("a")],
            services: vec![owned("a", "a")],
            policies: None,
            baseline_present: false,
        };
        assert_eq!(plan(&s, now(), GRACE), []);
    }

    #[test]
    fn an_object_of_an_earlier_pod_of_the_same_name_is_ownerless() {
        let mut again = pod("a");
        again.uid = "uid-a-2".into();
        let s = Snapshot {
            services_wanted: true,
            pods: vec![again],
            services: vec![owned("a", "a")],
            policies: None,
            baseline_present: false,
        };
        assert_eq!(
            plan(&s, now(), GRACE),
            [
                Action::RemoveOwnerless {
                    kind: Owned::Service,
                    name: "a-obj".into()
                },
                Action::RestoreService {
                    id: id("a"),
                    thread: thread()
                },
            ]
        );
    }

    #[test]
    fn the_baseline_is_not_an_orphan() {
        let baseline = OwnedFacts {
            name: manifests::BASELINE_POLICY_NAME.into(),
            owners: vec![],
            created: long_ago(),
            per_sandbox: false,
        };
        let s = Snapshot {
            services_wanted: true,
            pods: vec![],
            services: vec![],
            policies: Some(vec![baseline]),
            baseline_present: true,
        };
        assert_eq!(plan(&s, now(), GRACE), []);
    }
}
