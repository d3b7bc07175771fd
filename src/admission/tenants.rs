//! Tenants: who may call the API, by the SHA-256 digest of their key (the file never holds a
//! key), and the limits each has. Parsed from PROVISIONER_TENANTS at start and whenever the
//! file changes; pure apart from reading the file.

use std::{collections::HashSet, sync::Arc};

use ring::digest::{digest, SHA256};
use serde::Deserialize;

use crate::sandbox::{is_dns_label, parse_quantity, NOT_A_DNS_LABEL};

/// The tenant of a deployment without PROVISIONER_TENANTS (and of sandboxes made before
/// tenants existed).
pub const DEFAULT_TENANT: &str = "default";

/// What a tenant may use; unset: no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    pub max_sandboxes: Option<usize>,
    pub max_sandboxes_per_user: Option<usize>,
    /// Sum of the sandboxes' CPU limits, in cores.
    pub max_cpu: Option<Quantity>,
    /// Sum of the sandboxes' memory limits, in bytes.
    pub max_memory: Option<Quantity>,
    pub max_creates_per_minute: Option<usize>,
}

impl Limits {
    /// Whether a limit needs the tenant's sandboxes counted (all but the rate do).
    pub fn counts_sandboxes(&self) -> bool {
        self.max_sandboxes.is_some()
            || self.max_sandboxes_per_user.is_some()
            || self.max_cpu.is_some()
            || self.max_memory.is_some()
    }
}

/// A quantity as written (for messages) and its value (cores or bytes).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub text: String,
    pub value: f64,
}

/// One tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub name: String,
    digest: [u8; 32],
    pub limits: Limits,
    /// Sizes it may choose (None: all).
    pub sizes: Option<Vec<String>>,
    /// Clusters it may use (None: all).
    pub clusters: Option<Vec<String>>,
}

impl Tenant {
    /// A tenant without limits: the one of PROVISIONER_API_KEY, or of an open API.
    pub fn unlimited(name: &str, key: Option<&str>) -> Tenant {
        Tenant {
            name: name.into(),
            digest: key.map(|k| sha256(k.as_bytes())).unwrap_or([0; 32]),
            limits: Limits::default(),
            sizes: None,
            clusters: None,
        }
    }
}

/// Who a request is.
#[derive(Debug, Clone)]
pub enum Caller {
    Tenant(Arc<Tenant>),
    /// The admin key: every tenant's sandboxes, no quota of its own.
    Admin,
}

/// Every tenant and the admin key's digest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenants {
    pub tenants: Vec<Arc<Tenant>>,
    admin: Option<[u8; 32]>,
}

impl Tenants {
    /// The single tenant `default` of PROVISIONER_API_KEY.
    pub fn single(key: &str) -> Tenants {
        Tenants {
            tenants: vec![Arc::new(Tenant::unlimited(DEFAULT_TENANT, Some(key)))],
            admin: None,
        }
    }

    /// The one keyless tenant `default` of an open API.
    pub fn anyone() -> Tenants {
        Tenants {
            tenants: vec![Arc::new(Tenant::unlimited(DEFAULT_TENANT, None))],
            admin: None,
        }
    }

    /// The caller whose key this is. Every digest is compared, each in constant time, so
    /// that the answer takes as long whichever tenant (if any) the key belongs to.
    pub fn identify(&self, presented: &[u8]) -> Option<Caller> {
        let candidate = sha256(presented);
        let mut found = None;
        for tenant in &self.tenants {
            if same(&tenant.digest, &candidate) {
                found = Some(Caller::Tenant(tenant.clone()));
            }
        }
        if self.admin.is_some_and(|admin| same(&admin, &candidate)) {
            found = Some(Caller::Admin);
        }
        found
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tenant>> {
        self.tenants.iter().find(|t| t.name == name)
    }

    pub fn has_admin(&self) -> bool {
        self.admin.is_some()
    }
}

fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The lowercase hex SHA-256 of a key, as `hash-key` prints it and the file holds it.
pub fn hex_digest(key: &str) -> String {
    sha256(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantFile {
    #[serde(default)]
    admin_key_sha256: Option<String>,
    tenants: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    api_key_sha256: String,
    #[serde(default)]
    max_sandboxes: Option<usize>,
    #[serde(default)]
    max_sandboxes_per_user: Option<usize>,
    #[serde(default)]
    max_cpu: Option<QuantityText>,
    #[serde(default)]
    max_memory: Option<QuantityText>,
    #[serde(default)]
    max_creates_per_minute: Option<usize>,
    #[serde(default)]
    sizes: Option<Vec<String>>,
    #[serde(default)]
    clusters: Option<Vec<String>>,
}

/// A quantity written as a string (`"16Gi"`) or a number (`8`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum QuantityText {
    Text(String),
    Number(f64),
}

/// What a tenant file must agree with: the sizes and clusters that exist.
pub struct Known<'a> {
    pub sizes: Vec<&'a str>,
    pub clusters: Vec<&'a str>,
}

/// Parses and checks a tenant file; the error names the entry and the fix.
pub fn parse(text: &str, known: &Known) -> Result<Tenants, String> {
    let file: TenantFile = serde_saphyr::from_str(text).map_err(|e| {
        format!(
            "is not a valid tenant list ({e}); it holds `tenants:` (each with name, \
            api_key_sha256 and optionally max_sandboxes, max_sandboxes_per_user, max_cpu, \
            max_memory, max_creates_per_minute, sizes, clusters) and optionally admin_key_sha256"
        )
    })?;
    if file.tenants.is_empty() {
        return Err("lists no tenant: add at least one under `tenants`".into());
    }
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    let admin = match &file.admin_key_sha256 {
        Some(hex) => {
            let digest = parse_digest(hex).map_err(|e| format!("admin_key_sha256 {e}"))?;
            digests.insert(digest);
            Some(digest)
        }
        None => None,
    };
    let mut tenants = Vec::new();
    for (i, entry) in file.tenants.into_iter().enumerate() {
        let at = |problem: String| format!("tenants[{i}] ({:?}): {problem}", entry.name);
        if !is_dns_label(&entry.name) {
            return Err(at(NOT_A_DNS_LABEL.into()));
        }
        if !names.insert(entry.name.clone()) {
            return Err(at("name is used by an earlier entry".into()));
        }
        let digest =
            parse_digest(&entry.api_key_sha256).map_err(|e| at(format!("api_key_sha256 {e}")))?;
        if !digests.insert(digest) {
            return Err(at(
                "api_key_sha256 is the digest of a key another entry (or the admin) \
                has: every tenant needs its own key"
                    .into(),
            ));
        }
        let quantity =
            |field: &str, value: Option<QuantityText>| -> Result<Option<Quantity>, String> {
                let Some(value) = value else { return Ok(None) };
                let text = match value {
                    QuantityText::Text(t) => t,
                    QuantityText::Number(n) => n.to_string(),
                };
                match parse_quantity(&text) {
                    Some(value) => Ok(Some(Quantity { text, value })),
                    None => Err(at(format!(
                        "{field} {text:?} is not a Kubernetes quantity (for \
                    example \"8\", \"500m\", \"16Gi\")"
                    ))),
                }
            };
        let limits = Limits {
            max_sandboxes: entry.max_sandboxes,
            max_sandboxes_per_user: entry.max_sandboxes_per_user,
            max_cpu: quantity("max_cpu", entry.max_cpu)?,
            max_memory: quantity("max_memory", entry.max_memory)?,
            max_creates_per_minute: entry.max_creates_per_minute,
        };
        for (field, chosen, known) in [
            ("sizes", &entry.sizes, &known.sizes),
            ("clusters", &entry.clusters, &known.clusters),
        ] {
            for name in chosen.iter().flatten() {
                if !known.contains(&name.as_str()) {
                    return Err(at(format!(
                        "{field} names {name:?}, which does not exist; known: {known:?}"
                    )));
                }
            }
        }
        tenants.push(Arc::new(Tenant {
            name: entry.name,
            digest,
            limits,
            sizes: entry.sizes,
            clusters: entry.clusters,
        }));
    }
    Ok(Tenants { tenants, admin })
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{hex:?} must be 64 hex digits: the SHA-256 of the key, as \
            `sandbox-provisioner hash-key` prints it (never the key itself)"
        ));
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known<'static> {
        Known {
            sizes: vec!["default", "small"],
            clusters: vec!["default"],
        }
    }

    #[test]
    fn digests_identify_tenants_and_the_admin() {
        let text = format!(
            "admin_key_sha256: {}\ntenants:\n  - \
                {{name: team-a, api_key_sha256: {}, max_sandboxes: 3, max_cpu: 8, max_memory: \
                16Gi}}\n  - {{name: team-b, api_key_sha256: {}, sizes: [small]}}\n",
            hex_digest("admin-key-0123456789"),
            hex_digest("key-a-0123456789"),
            hex_digest("key-b-0123456789").to_uppercase(),
        );
        let tenants = parse(&text, &known()).unwrap();
        assert!(tenants.has_admin());
        match tenants.identify(b"key-a-0123456789") {
            Some(Caller::Tenant(t)) => {
                assert_eq!(t.name, "team-a");
                assert_eq!(t.limits.max_sandboxes, Some(3));
                assert_eq!(t.limits.max_cpu.as_ref().unwrap().value, 8.0);
                assert_eq!(
                    t.limits.max_memory.as_ref().unwrap().value,
                    16.0 * 1024.0 * 1024.0 * 1024.0
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(tenants.identify(b"key-b-0123456789"),
                Some(Caller::Tenant(t)) if t.sizes == Some(vec!["small".into()])));
        assert!(matches!(
            tenants.identify(b"admin-key-0123456789"),
            Some(Caller::Admin)
        ));
        assert!(tenants.identify(b"key-c-0123456789").is_none());
        assert!(tenants.identify(b"").is_none());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../deploy/examples/tenants.yaml");
        let tenants = parse(text, &known()).unwrap();
        assert!(tenants.has_admin());
        let a = tenants.get("team-a").unwrap();
        assert_eq!(a.limits.max_sandboxes, Some(20));
        assert_eq!(a.limits.max_memory.as_ref().unwrap().text, "32Gi");
        assert_eq!(tenants.get("team-b").unwrap().limits.max_sandboxes, Some(5));
    }

    #[test]
    fn hash_key_is_sha256_hex() {
        // printf test | sha256sum
        assert_eq!(
            hex_digest("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn mistakes_name_the_entry_and_the_fix() {
        let d = hex_digest("key-a-0123456789");
        for (text, expected) in [
            ("tenants: []".to_string(), "lists no tenant".to_string()),
            (
                format!("tenants: [{{name: A, api_key_sha256: {d}}}]"),
                "tenants[0] (\"A\"): name must be a DNS label".into(),
            ),
            (
                "tenants: [{name: a, api_key_sha256: secret}]".into(),
                "must be 64 hex digits".into(),
            ),
            (
                format!(
                    "tenants: [{{name: a, api_key_sha256: {d}}}, {{name: a, api_key_sha256: {d}}}]"
                ),
                "tenants[1] (\"a\"): name is used".into(),
            ),
            (
                format!(
                    "tenants: [{{name: a, api_key_sha256: {d}}}, {{name: b, api_key_sha256: {d}}}]"
                ),
                "tenants[1] (\"b\"): api_key_sha256 is the digest of a key another".into(),
            ),
            (
                format!("admin_key_sha256: {d}\ntenants: [{{name: a, api_key_sha256: {d}}}]"),
                "another entry (or the admin)".into(),
            ),
            (
                format!("tenants: [{{name: a, api_key_sha256: {d}, max_memory: lots}}]"),
                "max_memory \"lots\" is not a Kubernetes quantity".into(),
            ),
            (
                format!("tenants: [{{name: a, api_key_sha256: {d}, sizes: [huge]}}]"),
                "sizes names \"huge\", which does not exist; known: [\"default\", \"small\"]"
                    .into(),
            ),
            (
                format!("tenants: [{{name: a, api_key_sha256: {d}, clusters: [eu]}}]"),
                "clusters names \"eu\"".into(),
            ),
            (
                format!("tenants: [{{name: a, api_key_sha256: {d}, max_sandbox: 3}}]"),
                "max_sandbox".into(),
            ),
        ] {
            let error = parse(&text, &known()).expect_err(&text);
            assert!(error.contains(&expected), "{text}: {error}");
        }
    }
}
