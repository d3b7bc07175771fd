//! Choosing a cluster for a new sandbox among several, deterministically: weighted rendezvous
//! hashing keyed by the sandbox's thread, so that every replica and every retry ranks the
//! clusters alike, a thread's sandboxes land where its host-path data lives, and adding or
//! draining a cluster moves only the keys that must move. Pure: the caller gives a snapshot of
//! each cluster's state.

use ring::digest::{digest, SHA256};

/// One cluster as placement sees it at the moment of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState<'a> {
    pub name: &'a str,
    /// Share of new sandboxes relative to the others; 0 drains the cluster.
    pub weight: u32,
    /// Sandboxes it holds now, and how many it may hold (None: no limit).
    pub sandboxes: usize,
    pub max_sandboxes: Option<usize>,
    /// Why it cannot be reached now (apiserver not answering, cache broken), if so.
    pub unreachable: Option<String>,
}

/// Why a cluster took no new sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    Draining,
    Full { sandboxes: usize, max: usize },
    Unreachable(String),
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::Draining => f.write_str("draining (weight 0)"),
            Skipped::Full { sandboxes, max } => {
                write!(f, "full ({sandboxes} of max_sandboxes {max})")
            }
            Skipped::Unreachable(why) => {
                write!(f, "unreachable (cannot reach the Kubernetes API: {why})")
            }
        }
    }
}

/// The clusters in the order a key prefers them (best first), weight-0 clusters last.
pub fn preference<'a>(key: &str, clusters: &[ClusterState<'a>]) -> Vec<&'a str> {
    let mut scored: Vec<(f64, &str)> = clusters
        .iter()
        .map(|c| (score(key, c.name, c.weight), c.name))
        .collect();
    // Higher is better; ties (only for weight 0) by name, so the order is total.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, name)| name).collect()
}

/// The cluster that takes a new sandbox for `key`: the first in the key's preference that is
/// not draining, full or unreachable; or, when none is left, each cluster with its reason.
pub fn place<'a>(
    key: &str,
    clusters: &[ClusterState<'a>],
) -> Result<&'a str, Vec<(&'a str, Skipped)>> {
    let mut skipped = Vec::new();
    for name in preference(key, clusters) {
        let c = clusters
            .iter()
            .find(|c| c.name == name)
            .expect("ranked from the same list");
        let reason = if let Some(why) = &c.unreachable {
            Some(Skipped::Unreachable(why.clone()))
        } else if c.weight == 0 {
            Some(Skipped::Draining)
        } else {
            c.max_sandboxes
                .filter(|max| c.sandboxes >= *max)
                .map(|max| Skipped::Full {
                    sandboxes: c.sandboxes,
                    max,
                })
        };
        match reason {
            None => return Ok(name),
            Some(r) => skipped.push((name, r)),
        }
    }
    Err(skipped)
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` uniform in (0, 1) from a hash of the
/// key and the cluster, the same on every replica and every build (SHA-256, not Rust's
/// hasher, whose output may change between versions).
fn score(key: &str, cluster: &str, weight: u32) -> f64 {
    if weight == 0 {
        return f64::NEG_INFINITY;
    }
    let mut input = Vec::with_capacity(key.len() + cluster.len() + 1);
    input.extend_from_slice(key.as_bytes());
    input.push(0);
    input.extend_from_slice(cluster.as_bytes());
    let hash = digest(&SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    let u = (u64::from_be_bytes(first) as f64 + 0.5) / 18_446_744_073_709_551_616.0;
    f64::from(weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, weight: u32) -> ClusterState<'_> {
        ClusterState {
            name,
            weight,
            sandboxes: 0,
            max_sandboxes: None,
            unreachable: None,
        }
    }

    #[test]
    fn weights_share_the_keys() {
        let clusters = [cluster("eu", 1), cluster("us", 3)];
        let mut us = 0;
        for i in 0..10_000 {
            if place(&format!("thread-{i}"), &clusters) == Ok("us") {
                us += 1;
            }
        }
        // 3 of 4 keys expected; binomial sd is about 43.
        assert!(
            (7_300..7_700).contains(&us),
            "{us} of 10000 went to weight 3"
        );
    }

    #[test]
    fn the_choice_is_the_same_for_every_caller_and_order() {
        let a = [cluster("a", 1), cluster("b", 2), cluster("c", 1)];
        let b = [cluster("c", 1), cluster("a", 1), cluster("b", 2)];
        for i in 0..200 {
            let key = format!("k{i}");
            assert_eq!(preference(&key, &a), preference(&key, &b));
        }
        // Pinned: a change of the hash would move every thread's sandboxes elsewhere.
        assert_eq!(preference("thread-1", &a), ["b", "a", "c"]);
        assert_eq!(preference("thread-2", &a), ["a", "c", "b"]);
    }

    #[test]
    fn removing_a_cluster_moves_only_its_keys() {
        let three = [cluster("a", 1), cluster("b", 1), cluster("c", 1)];
        let two = [cluster("a", 1), cluster("b", 1)];
        for i in 0..500 {
            let key = format!("k{i}");
            let before = place(&key, &three).unwrap();
            if before != "c" {
                assert_eq!(place(&key, &two).unwrap(), before, "{key} moved needlessly");
            }
        }
    }

    #[test]
    fn draining_full_and_unreachable_clusters_pass_the_key_on() {
        let key = "thread-42";
        let all = [cluster("a", 1), cluster("b", 1), cluster("c", 1)];
        let order = preference(key, &all);
        let first = order[0];
        let with = |f: &dyn Fn(&mut ClusterState)| {
            all.iter()
                .cloned()
                .map(|mut c| {
                    if c.name == first {
                        f(&mut c);
                    }
                    c
                })
                .collect::<Vec<_>>()
        };
        for (changed, reason) in [
            (with(&|c| c.weight = 0), Skipped::Draining),
            (
                with(&|c| {
                    c.max_sandboxes = Some(5);
                    c.sandboxes = 5
                }),
                Skipped::Full {
                    sandboxes: 5,
                    max: 5,
                },
            ),
            (
                with(&|c| c.unreachable = Some("cache broken".into())),
                Skipped::Unreachable("cache broken".into()),
            ),
        ] {
            assert_eq!(place(key, &changed), Ok(order[1]), "{reason}");
        }
        let none: Vec<ClusterState> = all
            .iter()
            .cloned()
            .map(|mut c| {
                c.weight = 0;
                c
            })
            .collect();
        let reasons = place(key, &none).unwrap_err();
        assert_eq!(reasons.len(), 3);
        assert!(reasons.iter().all(|(_, r)| *r == Skipped::Draining));
        assert_eq!(
            Skipped::Full {
                sandboxes: 9,
                max: 9
            }
            .to_string(),
            "full (9 of max_sandboxes 9)"
        );
    }
}
