//! How a Kubernetes call failed, classified by what the caller can do about it.

use std::time::Duration;

/// A Kubernetes call that did not succeed, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the Kubernetes API did not answer within {timeout:?} while trying to {action}; check \
        that the API server is up and reachable (KUBECONFIG_PATH / K8S_API_SERVER)"
    )]
    Timeout { action: String, timeout: Duration },
    #[error(
        "cannot reach the Kubernetes API to {action}: {cause}; check that the API server is \
        up and reachable (KUBECONFIG_PATH / K8S_API_SERVER)"
    )]
    Unreachable { action: String, cause: String },
    #[error("Kubernetes refused to {action}: {message} (HTTP {code} {reason})")]
    Refused {
        action: String,
        code: u16,
        reason: String,
        message: String,
        /// Kind of the object the refusal is about (`namespaces` when the namespace is missing).
        kind: Option<String>,
    },
}

impl Error {
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::Refused { code: 409, reason, .. } if reason == "AlreadyExists")
    }

    /// Another writer changed (or created) the object first.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Refused { code: 409, .. })
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Refused { code: 404, .. })
    }

    /// A 404 about the namespace itself rather than the object.
    pub fn is_namespace_missing(&self) -> bool {
        matches!(self, Error::Refused { code: 404, kind: Some(k), .. } if k == "namespaces")
    }

    /// A pod refused because the namespace's default ServiceAccount does not exist yet: the
    /// namespace was created moments ago and its controller has not caught up.
    pub fn is_service_account_pending(&self) -> bool {
        matches!(self, Error::Refused { code: 403 | 500, message, .. }
            if (message.contains("serviceaccount") && message.contains("not found"))
                || message.contains("No API token found for service account"))
    }

    /// A refusal by authorization (RBAC): the credential lacks the verb on the resource.
    /// Admission refusals (quota, a missing ServiceAccount) are 403 too, but say otherwise.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::Refused { code: 403, message, .. } if message.contains(" cannot "))
    }

    /// The `code` label of the error metric.
    pub(super) fn code_label(&self) -> String {
        match self {
            Error::Timeout { .. } => "timeout".into(),
            Error::Unreachable { .. } => "unreachable".into(),
            Error::Refused { code, .. } => code.to_string(),
        }
    }

    /// An answer from the apiserver that says "try again": 429 Too Many Requests or a 5xx.
    pub fn is_retryable_answer(&self) -> bool {
        matches!(self, Error::Refused { code, .. } if *code == 429 || *code >= 500)
    }

    /// The cluster is (perhaps briefly) unable to serve: worth a retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::Unreachable { .. } => true,
            Error::Refused { code, .. } => *code == 429 || *code >= 500,
        }
    }

    pub(super) fn from_kube(action: String, e: kube::Error, timeout: Duration) -> Error {
        match e {
            kube::Error::Api(status) => Error::Refused {
                action,
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
                kind: status.details.as_ref().map(|d| d.kind.clone()),
            },
            kube::Error::SerdeError(e) => Error::Refused {
                action,
                code: 502,
                reason: "InvalidResponse".into(),
                message: format!("the API server's answer could not be read: {e}"),
                kind: None,
            },
            other => {
                let cause = error_chain(&other);
                if is_timeout_cause(&cause) {
                    Error::Timeout { action, timeout }
                } else {
                    Error::Unreachable { action, cause }
                }
            }
        }
    }
}

/// Whether an error chain (from [`error_chain`]) says the call ran out of time: the client's
/// own connect or read timeout rather than an answer.
pub fn is_timeout_cause(chain: &str) -> bool {
    chain.contains("deadline has elapsed") || chain.contains("timed out")
}

/// "outer: inner: innermost", skipping repeats, so the root cause (connection refused,
/// certificate invalid, ...) is visible.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
