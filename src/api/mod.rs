//! The HTTP API: routes, shared state and the request log.

mod error;
mod handlers;

pub use error::ApiError;
pub use handlers::CreateRequest;

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
    routing::get,
    Router,
};

use crate::provisioner::Provisioner;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub provisioner: Provisioner,
}

/// The whole API, ready to serve (or to drive with `tower::ServiceExt::oneshot` in tests).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/sandboxes", get(handlers::list).post(handlers::create))
        .route(
            "/api/sandboxes/{sandbox_id}",
            get(handlers::get).delete(handlers::delete),
        )
        .fallback(handlers::no_such_route)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(log_request))
        .with_state(state);
    // Probes stay outside the request log so that they do not flood it.
    Router::new()
        .route("/health", get(handlers::health))
        .merge(api)
}

/// One log line per request: method, path, status and latency.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    tracing::info!(
        %method,
        path,
        route = route.as_deref().unwrap_or("-"),
        status = response.status().as_u16(),
        latency_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        "request"
    );
    response
}
