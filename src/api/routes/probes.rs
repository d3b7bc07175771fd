//! `GET /health` (liveness) and `GET /readyz` (readiness, from each cluster's health).

use axum::{extract::State, Json};

use crate::{
    api::{
        error::{ApiError, ErrorBody},
        model::{ClusterHealth, Health},
        AppState,
    },
    fleet,
};

/// Liveness: the process serves HTTP. Makes no Kubernetes call.
#[utoipa::path(get, path = "/health", tag = "probes",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        namespace: None,
        cache: None,
        missing_permissions: Vec::new(),
        clusters: Vec::new(),
    })
}

/// Readiness: at least one cluster takes new sandboxes (its apiserver answers, its namespace
/// is usable, it is neither draining nor full).
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Ready to serve sandbox requests", body = Health),
        (status = 503, description = "No cluster takes new sandboxes: Kubernetes unreachable, the \
            namespace unusable, or every cluster draining or full", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Waits at most for a first probe round of a cluster that has just started.
    let limit = state.max_wait.min(std::time::Duration::from_secs(10));
    let checks = state.fleet.clusters().iter().map(|cluster| async move {
        let health = cluster.health(limit).await;
        let info = fleet::info(cluster);
        let full = matches!((info.sandboxes, info.max_sandboxes), (Some(n), Some(max)) if n >= max);
        ClusterHealth {
            accepting: health.error.is_none() && info.weight > 0 && !full,
            cache: health.cache,
            missing_permissions: health.missing_permissions,
            error: health.error,
            info,
        }
    });
    let clusters = futures::future::join_all(checks).await;
    if !clusters.iter().any(|c| c.accepting) {
        let why = clusters
            .iter()
            .map(|c| {
                let reason = c.error.clone().unwrap_or_else(|| {
                    if c.info.weight == 0 {
                        "draining (weight 0)".into()
                    } else {
                        "full (max_sandboxes reached)".into()
                    }
                });
                if state.fleet.clusters().len() == 1 {
                    reason
                } else {
                    format!("cluster {:?}: {reason}", c.info.name)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ApiError::NotReady(why));
    }
    let first = &clusters[0];
    Ok(Json(Health {
        status: "ready".into(),
        namespace: Some(first.info.namespace.clone()),
        cache: Some(first.cache),
        missing_permissions: first.missing_permissions.clone(),
        clusters,
    }))
}
