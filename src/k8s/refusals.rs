//! The permissions the apiserver refused at run time, as the calls, the watches and the
//! election meet them: logged once (then at most once a minute), counted, and listed by
//! `/readyz` with the fix from [the permissions table](crate::permissions).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{metrics::Metrics, permissions::find};

/// How often a permission that stays refused is logged again.
const LOG_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// A permission the apiserver refused, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MissingPermission {
    /// "watch pods"
    #[schema(example = "watch pods")]
    pub permission: String,
    /// What to grant, and where.
    pub fix: String,
}

#[derive(Debug)]
struct Refusal {
    last_logged: Instant,
    refused: u64,
}

/// The permissions refused at run time (403 Forbidden). Each is logged at ERROR when first
/// refused and then at most once a minute while it stays refused, counted in
/// `kubernetes_forbidden_total`, and listed by `/readyz` until a call with it succeeds.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Refusals {
    namespace: Arc<str>,
    metrics: Metrics,
    refused: Arc<Mutex<HashMap<(String, String), Refusal>>>,
}

impl Refusals {
    pub fn new(namespace: &str, metrics: Metrics) -> Self {
        Refusals {
            namespace: namespace.into(),
            metrics,
            refused: Arc::default(),
        }
    }

    /// A call with `verb` on `resource` was refused with 403; `message` is the apiserver's.
    pub fn refused(&self, verb: &str, resource: &str, message: &str) {
        self.metrics.kube_forbidden(verb, resource);
        let now = Instant::now();
        let log = {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            match refused.entry((verb.to_string(), resource.to_string())) {
                std::collections::hash_map::Entry::Occupied(mut seen) => {
                    let seen = seen.get_mut();
                    seen.refused += 1;
                    let due = now - seen.last_logged >= LOG_AGAIN_AFTER;
                    if due {
                        seen.last_logged = now;
                    }
                    due.then_some(seen.refused)
                }
                std::collections::hash_map::Entry::Vacant(new) => {
                    new.insert(Refusal {
                        last_logged: now,
                        refused: 1,
                    });
                    Some(1)
                }
            }
        };
        if let Some(times) = log {
            let fix = self.fix(verb, resource);
            tracing::error!(
                permission = format!("{verb} {resource}"),
                namespace = &*self.namespace,
                times,
                apiserver = message,
                fix,
                "Kubernetes refused a permission the provisioner needs; logged again at most once \
                    a minute while it lasts"
            );
        }
    }

    /// A call with `verb` on `resource` succeeded: it is no longer missing.
    pub fn allowed(&self, verb: &str, resource: &str) {
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if refused.is_empty() {
            return;
        }
        if let Some(was) = refused.remove(&(verb.to_string(), resource.to_string())) {
            tracing::info!(
                permission = format!("{verb} {resource}"),
                refused_before = was.refused,
                "a permission refused before works now"
            );
        }
    }

    /// The permissions refused now, sorted.
    pub fn missing(&self) -> Vec<MissingPermission> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing: Vec<MissingPermission> = refused
            .keys()
            .map(|(verb, resource)| MissingPermission {
                permission: format!("{verb} {resource}"),
                fix: self.fix(verb, resource),
            })
            .collect();
        missing.sort_by(|a, b| a.permission.cmp(&b.permission));
        missing
    }

    fn fix(&self, verb: &str, resource: &str) -> String {
        match find(verb, resource) {
            Some(p) => p.fix(&self.namespace),
            None => format!(
                "grant {verb} on {resource} in namespace {} to the provisioner's Role",
                self.namespace
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions(missing: &[MissingPermission]) -> Vec<&str> {
        missing.iter().map(|m| m.permission.as_str()).collect()
    }

    #[test]
    fn refusals_are_listed_until_allowed() {
        let refusals = Refusals::new("ns", Metrics::new());
        refusals.refused("watch", "pods", "forbidden");
        refusals.refused("watch", "pods", "forbidden");
        refusals.refused("patch", "pods", "forbidden");
        let missing = refusals.missing();
        assert_eq!(permissions(&missing), ["patch pods", "watch pods"]);
        assert!(
            missing[1].fix.contains("add verb watch on pods"),
            "{}",
            missing[1].fix
        );
        refusals.allowed("watch", "pods");
        let missing = refusals.missing();
        assert_eq!(permissions(&missing), ["patch pods"]);
    }
}
