//! The one place where failures become HTTP answers: `{"detail": "..."}` with the right status,
//! the shape FastAPI clients of the original provisioner already read.

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{cluster, fleet::FleetError};

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong and what to do about it.
    pub detail: String,
}

/// Every failure an API handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed (bad JSON, missing field, invalid id).
    #[error("{0}")]
    InvalidRequest(String),
    /// An extra mount breaks a mount rule (DeerFlow answers these with 400).
    #[error(transparent)]
    InvalidMount(#[from] crate::sandbox::InvalidMount),
    #[error(transparent)]
    InvalidSkillsPath(#[from] crate::sandbox::InvalidSkillsPath),
    #[error(transparent)]
    Provision(#[from] cluster::Error),
    /// Choosing or reaching a cluster failed (a provisioner error inside is `Provision`).
    #[error(transparent)]
    Fleet(FleetError),
    #[error("Not Found")]
    NoSuchRoute,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error(
        "missing or invalid API key: send it in the X-API-Key header or as Authorization: \
        Bearer <key>"
    )]
    Unauthorized,
    /// The key is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error(
        "this provisioner has no API key configured, so it refuses every /api/* request: set \
        PROVISIONER_API_KEY on the provisioner (for example to the output of `openssl rand -hex \
        32`) and the same key in the backend (DeerFlow: sandbox.provisioner_api_key), or set \
        PROVISIONER_ALLOW_NO_API_KEY=true to run without a key where only the backend can reach \
        this port"
    )]
    NoKeyConfigured,
    #[error("the request body is larger than {0} bytes (PROVISIONER_MAX_BODY_BYTES)")]
    PayloadTooLarge(usize),
    #[error("the request body must be JSON: send Content-Type: application/json (got {0:?})")]
    UnsupportedMediaType(String),
    #[error("the provisioner is at its limit of concurrent requests; retry shortly")]
    Overloaded,
    #[error(
        "the request did not finish within {0:?} (PROVISIONER_REQUEST_TIMEOUT_SECONDS); \
        retry, and check the Kubernetes API if it keeps happening"
    )]
    RequestTimeout(Duration),
    #[error("not ready: {0}")]
    NotReady(String),
    /// A bug: a handler task panicked. Details go to the log, not to the caller.
    #[error("internal error; see the provisioner's log")]
    Internal(String),
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::Provision(e) => ApiError::Provision(e),
            other => ApiError::Fleet(other),
        }
    }
}

impl From<crate::sandbox::InvalidId> for ApiError {
    fn from(e: crate::sandbox::InvalidId) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use cluster::Error as P;
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::InvalidSkillsPath(_)
            | ApiError::Provision(P::Invalid(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Provision(P::NotFound(_)) | ApiError::NoSuchRoute => StatusCode::NOT_FOUND,
            ApiError::Provision(
                P::ThreadConflict { .. }
                | P::UserConflict { .. }
                | P::Taken(_)
                | P::ShellCapacity { .. }
                | P::SkillsPathConflict { .. }
                | P::LarkConflict { .. }
                | P::Terminating(_)
                | P::NotSuspendable(_)
                | P::KeptReappearing { .. },
            ) => StatusCode::CONFLICT,
            ApiError::Provision(P::Kubernetes(e)) if e.is_unavailable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Provision(P::LarkBrokerUnavailable | P::DataNotBound { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Provision(P::Kubernetes(_)) => StatusCode::BAD_GATEWAY,
            ApiError::InvalidMount(_) => StatusCode::BAD_REQUEST,
            ApiError::Fleet(
                FleetError::UnknownCluster { .. } | FleetError::NoClusterMatches { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Fleet(FleetError::HeldElsewhere { .. }) => StatusCode::CONFLICT,
            ApiError::Fleet(
                FleetError::NoCapacity(_)
                | FleetError::Unreachable { .. }
                | FleetError::Lock(_)
                | FleetError::Provision(_),
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized | ApiError::NoKeyConfigured => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Fleet(FleetError::Quota(_)) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Fleet(
                FleetError::ClusterNotAllowed { .. } | FleetError::SizeNotAllowed { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded | ApiError::RequestTimeout(_) | ApiError::NotReady(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(cause, "internal error"),
            _ if status.is_server_error() => {
                tracing::warn!(status = status.as_u16(), error = %self, "request failed")
            }
            _ => {}
        }
        let mut response = (
            status,
            Json(ErrorBody {
                detail: self.to_string(),
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized | ApiError::NoKeyConfigured => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Fleet(FleetError::NoCapacity(_) | FleetError::Unreachable { .. }) => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::fleet::RETRY_AFTER_SECONDS),
                );
            }
            ApiError::Fleet(FleetError::Lock(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Fleet(FleetError::Quota(refusal)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(refusal.retry_after));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::calls;

    fn kube(code: u16) -> ApiError {
        ApiError::Provision(cluster::Error::Kubernetes(calls::Error::Refused {
            action: "a".into(),
            code,
            reason: "r".into(),
            message: "m".into(),
            kind: None,
        }))
    }

    #[test]
    fn statuses() {
        assert_eq!(ApiError::InvalidRequest("x".into()).status(), 422);
        assert_eq!(
            ApiError::Provision(cluster::Error::NotFound("a".into())).status(),
            404
        );
        assert_eq!(
            ApiError::Provision(cluster::Error::Terminating("a".into())).status(),
            409
        );
        assert_eq!(kube(403).status(), 502);
        assert_eq!(kube(422).status(), 502);
        assert_eq!(kube(500).status(), 503);
        assert_eq!(kube(429).status(), 503);
        let timeout = calls::Error::Timeout {
            action: "a".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(ApiError::Provision(timeout.into()).status(), 503);
    }

    #[test]
    fn fleet_statuses_and_retry_after() {
        use crate::fleet::Skipped;
        let fleet = |e: FleetError| ApiError::from(e);
        let unknown = FleetError::UnknownCluster {
            name: "c".into(),
            known: vec!["a".into()],
        };
        assert_eq!(fleet(unknown).status(), 422);
        let unmatched = FleetError::NoClusterMatches {
            wanted: "x".into(),
            known: "y".into(),
        };
        assert_eq!(fleet(unmatched).status(), 422);
        let held = FleetError::HeldElsewhere {
            id: "s".into(),
            holder: "b".into(),
        };
        assert_eq!(fleet(held).status(), 409);
        // A provisioner error inside keeps its own status.
        let inner = FleetError::Provision(cluster::Error::NotFound("s".into()));
        assert_eq!(fleet(inner).status(), 404);
        for e in [
            FleetError::NoCapacity(vec![("a".into(), Skipped::Draining)]),
            FleetError::Unreachable {
                cluster: "a".into(),
                cause: "refused".into(),
                what: "the sandbox is there",
            },
        ] {
            let response = fleet(e).into_response();
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        }
    }
}
