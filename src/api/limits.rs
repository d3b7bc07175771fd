//! Overload protection: a bounded number of requests at once (the rest are shed with 503 and
//! Retry-After instead of queueing without bound) and a time limit per request.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::config::HttpLimits;

/// Shared by every request: the permits and the time limit.
#[derive(Clone)]
pub struct Limiter {
    permits: Arc<Semaphore>,
    request_timeout: Duration,
}

impl Limiter {
    pub fn new(limits: &HttpLimits) -> Self {
        Limiter {
            permits: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            request_timeout: limits.request_timeout,
        }
    }
}

/// Middleware: sheds the request when all permits are taken; otherwise bounds its duration.
pub async fn shed_and_time_limit(
    State(limiter): State<Limiter>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = limiter.permits.clone().try_acquire_owned() else {
        return ApiError::Overloaded.into_response();
    };
    match tokio::time::timeout(limiter.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(limiter.request_timeout).into_response(),
    }
}
