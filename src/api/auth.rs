//! API key authentication for `/api/*`: the key arrives as `X-API-Key` (what DeerFlow's backend
//! sends) or `Authorization: Bearer`, and is compared in constant time.

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ring::digest::{digest, SHA256};

use super::error::ApiError;

/// The configured key, kept only as a digest so that comparisons take the same time whatever
/// the candidate's length or content.
#[derive(Clone)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    pub fn new(key: &str) -> Self {
        ApiKey {
            digest: sha256(key.as_bytes()),
        }
    }

    /// Whether `candidate` is the key, in time independent of where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let other = sha256(candidate);
        let diff = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(hidden)")
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

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
#[derive(Clone, Debug)]
pub enum ApiAccess {
    /// Callers that present this key.
    Key(ApiKey),
    /// Anyone: no key, and PROVISIONER_ALLOW_NO_API_KEY=true says that is intended.
    Open,
    /// No one: no key is configured (fail closed, as DeerFlow's provisioner does).
    Closed,
}

/// Middleware: lets a request through when it is not an API call, when it presents the key,
/// or when the API is open by choice; answers 401 otherwise.
pub async fn require_api_key(
    State(access): State<ApiAccess>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let protected = path == "/api" || path.starts_with("/api/");
    if !protected {
        return next.run(request).await;
    }
    match access {
        ApiAccess::Open => next.run(request).await,
        ApiAccess::Key(key) if presented(request.headers()).is_some_and(|k| key.matches(k)) => {
            next.run(request).await
        }
        ApiAccess::Key(_) => ApiError::Unauthorized.into_response(),
        ApiAccess::Closed => ApiError::NoKeyConfigured.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn matches_only_the_key() {
        let key = ApiKey::new("0123456789abcdef");
        assert!(key.matches(b"0123456789abcdef"));
        assert!(!key.matches(b"0123456789abcdeF"));
        assert!(!key.matches(b""));
        assert!(!key.matches(b"0123456789abcdef0"));
        assert_eq!(format!("{key:?}"), "ApiKey(hidden)");
    }

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
}
