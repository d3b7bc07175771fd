//! Sandbox URLs through the gateway, and the capability tokens in them.
//!
//! In gateway mode a sandbox's URL is `{PROVISIONER_PUBLIC_URL}/sandboxes/{id}/{token}`. The
//! token is the whole right to use that one sandbox (DeerFlow sends no header to it): an
//! HMAC-SHA256 over the tenant, the sandbox id and the sandbox's creation time, keyed by the
//! gateway secret that every replica shares. A deleted and re-created id has a new creation
//! time, and so a new URL; the old one stops working. The token starts with the id of the key
//! that made it, so that a rotated secret keeps the URLs made with the previous one working
//! while both are configured.

use std::fmt;

use ring::{
    digest::{digest, SHA256},
    hmac,
};

/// Where the backend reaches sandboxes.
#[derive(Debug, Clone, Default)]
pub enum SandboxUrls {
    /// Through the sandbox's Service: a node port or a cluster DNS name (DeerFlow's URLs).
    #[default]
    Direct,
    /// Through the provisioner's gateway.
    Gateway(std::sync::Arc<GatewayUrls>),
}

/// How the gateway reaches a cluster's sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// The Pod's IP: the gateway runs on (or is routed into) the cluster's pod network.
    #[default]
    PodIp,
    /// The apiserver's service proxy, for a cluster whose pod network the gateway cannot reach.
    ApiServer,
}

impl Reach {
    pub fn parse(value: &str) -> Option<Reach> {
        match value {
            "pod-ip" => Some(Reach::PodIp),
            "apiserver" => Some(Reach::ApiServer),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reach::PodIp => "pod-ip",
            Reach::ApiServer => "apiserver",
        }
    }
}

/// The gateway's public address and its keys.
#[derive(Debug)]
pub struct GatewayUrls {
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub public_url: String,
    pub keys: GatewayKeys,
}

impl GatewayUrls {
    /// The sandbox's URL: no trailing slash and no query, since DeerFlow's client joins
    /// `/v1/...` onto it.
    pub fn url(&self, tenant: &str, id: &str, created: &str) -> String {
        format!(
            "{}/sandboxes/{id}/{}",
            self.public_url,
            self.keys.mint(tenant, id, created)
        )
    }
}

/// One gateway secret.
struct Key {
    /// The first 4 bytes of the secret's SHA-256, in hex: names the key in its tokens without
    /// saying anything about it.
    id: String,
    mac: hmac::Key,
    /// A second key derived from the same secret: each sandbox's upstream key.
    upstream: hmac::Key,
}

impl Key {
    fn new(secret: &[u8]) -> Key {
        let id = hex(&digest(&SHA256, secret).as_ref()[..4]);
        Key {
            id,
            mac: hmac::Key::new(hmac::HMAC_SHA256, secret),
            upstream: hmac::Key::new(
                hmac::HMAC_SHA256,
                hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, secret),
                    b"sandbox-provisioner upstream key",
                )
                .as_ref(),
            ),
        }
    }
}

/// The secret URLs are made with, and the previous one during a rotation.
pub struct GatewayKeys {
    current: Key,
    previous: Option<Key>,
}

impl fmt::Debug for GatewayKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayKeys")
            .field("current", &self.current.id)
            .field("previous", &self.previous.as_ref().map(|k| &k.id))
            .finish()
    }
}

/// Hex digits of a token's key id, and of its MAC.
const KEY_ID_LEN: usize = 8;
const MAC_LEN: usize = 64;

impl GatewayKeys {
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> GatewayKeys {
        GatewayKeys {
            current: Key::new(current),
            previous: previous.map(Key::new),
        }
    }

    /// The id of the key new URLs are made with.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// The token of one sandbox: `{key id}-{HMAC-SHA256 in hex}` (73 characters).
    pub fn mint(&self, tenant: &str, id: &str, created: &str) -> String {
        let tag = hmac::sign(&self.current.mac, &message(tenant, id, created));
        format!("{}-{}", self.current.id, hex(tag.as_ref()))
    }

    /// Whether `token` was made for this sandbox by a configured key (compared in constant
    /// time).
    pub fn check(&self, token: &str, tenant: &str, id: &str, created: &str) -> bool {
        let Some((key_id, mac)) = token.split_once('-') else {
            return false;
        };
        if key_id.len() != KEY_ID_LEN || mac.len() != MAC_LEN {
            return false;
        }
        let Some(tag) = unhex(mac) else {
            return false;
        };
        let message = message(tenant, id, created);
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .filter(|k| k.id == key_id)
            .any(|k| hmac::verify(&k.mac, &message, &tag).is_ok())
    }

    /// The key a sandbox's own API demands (SANDBOX_UPSTREAM_KEY=per-sandbox): derived from the
    /// current secret and the sandbox's identity, so that it needs no stored copy.
    pub fn upstream_key(&self, tenant: &str, id: &str, created: &str) -> String {
        hex(hmac::sign(&self.current.upstream, &message(tenant, id, created)).as_ref())
    }
}

/// What a token signs. Ids and tenants never hold a newline.
fn message(tenant: &str, id: &str, created: &str) -> Vec<u8> {
    format!("sandbox-provisioner gateway v1\n{tenant}\n{id}\n{created}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            let pair = text.get(i..i + 2)?;
            if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn a_token_opens_its_own_sandbox_only() {
        let keys = GatewayKeys::new(SECRET, None);
        let token = keys.mint("acme", "abc-123", "2026-01-01T00:00:00Z");
        assert_eq!(token.len(), KEY_ID_LEN + 1 + MAC_LEN, "{token}");
        assert!(token.starts_with(keys.current_id()));
        assert!(keys.check(&token, "acme", "abc-123", "2026-01-01T00:00:00Z"));
        assert!(!keys.check(&token, "other", "abc-123", "2026-01-01T00:00:00Z"));
        assert!(!keys.check(&token, "acme", "abc-124", "2026-01-01T00:00:00Z"));
        // The same id created again.
        assert!(!keys.check(&token, "acme", "abc-123", "2026-01-01T00:00:01Z"));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(!keys.check(&flipped, "acme", "abc-123", "2026-01-01T00:00:00Z"));
        for broken in [
            "",
            "-",
            &token[..20],
            &token[KEY_ID_LEN + 1..],
            &token.to_uppercase(),
        ] {
            assert!(
                !keys.check(broken, "acme", "abc-123", "2026-01-01T00:00:00Z"),
                "{broken}"
            );
        }
    }

    #[test]
    fn the_previous_secret_is_accepted_during_a_rotation() {
        let old = GatewayKeys::new(OTHER, None);
        let token = old.mint("t", "s", "c");
        let rotating = GatewayKeys::new(SECRET, Some(OTHER));
        assert!(rotating.check(&token, "t", "s", "c"));
        assert_ne!(
            rotating.mint("t", "s", "c"),
            token,
            "new URLs use the new secret"
        );
        let rotated = GatewayKeys::new(SECRET, None);
        assert!(!rotated.check(&token, "t", "s", "c"));
        // A token naming the current key's id but made with another secret fails too.
        let forged = format!("{}{}", rotated.current_id(), &token[KEY_ID_LEN..]);
        assert!(!rotated.check(&forged, "t", "s", "c"));
    }

    #[test]
    fn urls_have_no_trailing_slash_or_query_and_keys_do_not_show() {
        let urls = GatewayUrls {
            public_url: "http://provisioner:8002".into(),
            keys: GatewayKeys::new(SECRET, None),
        };
        let url = urls.url("t", "abc", "c");
        assert!(url.starts_with("http://provisioner:8002/sandboxes/abc/"));
        assert!(!url.ends_with('/') && !url.contains('?'));
        let shown = format!("{urls:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        let upstream = urls.keys.upstream_key("t", "abc", "c");
        assert_eq!(upstream.len(), 64);
        assert_ne!(upstream, url.rsplit('-').next().unwrap());
    }
}
