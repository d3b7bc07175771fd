//! The sweep: repairs or removes what a crash or a third party left behind. A pure plan over
//! a snapshot of the watched objects, then a thin step that applies it.
//!
//! Among managed objects older than SANDBOX_ORPHAN_GRACE: a pod without its Service (or,
//! when configured, its NetworkPolicy) gets it back; a Service or NetworkPolicy without its
//! pod is removed (the garbage collector would, later); a sandbox whose pod ended is removed;
//! a missing baseline policy is restored.

use std::{collections::HashSet, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{Pod, Service},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};

use super::Provisioner;
use crate::{
    k8s::{cluster::Kind, manifests},
    metrics::DeletionReason as Reason,
    sandbox::{Phase, SandboxId, SandboxStatus, ThreadId},
};

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
    let owns = |objects: &[OwnedFacts], pod: &PodFacts| {
        objects.iter().any(|o| o.owners.contains(&pod.uid))
    };
    for pod in &snapshot.pods {
        if pod.ended {
            actions.push(Action::RemoveEnded(pod.id.clone()));
            continue;
        }
        if pod.terminating || !old(pod.created, now, grace) {
            continue;
        }
        if !owns(&snapshot.services, pod) {
            actions.push(Action::RestoreService {
                id: pod.id.clone(),
                thread: pod.thread.clone(),
            });
        }
        let lacks_policy = snapshot
            .policies
            .as_deref()
            .is_some_and(|policies| !owns(policies, pod));
        if let (true, Some(thread)) = (lacks_policy, &pod.thread) {
            actions.push(Action::RestorePolicy {
                id: pod.id.clone(),
                thread: thread.clone(),
            });
        }
    }
    actions
}

fn owned_facts(meta: &ObjectMeta) -> OwnedFacts {
    OwnedFacts {
        name: meta.name.clone().unwrap_or_default(),
        owners: meta
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.kind == "Pod")
            .map(|r| r.uid.clone())
            .collect(),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
        per_sandbox: manifests::sandbox_id_of(meta).is_some(),
    }
}

fn pod_facts(pod: &Pod) -> Option<PodFacts> {
    let meta = &pod.metadata;
    Some(PodFacts {
        id: SandboxId::parse(&manifests::sandbox_id_of(meta)?).ok()?,
        uid: meta.uid.clone()?,
        thread: manifests::thread_of(meta).and_then(|t| ThreadId::parse(t).ok()),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
        ended: matches!(
            SandboxStatus::of(pod).phase,
            Phase::Succeeded | Phase::Failed
        ),
        terminating: meta.deletion_timestamp.is_some(),
    })
}

/// The sweep's view of the watched objects.
pub fn snapshot(
    pods: &[Arc<Pod>],
    services: &[Arc<Service>],
    policies: Option<&[Arc<NetworkPolicy>]>,
) -> Snapshot {
    Snapshot {
        pods: pods.iter().filter_map(|p| pod_facts(p)).collect(),
        services: services.iter().map(|s| owned_facts(&s.metadata)).collect(),
        baseline_present: policies.is_some_and(|ps| {
            ps.iter()
                .any(|p| p.metadata.name.as_deref() == Some(manifests::BASELINE_POLICY_NAME))
        }),
        policies: policies.map(|ps| ps.iter().map(|p| owned_facts(&p.metadata)).collect()),
    }
}

impl Provisioner {
    /// Runs one sweep over the cache (see the module). Returns how many objects it acted on.
    /// Stops early once `leading` says this replica lost the lease.
    pub async fn sweep(&self, leading: impl Fn() -> bool) -> usize {
        if !self.cache.state().usable() {
            return 0;
        }
        if !self.policies_on() {
            // Never fails without policies: a stale baseline is removed or left quietly.
            let _ = self.settle_baseline(None).await;
        }
        let policies = self.cache.policies().filter(|_| self.policies_on());
        let snapshot = snapshot(
            &self.cache.pods(),
            &self.cache.services(),
            policies.as_deref(),
        );
        let actions = plan(&snapshot, Timestamp::now(), self.template.orphan_grace);
        let mut removed: HashSet<SandboxId> = HashSet::new();
        let mut acted = 0;
        for action in actions {
            if !leading() {
                break;
            }
            acted += usize::from(self.apply(action, &mut removed).await);
        }
        acted
    }

    /// Applies one action; returns whether it changed anything. Actions for a sandbox removed
    /// earlier in the round are skipped.
    async fn apply(&self, action: Action, removed: &mut HashSet<SandboxId>) -> bool {
        match action {
            Action::RemoveOwnerless { kind, name } => match kind {
                Owned::Service => self.remove_ownerless::<Service>(&name, true).await,
                Owned::NetworkPolicy => self.remove_ownerless::<NetworkPolicy>(&name, false).await,
            },
            Action::RestoreBaseline => match self.settle_baseline(Some(false)).await {
                Ok(acted) => {
                    if acted {
                        tracing::warn!("the baseline NetworkPolicy was missing; restored it");
                    }
                    acted
                }
                Err(e) => {
                    if !e.is_permission_denied() {
                        tracing::warn!(error = %e, "restoring the baseline NetworkPolicy failed; retrying next round");
                    }
                    false
                }
            },
            Action::RemoveEnded(id) => {
                let done = matches!(self.remove(&id, Reason::Orphan).await, Ok(true));
                if done {
                    tracing::warn!(sandbox_id = %id, "removed a sandbox whose pod ended");
                }
                removed.insert(id);
                done
            }
            Action::RestoreService { id, thread } => {
                let repaired = match (&thread, self.cache.pod(&manifests::pod_name(&id))) {
                    (Some(thread), Some(pod)) => {
                        self.ensure_service(&id, thread, &pod).await.is_ok()
                    }
                    _ => false,
                };
                if repaired {
                    tracing::warn!(sandbox_id = %id, "gave a pod its missing Service back");
                    return true;
                }
                let done = matches!(self.remove(&id, Reason::Orphan).await, Ok(true));
                if done {
                    tracing::warn!(sandbox_id = %id, "removed a pod whose Service could not be restored");
                }
                removed.insert(id);
                done
            }
            Action::RestorePolicy { id, thread } => {
                let Some(pod) = self.cache.pod(&manifests::pod_name(&id)) else {
                    return false;
                };
                if removed.contains(&id) {
                    return false;
                }
                match self.ensure_network_policy(&id, &thread, &pod).await {
                    Ok(()) => {
                        tracing::warn!(sandbox_id = %id, "gave a pod its missing NetworkPolicy back");
                        true
                    }
                    Err(e) => {
                        if !e.is_permission_denied() {
                            tracing::warn!(sandbox_id = %id, error = %e, "restoring a missing NetworkPolicy failed; retrying next round");
                        }
                        false
                    }
                }
            }
        }
    }

    /// Deletes an object whose pod is gone; a Service counts as an orphaned sandbox.
    async fn remove_ownerless<K: Kind>(&self, name: &str, counted_as_sandbox: bool) -> bool {
        let kind = K::kind(&()).to_lowercase();
        match self.cluster.delete::<K>(name).await {
            Ok(true) => {
                if counted_as_sandbox {
                    self.metrics.sandbox_deleted(Reason::Orphan);
                }
                tracing::warn!(%name, %kind, "removed an object whose pod is gone");
                true
            }
            Ok(false) => false,
            Err(e) if e.is_permission_denied() => false,
            Err(e) => {
                tracing::warn!(%name, %kind, error = %e, "removing an orphaned object failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            pods: vec![],
            services: vec![],
            policies: Some(vec![baseline]),
            baseline_present: true,
        };
        assert_eq!(plan(&s, now(), GRACE), []);
    }
}
