//! What a caller may know about the deployment: `GET /api/capabilities` and `GET /api/quota`.

use axum::{
    extract::{Extension, State},
    Json,
};

use crate::{
    admission::Caller,
    api::{
        model::{Capabilities, LimitsView, QuotaAnswer, TenantQuota, Unauthorized},
        AppState,
    },
    fleet,
};

/// The caller's limits and what it uses now; the admin key sees every tenant.
#[utoipa::path(get, path = "/api/quota", tag = "sandboxes",
    responses(
        (status = 200, description = "Limits and use", body = QuotaAnswer),
        Unauthorized,
    ))]
pub async fn quota(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<QuotaAnswer> {
    let admission = state.fleet.admission();
    let tenants = match &caller {
        Caller::Tenant(t) => vec![t.clone()],
        Caller::Admin => admission.tenants().tenants.clone(),
    };
    let fleet = &state.fleet;
    let total = fleet.snapshot("").total;
    Json(QuotaAnswer {
        tenants: tenants
            .iter()
            .map(|t| TenantQuota {
                tenant: t.name.clone(),
                limits: LimitsView {
                    max_sandboxes: t.limits.max_sandboxes,
                    max_sandboxes_per_user: t.limits.max_sandboxes_per_user,
                    max_cpu: t.limits.max_cpu.as_ref().map(|q| q.text.clone()),
                    max_memory: t.limits.max_memory.as_ref().map(|q| q.text.clone()),
                    max_creates_per_minute: t.limits.max_creates_per_minute,
                    sizes: t.sizes.clone(),
                    clusters: t.clusters.clone(),
                },
                usage: admission.usage(&t.name, fleet.snapshot(&t.name), |id| fleet.holds_id(id)),
            })
            .collect(),
        max_total: admission.max_total(),
        total,
    })
}

/// What this deployment lets callers choose: sizes, the default size, maxima, service mode.
#[utoipa::path(get, path = "/api/capabilities", tag = "sandboxes",
    responses(
        (status = 200, description = "Sizes and limits", body = Capabilities),
        Unauthorized,
    ))]
pub async fn capabilities(State(state): State<AppState>) -> Json<Capabilities> {
    Json(Capabilities {
        clusters: state.fleet.clusters().iter().map(fleet::info).collect(),
        ..(*state.capabilities).clone()
    })
}
