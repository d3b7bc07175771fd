//! The HTTP API: routes, shared state, protection layers, the request log and the OpenAPI
//! document.

mod auth;
mod error;
mod limits;
pub mod model;
mod routes;
#[cfg(test)]
mod tests;

pub use auth::ApiAccess;
pub use error::{ApiError, ErrorBody};
pub use model::{Capabilities, CreateRequest, Deleted, Health, SandboxList};

use std::time::Instant;

use axum::{
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tracing::Instrument;
use utoipa::{
    openapi::security::{
        ApiKey as ApiKeyScheme, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
    },
    Modify, OpenApi,
};

use crate::{
    config::{Config, HttpLimits},
    fleet::Fleet,
    metrics::Metrics,
    sandbox::{HostBase, Timers},
};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub fleet: Fleet,
    /// For the 413 message.
    pub max_body_bytes: usize,
    /// What callers may choose, for creates and GET /api/capabilities.
    pub capabilities: std::sync::Arc<Capabilities>,
    /// Longest readiness wait, so that a wait ends with an answer before the request's own
    /// time limit would turn it into a 503.
    pub max_wait: std::time::Duration,
    /// The container paths a request's skills path may neither be nor lie in: the fixed
    /// mounts and every cluster's pod template mounts.
    pub fixed_mounts: std::sync::Arc<[String]>,
    pub host_base: std::sync::Arc<HostBase>,
    pub timers: Timers,
}

/// Everything the router needs besides the clusters.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub access: ApiAccess,
    pub limits: HttpLimits,
    pub capabilities: Capabilities,
    /// The directory extra mounts must lie in (every cluster's).
    pub host_base: HostBase,
    /// The defaults and ceilings of a request's timers.
    pub timers: Timers,
}

impl ApiSettings {
    /// The router's settings from the configuration.
    pub fn from_config(config: &Config) -> ApiSettings {
        ApiSettings {
            access: match (&config.http.api_key, config.http.allow_no_api_key) {
                _ if config.tenancy.tenants.is_some() => ApiAccess::Keys,
                (Some(_), _) => ApiAccess::Keys,
                (None, true) => ApiAccess::Open,
                (None, false) => ApiAccess::Closed,
            },
            limits: config.http.limits.clone(),
            capabilities: Capabilities {
                sizes: config.sizes.clone(),
                service_type: config.sandbox.exposure.service_type().into(),
                container_port: config.sandbox.port,
                network_policy: config.sandbox.network_policy.name().into(),
                lark_cli_init_image: config.sandbox.lark.init_image.is_some(),
                lark_cli_broker_image: config.sandbox.lark.broker_image.is_some(),
                clusters: Vec::new(),
            },
            host_base: config.sandbox.host_base.clone(),
            timers: config.lifecycle.timers,
        }
    }
}

/// The whole API, ready to serve (or to call with `oneshot` in tests).
pub fn app(fleet: Fleet, settings: ApiSettings) -> Router {
    let mut fixed_mounts: Vec<String> = crate::sandbox::mounts::fixed_mount_paths()
        .into_iter()
        .map(str::to_string)
        .collect();
    for cluster in fleet.clusters() {
        fixed_mounts.extend(cluster.spec().pod_template.mount_paths());
    }
    let state = AppState {
        fixed_mounts: fixed_mounts.into(),
        host_base: std::sync::Arc::new(settings.host_base),
        timers: settings.timers,
        fleet,
        max_body_bytes: settings.limits.max_body_bytes,
        capabilities: std::sync::Arc::new(settings.capabilities),
        max_wait: settings
            .limits
            .request_timeout
            .saturating_sub(std::time::Duration::from_secs(1)),
    };
    let api = Router::new()
        .route(
            "/api/sandboxes",
            get(routes::sandboxes::list).post(routes::sandboxes::create),
        )
        .route(
            "/api/sandboxes/{sandbox_id}",
            get(routes::sandboxes::get).delete(routes::sandboxes::delete),
        )
        .route("/api/capabilities", get(routes::info::capabilities))
        .route("/api/quota", get(routes::info::quota))
        .route(
            "/api/sandboxes/{sandbox_id}/keepalive",
            axum::routing::post(routes::sandboxes::keepalive),
        )
        .route(
            "/api/sandboxes/{sandbox_id}/suspend",
            axum::routing::post(routes::sandboxes::suspend),
        )
        .route(
            "/api/sandboxes/{sandbox_id}/resume",
            axum::routing::post(routes::sandboxes::resume),
        )
        .route(
            "/api/sandboxes/{sandbox_id}/presence",
            get(routes::sandboxes::presence),
        )
        .route("/openapi.json", get(openapi_json))
        .fallback(routes::no_such_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            (settings.access, state.fleet.admission().clone()),
            auth::require_api_key,
        ))
        .layer(middleware::from_fn_with_state(
            limits::Limiter::new(&settings.limits),
            limits::shed_and_time_limit,
        ))
        .layer(middleware::from_fn_with_state(
            state.fleet.metrics().clone(),
            log_request,
        ))
        .with_state(state.clone());
    // Probes stay outside the request log and the limits, so that they neither flood the log
    // nor fail because the API is busy.
    Router::new()
        .route("/health", get(routes::probes::health))
        .route("/readyz", get(routes::probes::readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(api)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.fleet.refresh_status_gauges();
    state.fleet.refresh_tenant_gauge();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.fleet.metrics().render(),
    )
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI 3 description of the API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandbox-provisioner",
        description = "Isolated code-execution sandboxes for AI agents on Kubernetes. A drop-in \
            for DeerFlow's provisioner API.",
        license(name = "Apache-2.0"),
    ),
    paths(
        routes::probes::health,
        routes::probes::readyz,
        routes::sandboxes::create,
        routes::sandboxes::list,
        routes::sandboxes::get,
        routes::sandboxes::delete,
        routes::sandboxes::keepalive,
        routes::sandboxes::suspend,
        routes::sandboxes::resume,
        routes::sandboxes::presence,
        routes::info::capabilities,
        routes::info::quota,
    ),
    components(schemas(ErrorBody, CreateRequest, SandboxList, Deleted, model::Presence, Health,
        crate::sandbox::Sandbox, crate::sandbox::Phase, crate::k8s::cache::CacheSummary,
            crate::k8s::refusals::MissingPermission, Capabilities, crate::sandbox::Resources,
                crate::sandbox::Sizes, crate::fleet::ClusterInfo, crate::fleet::WarmPoolInfo, crate::fleet::ClusterListing,
                    model::ClusterHealth, model::QuotaAnswer, model::TenantQuota,
                        model::LimitsView, crate::admission::Usage)),
    modifiers(&SecuritySchemes),
    // Every /api/* route takes the key either way; the probes need none.
    security((), ("api_key" = []), ("bearer" = [])),
    tags(
        (name = "sandboxes", description = "Create, read, list and delete sandboxes"),
        (name = "probes", description = "Liveness and readiness"),
    ),
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKeyScheme::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "Required when the provisioner runs with PROVISIONER_API_KEY",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The same key as Authorization: Bearer <key>"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document as committed in `openapi.json`.
pub fn openapi_document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// One log line per request (method, path, route, status, latency, request id), the HTTP
/// metrics, and the `x-request-id` header: taken from the caller when sensible, else made up,
/// and returned on the answer.
async fn log_request(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let header_value =
        HeaderValue::from_str(&request_id).expect("checked or generated as visible ASCII");
    request
        .headers_mut()
        .insert(REQUEST_ID, header_value.clone());
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let span =
        tracing::info_span!("request", request_id = %request_id, tenant = tracing::field::Empty);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics.http_request(method.as_str(), &route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            %method,
            path,
            route,
            status,
            latency_ms = format!("{:.1}", elapsed.as_secs_f64() * 1000.0),
            "request"
        )
    });
    response.headers_mut().insert(REQUEST_ID, header_value);
    response
}

const REQUEST_ID: &str = "x-request-id";

/// A fresh 16-hex-digit request id.
fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}
