//! The create decision, pure: from the request, the tenant's policy, a snapshot of every
//! cluster and the quota's view, what to do — return the existing sandbox from the cluster
//! that holds it, place a new one in a cluster, or refuse with the reason. Tenant policy
//! (sizes, clusters, quotas) is applied here and only here; the fleet gathers the snapshot,
//! asks, and applies the answer.

use std::collections::BTreeMap;

use super::{placement, FleetError, Target};
pub use crate::admission::QuotaView;
#[cfg(test)]
use crate::admission::Usage;
use crate::admission::{quota, Ask, Tenant};

/// One cluster at the moment of a create.
#[derive(Debug, Clone)]
pub struct ClusterView<'a> {
    pub placement: placement::ClusterState<'a>,
    pub labels: &'a BTreeMap<String, String>,
    /// Whether the sandbox exists there (from its cache, or asked of its apiserver when its
    /// cache is not synced).
    pub holds: bool,
    /// Whether it holds the sandbox suspended (no Pod; its record kept).
    pub suspended: bool,
}

/// What the request asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub id: &'a str,
    /// The placement key (the thread, or the sandbox id for thread-less sandboxes).
    pub thread: &'a str,
    /// The size the request names (or the default size).
    pub size: &'a str,
    pub ask: Ask<'a>,
    pub target: &'a Target,
}

/// What to do with a create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The sandbox exists in this cluster: its create there returns (or repairs) it, and no
    /// quota applies.
    Existing(String),
    /// A new sandbox, in this cluster.
    Place(String),
    /// The sandbox is suspended in this cluster: it gets its Pod again there, within the
    /// quota (it counts as a sandbox already; its CPU and memory count again).
    Resume(String),
}

impl Plan {
    /// Whether it makes a Pod that the quota counts from now on.
    pub fn is_new(&self) -> bool {
        matches!(self, Plan::Place(_) | Plan::Resume(_))
    }
}

/// The clusters a create may use: the target's, narrowed to the tenant's, or why none (422s).
pub fn candidates<'v, 'a>(
    request: &Request,
    tenant: &Tenant,
    clusters: &'v [ClusterView<'a>],
) -> Result<Vec<&'v ClusterView<'a>>, FleetError> {
    if let Some(allowed) = &tenant.sizes {
        if !allowed.iter().any(|s| s == request.size) {
            return Err(FleetError::SizeNotAllowed {
                tenant: tenant.name.clone(),
                size: request.size.to_string(),
                allowed: allowed.clone(),
            });
        }
    }
    let chosen: Vec<&ClusterView> = match request.target {
        Target::Any => clusters.iter().collect(),
        Target::Named(name) => {
            let named: Vec<&ClusterView> = clusters
                .iter()
                .filter(|c| c.placement.name == name)
                .collect();
            if named.is_empty() {
                return Err(FleetError::UnknownCluster {
                    name: name.clone(),
                    known: clusters
                        .iter()
                        .map(|c| c.placement.name.to_string())
                        .collect(),
                });
            }
            named
        }
        Target::Labels(wanted) => {
            let matching: Vec<&ClusterView> = clusters
                .iter()
                .filter(|c| wanted.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
                .collect();
            if matching.is_empty() {
                let known = clusters
                    .iter()
                    .map(|c| format!("{} {:?}", c.placement.name, c.labels))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(FleetError::NoClusterMatches {
                    wanted: format!("{wanted:?}"),
                    known,
                });
            }
            matching
        }
    };
    let Some(allowed) = &tenant.clusters else {
        return Ok(chosen);
    };
    let permitted: Vec<&ClusterView> = chosen
        .iter()
        .copied()
        .filter(|c| allowed.iter().any(|a| a == c.placement.name))
        .collect();
    if permitted.is_empty() {
        return Err(FleetError::ClusterNotAllowed {
            tenant: tenant.name.clone(),
            cluster: chosen
                .iter()
                .map(|c| c.placement.name)
                .collect::<Vec<_>>()
                .join(", "),
            allowed: allowed.clone(),
        });
    }
    Ok(permitted)
}

/// Decides a create. In order: the tenant's sizes and clusters and the request's target (422);
/// an existing sandbox (returned from its cluster; 409 when the request does not select that
/// cluster, 503 while it is out of reach; no quota applies); the tenant's quotas and
/// SANDBOX_MAX_TOTAL (429, only when `quota` is given); placement by the thread (503 when no
/// cluster can take it).
pub fn plan(
    request: &Request,
    tenant: &Tenant,
    clusters: &[ClusterView],
    quota: Option<&QuotaView>,
) -> Result<Plan, FleetError> {
    let candidates = candidates(request, tenant, clusters)?;
    if let Some(holder) = clusters.iter().find(|c| c.holds) {
        let name = holder.placement.name;
        if !candidates.iter().any(|c| c.placement.name == name) {
            return Err(FleetError::HeldElsewhere {
                id: request.id.to_string(),
                holder: name.to_string(),
            });
        }
        if let Some(cause) = &holder.placement.unreachable {
            return Err(FleetError::Unreachable {
                cluster: name.to_string(),
                cause: cause.clone(),
                what: "the sandbox exists there and cannot be checked now",
            });
        }
        if !holder.suspended {
            return Ok(Plan::Existing(name.to_string()));
        }
    }
    if let Some(q) = quota {
        quota::admit(
            &tenant.limits,
            q.max_total,
            &q.usage,
            q.total,
            &request.ask,
            q.oldest_create,
        )?;
    }
    if let Some(holder) = clusters.iter().find(|c| c.holds) {
        return Ok(Plan::Resume(holder.placement.name.to_string()));
    }
    let states: Vec<placement::ClusterState> =
        candidates.iter().map(|c| c.placement.clone()).collect();
    match placement::place(request.thread, &states) {
        Ok(name) => Ok(Plan::Place(name.to_string())),
        Err(skipped) => Err(FleetError::NoCapacity(
            skipped
                .into_iter()
                .map(|(name, why)| (name.to_string(), why))
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Skipped;

    fn view<'a>(name: &'a str, labels: &'a BTreeMap<String, String>) -> ClusterView<'a> {
        ClusterView {
            placement: placement::ClusterState {
                name,
                weight: 1,
                sandboxes: 0,
                max_sandboxes: None,
                unreachable: None,
            },
            labels,
            holds: false,
            suspended: false,
        }
    }

    fn request(target: &Target) -> Request<'_> {
        Request {
            id: "s-1",
            thread: "t-1",
            size: "default",
            ask: Ask {
                tenant: "team-a",
                user: "u",
                cpu: 1.0,
                memory: 1.0,
            },
            target,
        }
    }

    fn tenant() -> Tenant {
        Tenant::unlimited("team-a", None)
    }

    fn eu() -> BTreeMap<String, String> {
        BTreeMap::from([("region".to_string(), "eu".to_string())])
    }

    #[test]
    fn a_new_sandbox_is_placed_by_its_thread_among_the_candidates() {
        let (none, eu) = (BTreeMap::new(), eu());
        let clusters = [view("a", &none), view("b", &eu)];
        let any = plan(&request(&Target::Any), &tenant(), &clusters, None).unwrap();
        assert!(matches!(any, Plan::Place(ref c) if c == "a" || c == "b"));
        let labelled = Target::Labels(eu.clone());
        let by_label = plan(&request(&labelled), &tenant(), &clusters, None);
        assert_eq!(by_label.unwrap(), Plan::Place("b".into()));
        let named = Target::Named("a".into());
        assert_eq!(
            plan(&request(&named), &tenant(), &clusters, None).unwrap(),
            Plan::Place("a".into())
        );
    }

    #[test]
    fn an_existing_sandbox_is_returned_from_its_cluster_whatever_the_quota() {
        let none = BTreeMap::new();
        let mut clusters = [view("a", &none), view("b", &none)];
        clusters[1].holds = true;
        let mut full = tenant();
        full.limits.max_sandboxes = Some(1);
        let quota = QuotaView {
            usage: Usage {
                sandboxes: 1,
                ..Usage::default()
            },
            ..QuotaView::default()
        };
        let decided = plan(&request(&Target::Any), &full, &clusters, Some(&quota));
        assert_eq!(decided.unwrap(), Plan::Existing("b".into()));
    }

    #[test]
    fn an_existing_sandbox_elsewhere_or_out_of_reach_is_refused() {
        let none = BTreeMap::new();
        let mut clusters = [view("a", &none), view("b", &none)];
        clusters[1].holds = true;
        let named = Target::Named("a".into());
        let decided = plan(&request(&named), &tenant(), &clusters, None);
        assert!(
            matches!(decided, Err(FleetError::HeldElsewhere { ref holder, .. }) if holder == "b"),
            "{decided:?}"
        );
        clusters[1].placement.unreachable = Some("refused".into());
        let decided = plan(&request(&Target::Any), &tenant(), &clusters, None);
        assert!(
            matches!(decided, Err(FleetError::Unreachable { ref cluster, .. }) if cluster == "b"),
            "{decided:?}"
        );
    }

    #[test]
    fn the_tenants_sizes_and_clusters_and_the_target_are_422s() {
        let (none, eu) = (BTreeMap::new(), eu());
        let clusters = [view("a", &none), view("b", &eu)];
        let mut limited = tenant();
        limited.sizes = Some(vec!["small".into()]);
        let size = plan(&request(&Target::Any), &limited, &clusters, None);
        assert!(
            matches!(size, Err(FleetError::SizeNotAllowed { .. })),
            "{size:?}"
        );
        let unknown = plan(
            &request(&Target::Named("c".into())),
            &tenant(),
            &clusters,
            None,
        );
        assert!(
            matches!(unknown, Err(FleetError::UnknownCluster { .. })),
            "{unknown:?}"
        );
        let us = Target::Labels(BTreeMap::from([("region".into(), "us".into())]));
        let unmatched = plan(&request(&us), &tenant(), &clusters, None);
        let message = unmatched.unwrap_err().to_string();
        assert!(message.contains(r#"a {}, b {"region": "eu"}"#), "{message}");
        let mut confined = tenant();
        confined.clusters = Some(vec!["b".into()]);
        let elsewhere = plan(
            &request(&Target::Named("a".into())),
            &confined,
            &clusters,
            None,
        );
        assert!(
            matches!(elsewhere, Err(FleetError::ClusterNotAllowed { .. })),
            "{elsewhere:?}"
        );
        let within = plan(&request(&Target::Any), &confined, &clusters, None);
        assert_eq!(
            within.unwrap(),
            Plan::Place("b".into()),
            "only its clusters"
        );
    }

    #[test]
    fn a_suspended_sandbox_resumes_in_its_cluster_within_the_quota() {
        let none = BTreeMap::new();
        let mut clusters = [view("a", &none), view("b", &none)];
        clusters[1].holds = true;
        clusters[1].suspended = true;
        // Drained: a resume still goes where the sandbox's files are.
        clusters[1].placement.weight = 0;
        let mut limited = tenant();
        limited.limits.max_cpu = Some(crate::admission::tenants::Quantity {
            value: 1.0,
            text: "1".into(),
        });
        let room = QuotaView::default();
        let resumed = plan(&request(&Target::Any), &limited, &clusters, Some(&room));
        assert_eq!(resumed.unwrap(), Plan::Resume("b".into()));
        assert!(Plan::Resume("b".into()).is_new() && !Plan::Existing("b".into()).is_new());
        let busy = QuotaView {
            usage: Usage {
                cpu: 1.0,
                ..Usage::default()
            },
            ..QuotaView::default()
        };
        let refused = plan(&request(&Target::Any), &limited, &clusters, Some(&busy));
        assert!(
            matches!(refused, Err(FleetError::Quota(ref r)) if r.limit == "max_cpu"),
            "{refused:?}"
        );
        // A request that does not select its cluster cannot resume it elsewhere.
        let elsewhere = plan(
            &request(&Target::Named("a".into())),
            &limited,
            &clusters,
            None,
        );
        assert!(matches!(elsewhere, Err(FleetError::HeldElsewhere { .. })));
    }

    #[test]
    fn a_quota_refuses_a_new_sandbox_before_placement() {
        let none = BTreeMap::new();
        let clusters = [view("a", &none)];
        let mut limited = tenant();
        limited.limits.max_sandboxes = Some(2);
        let quota = QuotaView {
            usage: Usage {
                sandboxes: 2,
                ..Usage::default()
            },
            ..QuotaView::default()
        };
        let refused = plan(&request(&Target::Any), &limited, &clusters, Some(&quota));
        assert!(
            matches!(refused, Err(FleetError::Quota(ref r)) if r.limit == "max_sandboxes"),
            "{refused:?}"
        );
        let total = QuotaView {
            total: 5,
            max_total: Some(5),
            ..QuotaView::default()
        };
        let refused = plan(&request(&Target::Any), &tenant(), &clusters, Some(&total));
        assert!(
            matches!(refused, Err(FleetError::Quota(ref r)) if r.limit == "SANDBOX_MAX_TOTAL"),
            "{refused:?}"
        );
        let room = QuotaView::default();
        let placed = plan(&request(&Target::Any), &limited, &clusters, Some(&room));
        assert_eq!(placed.unwrap(), Plan::Place("a".into()));
    }

    #[test]
    fn no_capacity_names_each_clusters_reason() {
        let none = BTreeMap::new();
        let mut clusters = [view("a", &none), view("b", &none), view("c", &none)];
        clusters[0].placement.weight = 0;
        clusters[1].placement.max_sandboxes = Some(3);
        clusters[1].placement.sandboxes = 3;
        clusters[2].placement.unreachable = Some("connection refused".into());
        match plan(&request(&Target::Any), &tenant(), &clusters, None) {
            Err(FleetError::NoCapacity(skipped)) => {
                let reasons: BTreeMap<String, Skipped> = skipped.into_iter().collect();
                assert_eq!(reasons["a"], Skipped::Draining);
                assert_eq!(
                    reasons["b"],
                    Skipped::Full {
                        sandboxes: 3,
                        max: 3
                    }
                );
                assert!(matches!(reasons["c"], Skipped::Unreachable(_)));
            }
            other => panic!("expected NoCapacity, got {other:?}"),
        }
    }
}
