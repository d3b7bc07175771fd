//! The one place where failures become HTTP answers: `{"detail": "..."}` with the right status,
//! the shape FastAPI clients of the original provisioner already read.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::provisioner;

/// Every failure an API handler can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed (bad JSON, missing field, invalid id).
    #[error("{0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Provision(#[from] provisioner::Error),
    #[error("Not Found")]
    NoSuchRoute,
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// A bug: a handler task panicked. Details go to the log, not to the caller.
    #[error("internal error; see the provisioner's log")]
    Internal(String),
}

impl From<crate::sandbox::InvalidId> for ApiError {
    fn from(e: crate::sandbox::InvalidId) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use provisioner::Error as P;
        match self {
            ApiError::InvalidRequest(_) | ApiError::Provision(P::Invalid(_)) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Provision(P::NotFound(_)) | ApiError::NoSuchRoute => StatusCode::NOT_FOUND,
            ApiError::Provision(P::ThreadConflict { .. } | P::Terminating(_)) => {
                StatusCode::CONFLICT
            }
            ApiError::Provision(P::Kubernetes(e)) if e.is_unavailable() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Provision(P::Kubernetes(_)) => StatusCode::BAD_GATEWAY,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
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
        (status, Json(json!({ "detail": self.to_string() }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::cluster;

    fn kube(code: u16) -> ApiError {
        ApiError::Provision(provisioner::Error::Kubernetes(cluster::Error::Refused {
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
            ApiError::Provision(provisioner::Error::NotFound("a".into())).status(),
            404
        );
        assert_eq!(
            ApiError::Provision(provisioner::Error::Terminating("a".into())).status(),
            409
        );
        assert_eq!(kube(403).status(), 502);
        assert_eq!(kube(422).status(), 502);
        assert_eq!(kube(500).status(), 503);
        assert_eq!(kube(429).status(), 503);
        let timeout = cluster::Error::Timeout {
            action: "a".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert_eq!(ApiError::Provision(timeout.into()).status(), 503);
    }
}
