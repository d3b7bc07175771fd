//! What the pool keeper does in one round, decided from a snapshot of the pool Pods.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::{k8s::record::PoolPodRecord, spec::warm_pool::WarmPool};

/// One step of the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start one more Pod of this pool.
    Create { pool: String },
    /// Remove an unclaimed Pod.
    Remove { name: String, why: Why },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Older than SANDBOX_WARM_POOL_MAX_AGE.
    TooOld,
    /// It ended and will not serve.
    Ended,
    /// Its pool is no longer configured, or keeps fewer Pods now.
    NotWanted,
}

impl Why {
    pub fn label(self) -> &'static str {
        match self {
            Why::TooOld => "older than SANDBOX_WARM_POOL_MAX_AGE",
            Why::Ended => "it ended",
            Why::NotWanted => "its pool keeps fewer Pods now",
        }
    }
}

/// How many unclaimed Pods each pool has, ready and starting.
pub fn counts(pods: &[(&str, &PoolPodRecord)]) -> BTreeMap<String, (usize, usize)> {
    let mut counts = BTreeMap::<String, (usize, usize)>::new();
    for (_, pod) in pods.iter().filter(|(_, p)| !p.claimed && !p.terminating) {
        let entry = counts.entry(pod.pool.to_string()).or_default();
        match pod.ready {
            true => entry.0 += 1,
            false => entry.1 += 1,
        }
    }
    counts
}

/// The round's actions: remove unclaimed Pods that ended, are too old (one per pool and
/// round, so that a pool never drains at once) or are no longer wanted; then start Pods up to
/// each pool's target, within `room` (how many more Pods the cluster may hold, negative when
/// it holds too many: that many unclaimed Pods go; None: no limit). Claimed and terminating
/// Pods are not the keeper's.
pub fn plan(
    pool: &WarmPool,
    pods: &[(&str, &PoolPodRecord)],
    now: Timestamp,
    room: Option<isize>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let remove = |actions: &mut Vec<Action>, name: &str, why| {
        actions.push(Action::Remove {
            name: name.to_string(),
            why,
        })
    };
    let mut kept: BTreeMap<&str, Vec<(&str, &PoolPodRecord)>> = BTreeMap::new();
    let mut aged_removed: BTreeMap<&str, bool> = BTreeMap::new();
    let mut unclaimed: Vec<_> = pods
        .iter()
        .filter(|(_, p)| !p.claimed && !p.terminating)
        .collect();
    // Oldest first: they are the ones to replace, and to give up when a pool shrinks.
    unclaimed.sort_by_key(|(name, p)| (p.creation, *name));
    for (name, pod) in unclaimed {
        let class = pool.class(&pod.pool).filter(|c| c.target > 0);
        let Some(class) = class else {
            remove(&mut actions, name, Why::NotWanted);
            continue;
        };
        if pod.failed {
            remove(&mut actions, name, Why::Ended);
            continue;
        }
        let age = pod
            .creation
            .and_then(|c| std::time::Duration::try_from(now.duration_since(c)).ok())
            .unwrap_or_default();
        let first_aged = !aged_removed
            .get(class.name.as_str())
            .copied()
            .unwrap_or(false);
        if age > pool.max_age && first_aged {
            aged_removed.insert(&class.name, true);
            remove(&mut actions, name, Why::TooOld);
            continue;
        }
        kept.entry(&class.name).or_default().push((name, pod));
    }
    let mut room = room;
    for class in pool.classes.iter().filter(|c| c.target > 0) {
        let kept = kept.remove(class.name.as_str()).unwrap_or_default();
        let target = usize::try_from(class.target).unwrap_or(usize::MAX);
        // Over the cluster's maximum (cold creates grew it): unclaimed Pods give way.
        let over = room.map_or(0, |r| usize::try_from(-r).unwrap_or(0));
        let keep = target.min(kept.len().saturating_sub(over));
        if kept.len() > keep {
            let give_up = kept.len() - keep;
            room = room.map(|r| r + isize::try_from(give_up.min(over)).unwrap_or(0));
            for (name, _) in &kept[..give_up] {
                remove(&mut actions, name, Why::NotWanted);
            }
            continue;
        }
        for _ in kept.len()..target {
            if room.is_some_and(|r| r <= 0) {
                break;
            }
            room = room.map(|r| r - 1);
            actions.push(Action::Create {
                pool: class.name.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{sandbox::Resources, spec::warm_pool::PoolClass};

    fn pool(targets: &[(&str, u32)]) -> WarmPool {
        WarmPool {
            classes: targets
                .iter()
                .map(|(name, target)| PoolClass {
                    name: name.to_string(),
                    target: *target,
                    resources: Resources::default(),
                })
                .collect(),
            max_age: Duration::from_secs(3600),
            ..WarmPool::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn pod(pool: &str, created: i64) -> PoolPodRecord {
        PoolPodRecord {
            pool: pool.into(),
            resource_version: "1".into(),
            creation: Some(at(created)),
            ready: true,
            failed: false,
            terminating: false,
            claimed: false,
        }
    }

    fn creates(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Create { .. }))
            .count()
    }

    #[test]
    fn an_empty_pool_is_filled_within_the_clusters_room() {
        let p = pool(&[("default", 5)]);
        assert_eq!(creates(&plan(&p, &[], at(0), None)), 5);
        assert_eq!(creates(&plan(&p, &[], at(0), Some(2))), 2);
        assert_eq!(creates(&plan(&p, &[], at(0), Some(-1))), 0);
        let claimed = PoolPodRecord {
            claimed: true,
            ..pod("default", 0)
        };
        let starting = PoolPodRecord {
            ready: false,
            ..pod("default", 0)
        };
        let going = PoolPodRecord {
            terminating: true,
            ..pod("default", 0)
        };
        let pods = [("a", &claimed), ("b", &starting), ("c", &going)];
        assert_eq!(
            creates(&plan(&p, &pods, at(10), None)),
            4,
            "a claimed or terminating Pod is not the pool's; a starting one is"
        );
        assert_eq!(counts(&pods)["default"], (0, 1));
    }

    #[test]
    fn old_ended_and_unwanted_pods_go_one_old_pod_per_round() {
        let p = pool(&[("default", 2)]);
        let (old1, old2, ended, other) = (
            pod("default", 0),
            pod("default", 1),
            PoolPodRecord {
                failed: true,
                ..pod("default", 5000)
            },
            pod("large", 5000),
        );
        let pods = [("o1", &old1), ("o2", &old2), ("e", &ended), ("x", &other)];
        let actions = plan(&p, &pods, at(4000), None);
        assert_eq!(
            actions,
            [
                Action::Remove {
                    name: "o1".into(),
                    why: Why::TooOld
                },
                Action::Remove {
                    name: "e".into(),
                    why: Why::Ended
                },
                Action::Remove {
                    name: "x".into(),
                    why: Why::NotWanted
                },
                Action::Create {
                    pool: "default".into()
                },
            ]
        );
    }

    #[test]
    fn a_cluster_over_its_maximum_gives_up_unclaimed_pods() {
        let p = pool(&[("default", 3)]);
        let (a, b, c) = (pod("default", 10), pod("default", 20), pod("default", 30));
        let pods = [("a", &a), ("b", &b), ("c", &c)];
        let removed: Vec<_> = plan(&p, &pods, at(40), Some(-2))
            .into_iter()
            .map(|a| match a {
                Action::Remove { name, .. } => name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(removed, ["a", "b"]);
        assert!(plan(&p, &pods, at(40), Some(0)).is_empty());
    }

    #[test]
    fn a_smaller_target_gives_up_the_oldest_pods() {
        let p = pool(&[("default", 1)]);
        let (a, b) = (pod("default", 10), pod("default", 20));
        let actions = plan(&p, &[("b", &b), ("a", &a)], at(30), None);
        assert_eq!(
            actions,
            [Action::Remove {
                name: "a".into(),
                why: Why::NotWanted
            }]
        );
    }
}
