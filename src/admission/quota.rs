//! Quota admission as a pure decision: from what is held (the caches plus this process's
//! creates in flight) and a tenant's limits, admit a create or refuse it naming the limit.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::tenants::Limits;

/// One sandbox as quotas count it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub tenant: String,
    pub user: String,
    /// Its CPU limit in cores and its memory limit in bytes.
    pub cpu: f64,
    pub memory: f64,
}

/// What a create asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask<'a> {
    pub tenant: &'a str,
    pub user: &'a str,
    pub cpu: f64,
    pub memory: f64,
}

/// A tenant's use now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Usage {
    pub sandboxes: usize,
    /// Sandboxes per user id.
    pub sandboxes_per_user: BTreeMap<String, usize>,
    /// Sum of the CPU limits, in cores.
    pub cpu: f64,
    /// Sum of the memory limits, in bytes.
    pub memory: f64,
    /// Creates admitted in the last minute (by this replica).
    pub creates_last_minute: usize,
}

/// Sums what `tenant` holds.
pub fn usage(tenant: &str, held: &[Held], creates_last_minute: usize) -> Usage {
    let mut usage = Usage {
        creates_last_minute,
        ..Usage::default()
    };
    for h in held.iter().filter(|h| h.tenant == tenant) {
        usage.sandboxes += 1;
        *usage.sandboxes_per_user.entry(h.user.clone()).or_default() += 1;
        usage.cpu += h.cpu;
        usage.memory += h.memory;
    }
    usage
}

/// Why a create was refused: the limit, its value and the use, for the 429's detail.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("quota exceeded: {limit} is {value} and {used}; nothing was created. {hint}")]
pub struct Refusal {
    /// The limit's name as configured (`max_sandboxes`, ..., `SANDBOX_MAX_TOTAL`).
    pub limit: &'static str,
    pub value: String,
    pub used: String,
    pub hint: &'static str,
    /// Seconds after which a retry may succeed.
    pub retry_after: u64,
}

const FREE_ONE: &str = "Delete a sandbox (or wait for one to expire) and retry";

/// How long a client should wait when only a deletion frees room.
pub const RETRY_AFTER_DELETION: u64 = 30;

/// Admits the create or names the first limit it would break. `total` is every tenant's
/// sandboxes together, for SANDBOX_MAX_TOTAL; `oldest_create_age` is how long ago the oldest
/// of the last minute's creates was, for the rate limit's Retry-After.
pub fn admit(
    limits: &Limits,
    max_total: Option<usize>,
    usage: &Usage,
    total: usize,
    ask: &Ask,
    oldest_create_age: Option<std::time::Duration>,
) -> Result<(), Refusal> {
    let refuse = |limit, value: String, used: String, hint, retry_after| {
        Err(Refusal {
            limit,
            value,
            used,
            hint,
            retry_after,
        })
    };
    if let Some(max) = max_total.filter(|max| total >= *max) {
        return refuse(
            "SANDBOX_MAX_TOTAL",
            max.to_string(),
            format!("{total} sandboxes exist in this deployment"),
            FREE_ONE,
            RETRY_AFTER_DELETION,
        );
    }
    if let Some(max) = limits.max_sandboxes.filter(|max| usage.sandboxes >= *max) {
        return refuse(
            "max_sandboxes",
            max.to_string(),
            format!("the tenant has {}", usage.sandboxes),
            FREE_ONE,
            RETRY_AFTER_DELETION,
        );
    }
    let of_user = usage.sandboxes_per_user.get(ask.user).copied().unwrap_or(0);
    if let Some(max) = limits.max_sandboxes_per_user.filter(|max| of_user >= *max) {
        return refuse(
            "max_sandboxes_per_user",
            max.to_string(),
            format!("user {:?} has {of_user}", ask.user),
            FREE_ONE,
            RETRY_AFTER_DELETION,
        );
    }
    if let Some(max) = &limits.max_cpu {
        if usage.cpu + ask.cpu > max.value + 1e-9 {
            return refuse(
                "max_cpu",
                max.text.clone(),
                format!(
                    "the tenant's sandboxes have CPU limits of {} cores together, and this one \
                        asks for {} more",
                    round(usage.cpu),
                    round(ask.cpu)
                ),
                "Delete a sandbox, ask for a smaller size, and retry",
                RETRY_AFTER_DELETION,
            );
        }
    }
    if let Some(max) = &limits.max_memory {
        if usage.memory + ask.memory > max.value + 0.5 {
            return refuse(
                "max_memory",
                max.text.clone(),
                format!(
                    "the tenant's sandboxes have memory limits of {} together, and this one asks \
                        for {} more",
                    bytes(usage.memory),
                    bytes(ask.memory)
                ),
                "Delete a sandbox, ask for a smaller size, and retry",
                RETRY_AFTER_DELETION,
            );
        }
    }
    if let Some(max) = limits
        .max_creates_per_minute
        .filter(|max| usage.creates_last_minute >= *max)
    {
        let wait = 60u64.saturating_sub(oldest_create_age.map_or(0, |a| a.as_secs()));
        return refuse(
            "max_creates_per_minute",
            max.to_string(),
            format!(
                "the tenant created {} in the last minute",
                usage.creates_last_minute
            ),
            "Retry after the time in Retry-After",
            wait.max(1),
        );
    }
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn bytes(b: f64) -> String {
    const GI: f64 = 1024.0 * 1024.0 * 1024.0;
    const MI: f64 = 1024.0 * 1024.0;
    if b >= GI {
        format!("{}Gi", round(b / GI))
    } else {
        format!("{}Mi", round(b / MI))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::tenants::Quantity;

    fn held(tenant: &str, user: &str) -> Held {
        Held {
            tenant: tenant.into(),
            user: user.into(),
            cpu: 1.0,
            memory: 1024.0 * 1024.0 * 1024.0,
        }
    }

    fn ask<'a>(user: &'a str) -> Ask<'a> {
        Ask {
            tenant: "a",
            user,
            cpu: 1.0,
            memory: 1024.0 * 1024.0 * 1024.0,
        }
    }

    #[test]
    fn usage_counts_only_the_tenant() {
        let all = [
            held("a", "u1"),
            held("a", "u2"),
            held("a", "u1"),
            held("b", "u1"),
        ];
        let u = usage("a", &all, 4);
        assert_eq!(u.sandboxes, 3);
        assert_eq!(u.sandboxes_per_user["u1"], 2);
        assert_eq!(u.cpu, 3.0);
        assert_eq!(u.creates_last_minute, 4);
    }

    #[test]
    fn each_limit_refuses_at_its_value_and_admits_below() {
        let all = [held("a", "u1"), held("a", "u1")];
        let u = usage("a", &all, 2);
        let quantity = |text: &str, value: f64| Quantity {
            text: text.into(),
            value,
        };
        let gib = 1024.0 * 1024.0 * 1024.0;
        for (limits, max_total, user, refused) in [
            (
                Limits {
                    max_sandboxes: Some(2),
                    ..Limits::default()
                },
                None,
                "u2",
                Some("max_sandboxes"),
            ),
            (
                Limits {
                    max_sandboxes: Some(3),
                    ..Limits::default()
                },
                None,
                "u2",
                None,
            ),
            (
                Limits {
                    max_sandboxes_per_user: Some(2),
                    ..Limits::default()
                },
                None,
                "u1",
                Some("max_sandboxes_per_user"),
            ),
            (
                Limits {
                    max_sandboxes_per_user: Some(2),
                    ..Limits::default()
                },
                None,
                "u2",
                None,
            ),
            (
                Limits {
                    max_cpu: Some(quantity("2500m", 2.5)),
                    ..Limits::default()
                },
                None,
                "u2",
                Some("max_cpu"),
            ),
            (
                Limits {
                    max_cpu: Some(quantity("3", 3.0)),
                    ..Limits::default()
                },
                None,
                "u2",
                None,
            ),
            (
                Limits {
                    max_memory: Some(quantity("2Gi", 2.0 * gib)),
                    ..Limits::default()
                },
                None,
                "u2",
                Some("max_memory"),
            ),
            (
                Limits {
                    max_memory: Some(quantity("3Gi", 3.0 * gib)),
                    ..Limits::default()
                },
                None,
                "u2",
                None,
            ),
            (
                Limits {
                    max_creates_per_minute: Some(2),
                    ..Limits::default()
                },
                None,
                "u2",
                Some("max_creates_per_minute"),
            ),
            (Limits::default(), Some(5), "u2", Some("SANDBOX_MAX_TOTAL")),
            (Limits::default(), Some(6), "u2", None),
        ] {
            let result = admit(
                &limits,
                max_total,
                &u,
                5,
                &ask(user),
                Some(std::time::Duration::from_secs(20)),
            );
            assert_eq!(
                result.as_ref().err().map(|r| r.limit),
                refused,
                "{limits:?} {max_total:?} {result:?}"
            );
        }
    }

    #[test]
    fn refusals_say_the_limit_the_use_and_when_to_retry() {
        let u = usage("a", &[held("a", "u1")], 3);
        let limits = Limits {
            max_creates_per_minute: Some(3),
            ..Limits::default()
        };
        let r = admit(
            &limits,
            None,
            &u,
            1,
            &ask("u1"),
            Some(std::time::Duration::from_secs(45)),
        )
        .unwrap_err();
        assert_eq!(r.retry_after, 15);
        assert_eq!(
            r.to_string(),
            "quota exceeded: max_creates_per_minute is 3 and the tenant created 3 in the last \
                minute; nothing was created. Retry after the time in Retry-After"
        );
        let limits = Limits {
            max_memory: Some(Quantity {
                text: "1536Mi".into(),
                value: 1536.0 * 1024.0 * 1024.0,
            }),
            ..Limits::default()
        };
        let r = admit(&limits, None, &u, 1, &ask("u1"), None).unwrap_err();
        assert!(
            r.to_string()
                .contains("memory limits of 1Gi together, and this one asks for 1Gi more"),
            "{r}"
        );
        assert_eq!(r.retry_after, RETRY_AFTER_DELETION);
    }
}
