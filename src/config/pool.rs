//! The warm pool settings: SANDBOX_WARM_POOL and its companions, and each cluster's
//! `warm_pool` in SANDBOX_CLUSTERS.

use std::collections::BTreeMap;

use super::{args::WarmPoolArgs, check, ConfigError};
use crate::{
    sandbox::{Resources, Sizes},
    spec::{
        warm_pool::{PoolClass, WarmPool},
        SandboxSpec, SkillsMount, UserDataMount,
    },
};

const VARIABLE: &str = "SANDBOX_WARM_POOL";
/// More Pods than this per pool is a typo, not a pool.
const MAX_TARGET: u32 = 1000;

/// Pool sizes by name, as SANDBOX_WARM_POOL and a cluster's `warm_pool` give them.
pub(super) type Targets = BTreeMap<String, u32>;

/// Reads the settings; the pools' sizes are resolved per cluster by [`settle`].
pub(super) fn parse(args: &WarmPoolArgs) -> Result<WarmPool, ConfigError> {
    let root = args.sandbox_warm_pool_slot_root.trim();
    if !root.starts_with('/') || root.split('/').any(|p| p == "..") || root == "/" {
        return Err(ConfigError::new(
            "SANDBOX_WARM_POOL_SLOT_ROOT",
            root,
            "must be an absolute directory other than / (the node agent's --slot-root)",
        ));
    }
    let targets = match args.sandbox_warm_pool.as_deref().map(str::trim) {
        None | Some("") => Targets::new(),
        Some(text) => serde_json::from_str::<Targets>(text).map_err(|e| {
            ConfigError::new(
                VARIABLE,
                text,
                format!(
                    "must be a JSON object of size names and Pod counts, such as \
                    {{\"default\": 5}} ({e})"
                ),
            )
        })?,
    };
    Ok(WarmPool {
        classes: unresolved(targets),
        max_age: check::duration("SANDBOX_WARM_POOL_MAX_AGE", &args.sandbox_warm_pool_max_age)?,
        bind_timeout: check::duration(
            "SANDBOX_WARM_POOL_BIND_TIMEOUT",
            &args.sandbox_warm_pool_bind_timeout,
        )?,
        slot_root: root.trim_end_matches('/').to_string(),
    })
}

/// Pools whose resources [`settle`] fills in.
pub(super) fn unresolved(targets: Targets) -> Vec<PoolClass> {
    targets
        .into_iter()
        .map(|(name, target)| PoolClass {
            name,
            target,
            resources: Resources::default(),
        })
        .collect()
}

/// Resolves a cluster's pools against the sizes and checks that its sandboxes can be served
/// warm at all.
pub(super) fn settle(
    cluster: &str,
    spec: &mut SandboxSpec,
    sizes: &Sizes,
) -> Result<(), ConfigError> {
    let given: Targets = spec
        .warm_pool
        .classes
        .iter()
        .map(|c| (c.name.clone(), c.target))
        .collect();
    let shown = || serde_json::to_string(&given).unwrap_or_default();
    let fail = |value: String, problem: String| {
        let problem = match cluster {
            crate::sandbox::DEFAULT_CLUSTER => problem,
            _ => format!("cluster {cluster:?}: {problem}"),
        };
        ConfigError::new(VARIABLE, value, problem)
    };
    if !spec.warm_pool.on() {
        return Ok(());
    }
    for class in &spec.warm_pool.classes {
        if class.target > MAX_TARGET {
            return Err(fail(
                shown(),
                format!(
                    "pool {:?} keeps {} Pods; at most {MAX_TARGET}",
                    class.name, class.target
                ),
            ));
        }
        if !crate::sandbox::is_dns_label(&class.name) || class.name.len() > 40 {
            return Err(fail(
                shown(),
                format!(
                    "pool {:?} must be a size name that is a DNS label of at most 40 characters \
                        (it names the Pods)",
                    class.name
                ),
            ));
        }
    }
    let mut resolved = Vec::new();
    for class in &spec.warm_pool.classes {
        let resources = sizes.choose(Some(&class.name), None).map_err(|_| {
            fail(
                shown(),
                format!(
                    "pool {:?} names no size; known sizes: {} (SANDBOX_SIZES)",
                    class.name,
                    sizes.names().join(", ")
                ),
            )
        })?;
        resolved.push(PoolClass {
            resources,
            ..class.clone()
        });
    }
    spec.warm_pool.classes = resolved;
    let claims = matches!(spec.user_data, UserDataMount::Claim { .. })
        || matches!(spec.skills, SkillsMount::Claim { .. });
    if claims {
        return Err(fail(
            shown(),
            "warm pools need host-path or emptyDir storage: a PersistentVolumeClaim's sub-path \
                is fixed when the Pod starts. Unset USERDATA_PVC_NAME and SKILLS_PVC_NAME, or \
                SANDBOX_WARM_POOL"
                .into(),
        ));
    }
    if spec.upstream_key {
        return Err(fail(
            shown(),
            "warm pools cannot be used with SANDBOX_UPSTREAM_KEY=per-sandbox: the key is in \
                the Pod's environment, fixed when it starts. Set SANDBOX_UPSTREAM_KEY=none, or \
                unset SANDBOX_WARM_POOL"
                .into(),
        ));
    }
    Ok(())
}
