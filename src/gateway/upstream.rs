//! The upstream side: hyper's pooled client, connections named by Pod UID, and the headers a
//! proxied request and its answer carry.
//!
//! The client pools connections by the URI's authority. Each Pod gets its own authority,
//! `{uid}.ip4-a-b-c-d` (or `ip6-...`), which a resolver turns back into the Pod's address
//! without any lookup: connections are pooled per Pod, never by IP alone, so a recycled IP can
//! never hand one sandbox's pooled connection to another's Pod.

use std::{
    future::{ready, Ready},
    net::{IpAddr, SocketAddr},
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, http::HeaderValue};
use http::{header, HeaderMap, HeaderName};
use hyper_util::{
    client::legacy::{
        connect::{dns::Name, HttpConnector},
        Client,
    },
    rt::TokioExecutor,
};

/// The client every proxied request goes through.
pub type UpstreamClient = Client<HttpConnector<PodAddresses>, Body>;

/// Bound of a connection attempt to a Pod (a Pod that is gone does not answer at all).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle pooled connections kept per Pod.
const IDLE_PER_POD: usize = 32;

pub fn client() -> UpstreamClient {
    let mut connector = HttpConnector::new_with_resolver(PodAddresses);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    // Requests whose pooled connection closed before they were written are retried (the
    // client's default): those were provably never sent. Nothing else is.
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(IDLE_PER_POD)
        .build(connector)
}

/// The authority the client pools one Pod's connections under.
pub fn pod_authority(uid: &str, ip: IpAddr, port: u16) -> String {
    let address = match ip {
        IpAddr::V4(v4) => format!("ip4-{}", v4.to_string().replace('.', "-")),
        IpAddr::V6(v6) => format!("ip6-{}", v6.to_string().replace(':', "-")),
    };
    format!("{uid}.{address}:{port}")
}

/// The address inside a Pod authority's host.
fn address_of(host: &str) -> Option<IpAddr> {
    let (_, address) = host.split_once('.')?;
    if let Some(v4) = address.strip_prefix("ip4-") {
        return v4.replace('-', ".").parse().ok();
    }
    address.strip_prefix("ip6-")?.replace('-', ":").parse().ok()
}

/// Resolves Pod authorities to their address, with no lookup; any other name fails.
#[derive(Clone, Copy, Debug)]
pub struct PodAddresses;

impl tower_service::Service<Name> for PodAddresses {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        ready(match address_of(name.as_str()) {
            // The connector puts the URI's port on it.
            Some(ip) => Ok(vec![SocketAddr::new(ip, 0)].into_iter()),
            None => Err(std::io::Error::other(format!(
                "{name} is not a sandbox Pod's address"
            ))),
        })
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Whether a request asks to switch protocols (a WebSocket handshake).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_names(headers).any(|n| n == "upgrade")
}

/// The header names listed in `Connection`, lowercased.
fn connection_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// Removes hop-by-hop headers and those `Connection` names; an upgrade keeps (only) its
/// `Upgrade` header and `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let upgrade = is_upgrade(headers)
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    let named: Vec<String> = connection_names(headers).collect();
    for name in named {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// What the gateway tells a sandbox about the original request.
pub struct Forwarded<'a> {
    /// The caller's address (absent when not served from a socket).
    pub client: Option<IpAddr>,
    /// The scheme of PROVISIONER_PUBLIC_URL.
    pub proto: &'a str,
    /// The stripped `/sandboxes/{id}/{token}`.
    pub prefix: &'a str,
    /// `ip:port` of the Pod.
    pub host: &'a str,
    /// The sandbox's own key (SANDBOX_UPSTREAM_KEY=per-sandbox).
    pub key: Option<&'a str>,
}

/// The headers of a request as the sandbox receives them.
pub fn rewrite_request_headers(headers: &mut HeaderMap, forwarded: &Forwarded<'_>) {
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some(client) = forwarded.client {
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {client}"),
            _ => client.to_string(),
        };
        set(headers, "x-forwarded-for", &chain);
    }
    set(headers, "x-forwarded-proto", forwarded.proto);
    match original_host {
        Some(host) => {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
    set(headers, "x-forwarded-prefix", forwarded.prefix);
    set(headers, "host", forwarded.host);
    if let Some(key) = forwarded.key {
        set(headers, "x-aio-api-key", key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn pod_authorities_resolve_to_their_address_only() {
        let uid = "0c6f2f51-7e1d-4a0b-9d5e-8f1a2b3c4d5e";
        let v4 = pod_authority(uid, "198.19.0.7".parse().unwrap(), 8080);
        assert_eq!(v4, format!("{uid}.ip4-198-19-0-7:8080"));
        let uri: http::Uri = format!("http://{v4}/v1").parse().unwrap();
        assert_eq!(
            address_of(uri.host().unwrap()),
            Some("198.19.0.7".parse().unwrap())
        );
        let v6 = pod_authority(uid, "fd00::1:7".parse().unwrap(), 8080);
        let uri: http::Uri = format!("http://{v6}/v1").parse().unwrap();
        assert_eq!(
            address_of(uri.host().unwrap()),
            Some("fd00::1:7".parse().unwrap())
        );
        // The same address under two Pods is two authorities: two pools.
        assert_ne!(
            pod_authority("a", "10.0.0.1".parse().unwrap(), 1),
            pod_authority("b", "10.0.0.1".parse().unwrap(), 1)
        );
        for host in [
            "example.com",
            "uid.ip4-1-2-3",
            "uid.ip9-1-2-3-4",
            "localhost",
        ] {
            assert_eq!(address_of(host), None, "{host}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("upgrade", "h2c"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn an_upgrade_keeps_its_upgrade_headers() {
        let mut h = headers(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        assert!(!h.contains_key("x-secret"));
    }

    #[test]
    fn forwarded_headers_are_set_and_host_replaced() {
        let mut h = headers(&[
            ("host", "provisioner:8002"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-prefix", "/forged"),
            ("x-aio-api-key", "client-chosen"),
        ]);
        rewrite_request_headers(
            &mut h,
            &Forwarded {
                client: Some("10.0.0.2".parse().unwrap()),
                proto: "https",
                prefix: "/sandboxes/a/t",
                host: "198.19.0.7:8080",
                key: Some("k"),
            },
        );
        assert_eq!(h["host"], "198.19.0.7:8080");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "provisioner:8002");
        assert_eq!(h["x-forwarded-prefix"], "/sandboxes/a/t");
        assert_eq!(h["x-aio-api-key"], "k");
    }
}
