//! Resource sizes: named sets of requests and limits that operators define, and the checks a
//! caller's choice goes through (known size, parsable quantities, requests within limits,
//! limits within the operator's maxima).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The resources a sandbox may set.
pub const RESOURCE_NAMES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Requests and limits, as Kubernetes quantities (`100m`, `1`, `256Mi`, `1Gi`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
// For the schema only (reading is below): both optional, nothing else allowed.
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: BTreeMap<String, String>,
}

impl<'de> Deserialize<'de> for Resources {
    /// Only from an object: serde's derived form would also take an array (`[]` or
    /// `[{...}, {...}]`), which the API's schema does not allow.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            requests: BTreeMap<String, String>,
            #[serde(default)]
            limits: BTreeMap<String, String>,
        }
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with \"requests\" and/or \"limits\"")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
                Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        let Fields { requests, limits } = deserializer.deserialize_map(ObjectOnly)?;
        Ok(Resources { requests, limits })
    }
}

/// Why a choice of resources was refused; the text names the value and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResources {
    #[error("unknown size {name:?}; the known sizes are: {known}")]
    UnknownSize { name: String, known: String },
    #[error("unknown resource {0:?}; a sandbox may set cpu, memory and ephemeral-storage")]
    UnknownResource(String),
    #[error("{field} {value:?} is not a Kubernetes quantity (for example 500m, 2, 256Mi, 1Gi)")]
    BadQuantity { field: String, value: String },
    #[error("{field} {value} is above the operator's maximum of {max} (SANDBOX_MAX_RESOURCES)")]
    AboveMaximum {
        field: String,
        value: String,
        max: String,
    },
    #[error("requests.{name} {request} is above limits.{name} {limit}")]
    RequestAboveLimit {
        name: String,
        request: String,
        limit: String,
    },
}

/// Parses a Kubernetes quantity into a plain number (cores for cpu, bytes otherwise).
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0_f64.powi(2),
        "Gi" => 1024.0_f64.powi(3),
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        _ => return None,
    };
    (value.is_finite() && value >= 0.0).then_some(value * factor)
}

/// Why a deployment's sizes are unusable, by the setting that is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSizes {
    /// SANDBOX_DEFAULT_SIZE names no size.
    #[error("the default size {name:?} is not among the sizes ({known})")]
    UnknownDefault { name: String, known: String },
    /// SANDBOX_MAX_RESOURCES is wrong.
    #[error("{0}")]
    Maximum(String),
    /// One of SANDBOX_SIZES is wrong.
    #[error("size {name:?}: {error}")]
    Size {
        name: String,
        error: InvalidResources,
    },
}

/// The sizes of a deployment and its ceiling.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Sizes {
    /// Named sizes callers may choose with `"size"`.
    pub sizes: BTreeMap<String, Resources>,
    /// The size used when a request names none.
    pub default_size: String,
    /// No request or limit may exceed these.
    pub max_resources: BTreeMap<String, String>,
}

impl Sizes {
    /// DeerFlow's resources: requests cpu 100m / memory 256Mi / ephemeral-storage 500Mi, limits
    /// cpu 1000m / memory 1Gi / ephemeral-storage 500Mi.
    pub fn deerflow_default() -> Resources {
        let map = |pairs: [(&str, &str); 3]| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Resources {
            requests: map([
                ("cpu", "100m"),
                ("memory", "256Mi"),
                ("ephemeral-storage", "500Mi"),
            ]),
            limits: map([
                ("cpu", "1000m"),
                ("memory", "1Gi"),
                ("ephemeral-storage", "500Mi"),
            ]),
        }
    }

    /// Checks the operator's sizes against the maxima; the error says which setting is wrong.
    /// The names callers may choose.
    pub fn names(&self) -> Vec<String> {
        self.sizes.keys().cloned().collect()
    }

    pub fn validate(&self) -> Result<(), InvalidSizes> {
        if !self.sizes.contains_key(&self.default_size) {
            return Err(InvalidSizes::UnknownDefault {
                name: self.default_size.clone(),
                known: self.known(),
            });
        }
        for (name, value) in &self.max_resources {
            check_name(name).map_err(|e| InvalidSizes::Maximum(e.to_string()))?;
            if parse_quantity(value).is_none() {
                return Err(InvalidSizes::Maximum(format!(
                    "max {name} {value:?} is not a Kubernetes quantity"
                )));
            }
        }
        for (name, resources) in &self.sizes {
            self.check(resources).map_err(|error| InvalidSizes::Size {
                name: name.clone(),
                error,
            })?;
        }
        Ok(())
    }

    fn known(&self) -> String {
        self.sizes.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The resources for a request: the named (or default) size, with explicit values laid
    /// over it, checked. Explicit values above the maxima are refused, not clamped.
    pub fn choose(
        &self,
        size: Option<&str>,
        explicit: Option<&Resources>,
    ) -> Result<Resources, InvalidResources> {
        let name = size.unwrap_or(&self.default_size);
        let mut chosen =
            self.sizes
                .get(name)
                .cloned()
                .ok_or_else(|| InvalidResources::UnknownSize {
                    name: name.to_string(),
                    known: self.known(),
                })?;
        if let Some(explicit) = explicit {
            chosen.requests.extend(explicit.requests.clone());
            chosen.limits.extend(explicit.limits.clone());
        }
        self.check(&chosen)?;
        Ok(chosen)
    }

    fn check(&self, r: &Resources) -> Result<(), InvalidResources> {
        for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, value) in map {
                check_name(name)?;
                let field = format!("{kind}.{name}");
                let amount =
                    parse_quantity(value).ok_or_else(|| InvalidResources::BadQuantity {
                        field: field.clone(),
                        value: value.clone(),
                    })?;
                if let Some(max) = self.max_resources.get(name) {
                    if parse_quantity(max).is_some_and(|m| amount > m) {
                        return Err(InvalidResources::AboveMaximum {
                            field,
                            value: value.clone(),
                            max: max.clone(),
                        });
                    }
                }
            }
        }
        for (name, request) in &r.requests {
            if let Some(limit) = r.limits.get(name) {
                if parse_quantity(request) > parse_quantity(limit) {
                    return Err(InvalidResources::RequestAboveLimit {
                        name: name.clone(),
                        request: request.clone(),
                        limit: limit.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), InvalidResources> {
    if RESOURCE_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(InvalidResources::UnknownResource(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_read_only_from_an_object() {
        let parsed: Resources =
            serde_json::from_str(r#"{"limits": {"cpu": "1"}}"#).expect("an object");
        assert_eq!(parsed.limits["cpu"], "1");
        assert!(parsed.requests.is_empty());
        assert_eq!(
            serde_json::from_str::<Resources>("{}").unwrap(),
            Resources::default()
        );
        for bad in [
            "[]",
            r#"[{}, {}]"#,
            r#"{"limit": {}}"#,
            r#"{"limits": []}"#,
            r#""cpu""#,
        ] {
            let err = serde_json::from_str::<Resources>(bad).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad}");
        }
        let err = serde_json::from_str::<Resources>("[]").unwrap_err();
        assert!(err.to_string().contains("an object"), "{err}");
    }

    fn sizes() -> Sizes {
        let mut named = BTreeMap::new();
        named.insert("default".to_string(), Sizes::deerflow_default());
        let mut large = Sizes::deerflow_default();
        large.limits.insert("cpu".into(), "4".into());
        named.insert("large".to_string(), large);
        Sizes {
            sizes: named,
            default_size: "default".into(),
            max_resources: [("cpu", "4"), ("memory", "8Gi")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("256Mi"), Some(256.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        for bad in ["", "abc", "1x", "-1", "1 Gi", "Mi"] {
            assert_eq!(parse_quantity(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn choose_sizes_and_overrides() {
        let s = sizes();
        assert!(s.validate().is_ok());
        assert_eq!(s.choose(None, None).unwrap(), Sizes::deerflow_default());
        assert_eq!(s.choose(Some("large"), None).unwrap().limits["cpu"], "4");
        let explicit = Resources {
            limits: [("memory".to_string(), "2Gi".to_string())].into(),
            ..Default::default()
        };
        let chosen = s.choose(None, Some(&explicit)).unwrap();
        assert_eq!(chosen.limits["memory"], "2Gi");
        assert_eq!(chosen.requests["cpu"], "100m");
    }

    #[test]
    fn refusals_name_the_rule() {
        let s = sizes();
        let e = s.choose(Some("huge"), None).unwrap_err().to_string();
        assert!(e.contains("huge") && e.contains("default, large"), "{e}");
        let over = Resources {
            limits: [("cpu".to_string(), "8".to_string())].into(),
            ..Default::default()
        };
        let e = s.choose(None, Some(&over)).unwrap_err().to_string();
        assert!(
            e.contains("limits.cpu") && e.contains("maximum of 4"),
            "{e}"
        );
        let inverted = Resources {
            requests: [("memory".to_string(), "2Gi".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(
            s.choose(None, Some(&inverted)),
            Err(InvalidResources::RequestAboveLimit { .. })
        ));
        let gpu = Resources {
            limits: [("nvidia.com/gpu".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(
            s.choose(None, Some(&gpu)),
            Err(InvalidResources::UnknownResource(_))
        ));
        let bad = Resources {
            limits: [("cpu".to_string(), "lots".to_string())].into(),
            ..Default::default()
        };
        assert!(matches!(
            s.choose(None, Some(&bad)),
            Err(InvalidResources::BadQuantity { .. })
        ));
    }

    #[test]
    fn operator_sizes_are_validated() {
        let mut s = sizes();
        s.default_size = "medium".into();
        assert!(s.validate().unwrap_err().to_string().contains("medium"));
        let mut s = sizes();
        s.sizes
            .get_mut("large")
            .unwrap()
            .limits
            .insert("memory".into(), "16Gi".into());
        assert!(
            matches!(s.validate().unwrap_err(), InvalidSizes::Size { name, .. } if name == "large")
        );
    }
}
