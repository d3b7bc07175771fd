//! `SANDBOX_CLUSTERS`: the clusters the service places sandboxes in, from a YAML (or JSON)
//! file. Every entry is checked at start; a problem names the entry and the fix. Without the
//! file there is one cluster, `default`, from the single-cluster variables.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{check, ConfigError, Connection};
use crate::{
    sandbox::{is_dns_label, DEFAULT_CLUSTER, NOT_A_DNS_LABEL},
    spec::{Exposure, Placement, SandboxSpec},
};

/// One cluster as the service uses it: how to reach it, what its sandboxes look like, and
/// what placement knows about it.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub connection: Connection,
    pub sandbox: SandboxSpec,
    /// Share of new sandboxes; 0 drains the cluster (no new sandboxes, existing ones served).
    pub weight: u32,
    /// Most sandboxes placed in this cluster; unlimited when unset.
    pub max_sandboxes: Option<usize>,
    /// For requests that select clusters by label (e.g. `region: eu`).
    pub labels: BTreeMap<String, String>,
}

const VARIABLE: &str = "SANDBOX_CLUSTERS";

/// The file's shape; unknown fields are refused so that a typo stops the start.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    clusters: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    kubeconfig: PathBuf,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    api_server: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    node_host: Option<String>,
    #[serde(default)]
    service_type: Option<String>,
    /// How the gateway reaches this cluster's sandboxes: pod-ip or apiserver.
    #[serde(default)]
    reach: Option<String>,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    max_sandboxes: Option<usize>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    placement: Option<Placement>,
    #[serde(default)]
    pod_template: Option<PathBuf>,
    /// This cluster's pools (SANDBOX_WARM_POOL's form); `{}` turns them off here.
    #[serde(default)]
    warm_pool: Option<super::pool::Targets>,
}

fn default_weight() -> u32 {
    1
}

/// The one cluster of a configuration without `SANDBOX_CLUSTERS`.
pub(super) fn single(cluster: &Connection, sandbox: &SandboxSpec) -> ClusterConfig {
    ClusterConfig {
        name: DEFAULT_CLUSTER.into(),
        connection: cluster.clone(),
        sandbox: sandbox.clone(),
        weight: 1,
        max_sandboxes: None,
        labels: BTreeMap::new(),
    }
}

/// Reads and checks the cluster file; the single-cluster settings are every entry's defaults.
pub(super) fn from_file(
    path: &Path,
    defaults: &Connection,
    sandbox: &SandboxSpec,
) -> Result<Vec<ClusterConfig>, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            VARIABLE,
            &shown,
            format!(
                "cannot read the cluster list: {e}; give the path of a YAML or JSON file with \
                a top-level `clusters` list"
            ),
        )
    })?;
    parse(&text, &shown, defaults, sandbox, &|p| {
        kube::config::Kubeconfig::read_from(p).map_err(|e| e.to_string())
    })
}

/// Parses and checks the file's text. Other files are read only through `read_kubeconfig`
/// and for the entries' pod templates.
fn parse(
    text: &str,
    shown: &str,
    defaults: &Connection,
    sandbox: &SandboxSpec,
    read_kubeconfig: &dyn Fn(&Path) -> Result<kube::config::Kubeconfig, String>,
) -> Result<Vec<ClusterConfig>, ConfigError> {
    let fail = |problem: String| ConfigError::new(VARIABLE, shown, problem);
    let file: ClusterFile = serde_saphyr::from_str(text).map_err(|e| {
        fail(format!(
            "is not a valid cluster list ({e}); each entry of `clusters` has name and kubeconfig, \
                and optionally context, api_server, namespace, node_host, service_type, weight, \
                max_sandboxes, labels, image, placement, pod_template, warm_pool"
        ))
    })?;
    if file.clusters.is_empty() {
        return Err(fail(
            "lists no cluster: add at least one entry under `clusters`, or unset \
            SANDBOX_CLUSTERS to use KUBECONFIG_PATH"
                .into(),
        ));
    }
    let mut names = HashSet::new();
    let mut members = Vec::new();
    for (i, entry) in file.clusters.into_iter().enumerate() {
        let at = |problem: String| fail(format!("clusters[{i}] ({:?}): {problem}", entry.name));
        if !is_dns_label(&entry.name) {
            return Err(at(NOT_A_DNS_LABEL.into()));
        }
        if !names.insert(entry.name.clone()) {
            return Err(at(
                "name is used by an earlier entry: every cluster needs its own name".into(),
            ));
        }
        let kubeconfig = read_kubeconfig(&entry.kubeconfig).map_err(|e| {
            at(format!(
                "cannot read the kubeconfig {}: {e}; check the path (mounted into the container?) \
                    and that `kubectl --kubeconfig {} config view` reads it",
                entry.kubeconfig.display(),
                entry.kubeconfig.display()
            ))
        })?;
        if let Some(context) = &entry.context {
            if !kubeconfig.contexts.iter().any(|c| &c.name == context) {
                let known: Vec<&str> = kubeconfig
                    .contexts
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(at(format!(
                    "context {context:?} is not in {}; it has {known:?}",
                    entry.kubeconfig.display()
                )));
            }
        }
        let api_server = match entry.api_server.as_deref().map(str::trim) {
            None | Some("") => defaults.api_server.clone(),
            Some(s) => Some(
                check::api_server_uri(s)
                    .map_err(|e| at(format!("api_server {s:?} {}", e.problem)))?,
            ),
        };
        let namespace = entry
            .namespace
            .clone()
            .unwrap_or_else(|| defaults.namespace.clone());
        check::validate_namespace(&namespace)
            .map_err(|e| at(format!("namespace {namespace:?} {}", e.problem)))?;
        if entry.max_sandboxes == Some(0) {
            return Err(at(
                "max_sandboxes must be at least 1 (set weight: 0 to stop new sandboxes \
                in a cluster)"
                    .into(),
            ));
        }
        for (key, value) in &entry.labels {
            if !is_label_part(key) || !(value.is_empty() || is_label_part(value)) {
                return Err(at(format!(
                    "label {key:?}: {value:?} must be 1-63 letters, digits, '-', '_' or '.' (the \
                        value may be empty)"
                )));
            }
        }
        let mut spec = sandbox.clone();
        spec.namespace = namespace.clone();
        if let Some(image) = entry.image.as_deref().map(str::trim) {
            if image.is_empty() || image.contains(char::is_whitespace) {
                return Err(at(format!(
                    "image {image:?} must name a container image, without spaces"
                )));
            }
            spec.image = image.to_string();
        }
        let node_host = match (&entry.node_host, &spec.exposure) {
            (Some(host), _) => Some(host.trim().to_string()),
            (None, Exposure::NodePort { node_host }) => Some(node_host.clone()),
            (None, Exposure::ClusterIp | Exposure::None) => None,
        };
        let service_type = entry
            .service_type
            .as_deref()
            .unwrap_or(spec.exposure.service_type());
        spec.exposure = match service_type {
            "NodePort" => {
                let host = node_host.unwrap_or_default();
                if host.is_empty() || host.contains(['/', ' ', '@']) {
                    return Err(at(format!(
                        "node_host {host:?} must be a bare host name or IP \
                        address (NodePort URLs are http://node_host:port)"
                    )));
                }
                Exposure::NodePort { node_host: host }
            }
            "ClusterIP" => Exposure::ClusterIp,
            "None" => Exposure::None,
            other => {
                return Err(at(format!(
                    "service_type {other:?} must be NodePort, ClusterIP or None (gateway mode \
                        only)"
                )))
            }
        };
        if let Some(reach) = entry.reach.as_deref() {
            spec.reach = crate::spec::Reach::parse(reach.trim())
                .ok_or_else(|| at(format!("reach {reach:?} must be pod-ip or apiserver")))?;
        }
        if let Some(placement) = entry.placement {
            spec.placement = placement;
        }
        if let Some(targets) = entry.warm_pool {
            spec.warm_pool.classes = super::pool::unresolved(targets);
        }
        if let Some(path) = &entry.pod_template {
            spec.pod_template = check::pod_template(Some(path))
                .map_err(|e| at(format!("pod_template {}: {e}", path.display())))?;
        }
        check::placement_and_template(&spec.placement, &spec.pod_template).map_err(at)?;
        members.push(ClusterConfig {
            connection: Connection {
                namespace,
                kubeconfig_path: entry.kubeconfig,
                context: entry.context,
                api_server,
                ..defaults.clone()
            },
            name: entry.name,
            sandbox: spec,
            weight: entry.weight,
            max_sandboxes: entry.max_sandboxes,
            labels: entry.labels,
        });
    }
    Ok(members)
}

/// A label key or value as Kubernetes spells them (without a key prefix).
fn is_label_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ServeArgs};
    use clap::Parser;

    fn base() -> Config {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Config::try_from(Cli::parse_from(["x"]).serve).unwrap()
    }

    fn kubeconfig(contexts: &[&str]) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig {
            contexts: contexts
                .iter()
                .map(|c| kube::config::NamedContext {
                    name: c.to_string(),
                    context: None,
                    other: Default::default(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn run(text: &str) -> Result<Vec<ClusterConfig>, String> {
        let c = base();
        parse(
            text,
            "/etc/clusters.yaml",
            &c.connection,
            &c.sandbox,
            &|p| {
                if p.starts_with("/missing") {
                    Err("No such file or directory".into())
                } else {
                    Ok(kubeconfig(&["a", "b"]))
                }
            },
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_entry_and_defaults() {
        let members = run(r#"
clusters:
  - name: eu-1
    kubeconfig: /k/eu
    context: b
    api_server: https://10.0.0.1:6443
    namespace: sandboxes
    node_host: 10.1.1.1
    weight: 3
    max_sandboxes: 500
    labels: {region: eu, tier: gpu}
    image: python:3.12
    placement: {nodeSelector: {pool: sandboxes}}
    warm_pool: {default: 3}
  - name: us-1
    kubeconfig: /k/us
    service_type: ClusterIP
"#)
        .unwrap();
        let (eu, us) = (&members[0], &members[1]);
        assert_eq!(eu.name, "eu-1");
        assert_eq!(eu.connection.context.as_deref(), Some("b"));
        assert_eq!(
            eu.connection.api_server.as_ref().unwrap().host(),
            Some("10.0.0.1")
        );
        assert_eq!(eu.connection.namespace, "sandboxes");
        assert_eq!(eu.sandbox.namespace, "sandboxes");
        assert_eq!(eu.weight, 3);
        assert_eq!(eu.max_sandboxes, Some(500));
        assert_eq!(eu.labels["region"], "eu");
        assert_eq!(eu.sandbox.image, "python:3.12");
        assert_eq!(eu.sandbox.warm_pool.classes[0].name, "default");
        assert_eq!(eu.sandbox.warm_pool.classes[0].target, 3);
        assert_eq!(
            eu.sandbox.exposure,
            Exposure::NodePort {
                node_host: "10.1.1.1".into()
            }
        );
        assert_eq!(
            eu.sandbox.placement.node_selector.as_ref().unwrap()["pool"],
            "sandboxes"
        );
        // The single-cluster settings are the defaults.
        assert_eq!(us.weight, 1);
        assert_eq!(us.connection.namespace, "deer-flow");
        assert_eq!(us.connection.api_timeout, base().connection.api_timeout);
        assert_eq!(us.sandbox.exposure, Exposure::ClusterIp);
        assert_eq!(us.sandbox.image, base().sandbox.image);
        assert_eq!(us.max_sandboxes, None);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = base();
        let text = include_str!("../../deploy/examples/clusters.yaml");
        let members = parse(text, "example", &c.connection, &c.sandbox, &|_| {
            Ok(kubeconfig(&["eu-1"]))
        })
        .unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["eu-1", "eu-2", "us-1"]);
        assert_eq!(members[0].weight, 3);
        assert_eq!(members[2].sandbox.exposure, Exposure::ClusterIp);
    }

    #[test]
    fn each_cluster_may_have_its_own_pod_template_but_no_field_twice() {
        let path =
            std::env::temp_dir().join(format!("cluster-template-{}.yaml", std::process::id()));
        std::fs::write(&path, "spec: {runtimeClassName: gvisor}\n").unwrap();
        let shown = path.display();
        let members = run(&format!(
            "clusters:\n  - {{name: a, kubeconfig: /k, pod_template: {shown}}}\n  - \
                {{name: b, kubeconfig: /k}}"
        ))
        .unwrap();
        assert!(!members[0].sandbox.pod_template.is_empty());
        assert!(members[1].sandbox.pod_template.is_empty());
        let error = run(&format!(
            "clusters:\n  - \
                {{name: a, kubeconfig: /k, pod_template: {shown}, placement: {{runtimeClassName: \
                kata}}}}"
        ))
        .unwrap_err();
        assert!(
            error.contains("clusters[0] (\"a\"): the pod template sets spec.runtimeClassName"),
            "{error}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn json_is_accepted() {
        let members =
            run(r#"{"clusters": [{"name": "a", "kubeconfig": "/k/a", "weight": 0}]}"#).unwrap();
        assert_eq!(members[0].weight, 0);
    }

    #[test]
    fn every_mistake_names_the_entry_and_the_fix() {
        for (text, expected) in [
            ("clusters: []", "lists no cluster"),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, colour: red}",
                "colour",
            ),
            (
                "clusters:\n  - {name: A_1, kubeconfig: /k}",
                "clusters[0] (\"A_1\"): name must be a DNS label",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k}\n  - {name: a, kubeconfig: /k}",
                "clusters[1] (\"a\"): name is used by an earlier entry",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /missing/x}",
                "cannot read the kubeconfig /missing/x: No such file",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, context: c}",
                "context \"c\" is not in /k; it has [\"a\", \"b\"]",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, api_server: 'ftp://x'}",
                "api_server \"ftp://x\" must be an absolute URL",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, namespace: Bad}",
                "namespace \"Bad\" must be a DNS-1123 label",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, max_sandboxes: 0}",
                "max_sandboxes must be at least 1",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, labels: {region: 'e u'}}",
                "label \"region\"",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, service_type: LoadBalancer}",
                "must be NodePort, ClusterIP or None",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, node_host: 'a b'}",
                "node_host \"a b\" must be a bare host",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, image: ' '}",
                "image \"\" must name a container image",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, placement: {nodeSelectr: {}}}",
                "nodeSelectr",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, weight: -1}",
                "not a valid cluster list",
            ),
            (
                "clusters:\n  - {name: a, kubeconfig: /k, pod_template: /missing/t.yaml}",
                "clusters[0] (\"a\"): pod_template /missing/t.yaml: cannot read the pod template",
            ),
        ] {
            let error = run(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
            assert!(
                error.starts_with("invalid configuration: SANDBOX_CLUSTERS=\"/etc/clusters.yaml\""),
                "{error}"
            );
        }
    }
}
