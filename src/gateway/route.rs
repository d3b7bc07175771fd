//! Which sandbox a gateway request names, and what is forwarded to it.

/// A request path `/sandboxes/{id}/{token}{rest}`, split.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub id: &'a str,
    pub token: &'a str,
    /// `/sandboxes/{id}/{token}`: the prefix stripped (X-Forwarded-Prefix).
    pub prefix: &'a str,
    /// What the sandbox is asked for: the rest of the path and the query, byte for byte (no
    /// dot-segment or slash normalisation); `/` when nothing follows the token.
    pub target: &'a str,
}

/// Where gateway paths start.
pub const PREFIX: &str = "/sandboxes/";

/// Splits a request's path and query (None: not a sandbox URL).
pub fn route(path_and_query: &str) -> Option<Route<'_>> {
    let after = path_and_query.strip_prefix(PREFIX)?;
    let (id, after_id) = after.split_once('/')?;
    let token_end = after_id.find(['/', '?']).unwrap_or(after_id.len());
    let token = &after_id[..token_end];
    if id.is_empty() || token.is_empty() {
        return None;
    }
    let prefix_len = PREFIX.len() + id.len() + 1 + token_end;
    let rest = &path_and_query[prefix_len..];
    let target = if rest.is_empty() || rest.starts_with('?') {
        // Nothing, or only a query, after the token: the sandbox's root.
        None
    } else {
        Some(rest)
    };
    Some(Route {
        id,
        token,
        prefix: &path_and_query[..prefix_len],
        target: target.unwrap_or(if rest.is_empty() { "/" } else { rest }),
    })
}

/// The request-target sent upstream: `target`, with a `/` put before a bare query.
pub fn upstream_target(route: &Route<'_>) -> String {
    if route.target.starts_with('?') {
        format!("/{}", route.target)
    } else {
        route.target.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_is_stripped_and_the_rest_kept_byte_for_byte() {
        let r = route("/sandboxes/abc/tok/v1/shell/exec").unwrap();
        assert_eq!((r.id, r.token), ("abc", "tok"));
        assert_eq!(r.prefix, "/sandboxes/abc/tok");
        assert_eq!(r.target, "/v1/shell/exec");
        let r = route("/sandboxes/abc/tok/v1/../a//b/./c?x=1&y=%2F..").unwrap();
        assert_eq!(r.target, "/v1/../a//b/./c?x=1&y=%2F..");
        assert_eq!(upstream_target(&r), "/v1/../a//b/./c?x=1&y=%2F..");
    }

    #[test]
    fn nothing_after_the_token_is_the_root() {
        assert_eq!(route("/sandboxes/abc/tok").unwrap().target, "/");
        assert_eq!(route("/sandboxes/abc/tok/").unwrap().target, "/");
        let r = route("/sandboxes/abc/tok?q=1").unwrap();
        assert_eq!((r.token, r.prefix), ("tok", "/sandboxes/abc/tok"));
        assert_eq!(upstream_target(&r), "/?q=1");
    }

    #[test]
    fn anything_else_is_not_a_sandbox_url() {
        for path in [
            "/sandboxes/",
            "/sandboxes/abc",
            "/sandboxes/abc/",
            "/sandboxes//tok/x",
            "/api/sandboxes/abc/tok",
            "/sandboxesabc/tok",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }
}
