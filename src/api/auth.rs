//! API key authentication for `/api/*`: the key arrives as `X-API-Key` (what DeerFlow's backend
//! sends) or `Authorization: Bearer`, and its digest is compared in constant time with every
//! tenant's. The caller (a tenant or the admin) goes into the request for the handlers.

use super::error::ApiError;
use crate::admission::{Admission, Caller};
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The key a request presents, from `X-API-Key` or `Authorization: Bearer`.
fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.as_bytes());
    }
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = auth.split_at(auth.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Who may call `/api/*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiAccess {
    /// Callers that present a tenant's key (PROVISIONER_API_KEY or PROVISIONER_TENANTS).
    Keys,
    /// Anyone, as tenant `default`: no key, and PROVISIONER_ALLOW_NO_API_KEY=true says that is
    /// intended.
    Open,
    /// No one: no key is configured (fail closed, as DeerFlow's provisioner does).
    Closed,
}

/// Middleware: lets a request through when it is not an API call, when it presents a known
/// key, or when the API is open by choice (with the caller in its extensions); answers 401
/// otherwise. The tenant's name (never the key) goes into the request's log span.
pub async fn require_api_key(
    State((access, admission)): State<(ApiAccess, Admission)>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let protected = path == "/api" || path.starts_with("/api/");
    if !protected {
        return next.run(request).await;
    }
    let caller = match access {
        ApiAccess::Open => admission.anyone(),
        ApiAccess::Keys => match presented(request.headers()).and_then(|k| admission.identify(k)) {
            Some(caller) => caller,
            None => return ApiError::Unauthorized.into_response(),
        },
        ApiAccess::Closed => return ApiError::NoKeyConfigured.into_response(),
    };
    let name = match &caller {
        Caller::Tenant(t) => t.name.as_str(),
        Caller::Admin => "(admin)",
    };
    tracing::Span::current().record("tenant", name);
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn key_comes_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  k1 "),
        );
        assert_eq!(presented(&h), Some(&b"k1"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(presented(&h), Some(&b"k2"[..]));
    }

    #[test]
    fn the_bearer_scheme_is_case_blind_and_nothing_else_counts() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            presented(&h).map(<[u8]>::to_vec)
        };
        assert_eq!(with("bearer k"), Some(b"k".to_vec()));
        assert_eq!(with("BEARER k"), Some(b"k".to_vec()));
        // No space: no scheme, no key.
        assert_eq!(with("Bearerk"), None);
        assert_eq!(with("Bearer"), None);
        // A scheme with nothing after it presents an empty key, which no tenant has.
        assert_eq!(with("Bearer "), Some(Vec::new()));
        assert_eq!(with("Token k"), None);
    }
}
