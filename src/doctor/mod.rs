//! `sandbox-provisioner doctor`: the troubleshooting list as checks, each printed as ok / warn /
//! fail with the fix, so that a broken setup is diagnosed in one command.

mod cluster;

use cluster::{image_check, namespace_check, node_port_check, rbac_checks};

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::Api;

use crate::{
    config::{ClusterConfig, Config, ServeArgs},
    k8s::client,
    permissions::Features,
    spec::Exposure,
};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
    /// Not a check: the heading of one cluster's checks (with several clusters).
    Section,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub verdict: Verdict,
    pub name: String,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Ok,
            name: name.into(),
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Warn,
            name: name.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            verdict: Verdict::Fail,
            name: name.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check that can run; later checks are skipped when what they need failed. With
/// several clusters, each cluster's checks follow a section heading.
pub async fn run(args: ServeArgs) -> Vec<Check> {
    let mut checks = settings(&args);
    let Ok(config) = Config::try_from(args) else {
        return checks;
    };
    let several = config.clusters.len() > 1;
    for member in &config.clusters {
        if several {
            checks.push(Check {
                verdict: Verdict::Section,
                name: format!("cluster {}", member.name),
                detail: format!(
                    "namespace {}, kubeconfig {}{}, weight {}",
                    member.connection.namespace,
                    member.connection.kubeconfig_path.display(),
                    member
                        .connection
                        .context
                        .as_deref()
                        .map(|c| format!(" (context {c})"))
                        .unwrap_or_default(),
                    member.weight
                ),
                fix: None,
            });
        }
        checks.extend(cluster_checks(&config, member).await);
    }
    checks
}

/// The checks of one cluster: connection, namespace, permissions, claims, node ports, images.
async fn cluster_checks(config: &Config, member: &ClusterConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    let connected = match client::connect(&crate::cluster::connection(&member.connection)).await {
        Ok(c) => {
            checks.push(Check::ok("kubeconfig", c.source.clone()));
            c
        }
        Err(e) => {
            checks.push(Check::fail("kubeconfig", e.to_string(), kubeconfig_fix(&e)));
            return checks;
        }
    };
    let client = connected.client;
    let timeout = member.connection.api_timeout;
    let namespace = &member.connection.namespace;
    match tokio::time::timeout(timeout, client.apiserver_version()).await {
        Ok(Ok(info)) => checks.push(Check::ok(
            "apiserver",
            format!(
                "{} answers (Kubernetes {})",
                connected.server, info.git_version
            ),
        )),
        Ok(Err(e)) => {
            checks.push(unreachable(
                &connected.server,
                &e.to_string(),
                &error_text(&e),
            ));
            return checks;
        }
        Err(_) => {
            checks.push(unreachable(
                &connected.server,
                "no answer within K8S_API_TIMEOUT_SECONDS",
                "",
            ));
            return checks;
        }
    }
    let namespace_exists = namespace_check(&client, &member.connection, &mut checks).await;
    let sandbox = &member.sandbox;
    let features = Features {
        leader_election: !config.lifecycle.leader_lease.is_zero() || config.tenancy.locks(),
        network_policies: sandbox.policies_on(),
        claims: !sandbox.claims().is_empty(),
        apiserver_reach: config.gateway.on && sandbox.reach == crate::spec::Reach::ApiServer,
        namespace_missing: namespace_exists == Some(false),
    };
    rbac_checks(&client, namespace, features, &mut checks).await;
    for (variable, claim) in sandbox.claims() {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        checks.push(
            match tokio::time::timeout(timeout, api.get_opt(claim)).await {
                Ok(Ok(Some(_))) => Check::ok("volume claim", format!("{variable}={claim} exists")),
                Ok(Ok(None)) => Check::fail(
                    "volume claim",
                    format!(
                        "{variable}={claim}: no such PersistentVolumeClaim in {}",
                        namespace
                    ),
                    format!("create the claim or unset {variable}"),
                ),
                Ok(Err(e)) => Check::fail(
                    "volume claim",
                    format!("{variable}={claim}: {e}"),
                    "grant get on persistentvolumeclaims",
                ),
                Err(_) => Check::fail(
                    "volume claim",
                    format!("{variable}={claim}: timed out"),
                    "check the API server",
                ),
            },
        );
    }
    let node_ports = matches!(sandbox.exposure, Exposure::NodePort { .. });
    if namespace_exists == Some(true) && node_ports {
        checks.push(node_port_check(&client, namespace, sandbox.port).await);
    }
    checks.push(image_check(&client, timeout, sandbox).await);
    checks
}

/// Settings that need no cluster: host paths, image, node host, and the rest of the config.
fn settings(args: &ServeArgs) -> Vec<Check> {
    let mut checks = Vec::new();
    for (variable, value) in [
        ("SKILLS_HOST_PATH", &args.storage.skills_host_path),
        ("THREADS_HOST_PATH", &args.storage.threads_host_path),
    ] {
        checks.push(match value.as_deref().filter(|v| !v.is_empty()) {
            None => Check::warn(
                "host path",
                format!("{variable} is not set"),
                format!(
                    "set {variable} to an absolute directory on the node to mount it into \
                    sandboxes"
                ),
            ),
            Some(v) if !v.starts_with('/') || v.split('/').any(|p| p == "..") => Check::fail(
                "host path",
                format!("{variable}={v:?} is not an absolute path free of '..'"),
                "give the resolved absolute path on the Kubernetes node (for example from \
                    `realpath`)",
            ),
            Some(v) => Check::ok("host path", format!("{variable}={v}")),
        });
    }
    checks.push(if args.sandbox.sandbox_image.trim().is_empty() {
        Check::fail(
            "image",
            "SANDBOX_IMAGE is empty",
            "set SANDBOX_IMAGE to the sandbox container image",
        )
    } else {
        Check::ok(
            "image",
            format!("SANDBOX_IMAGE={}", args.sandbox.sandbox_image),
        )
    });
    let host = args.sandbox.node_host.trim();
    checks.push(match host {
        "" => Check::fail(
            "node host",
            "NODE_HOST is \
            empty",
            "set NODE_HOST to the name the backend uses to reach the node",
        ),
        "localhost" | "127.0.0.1" | "0.0.0.0" | "::1" => Check::warn(
            "node host",
            format!(
                "NODE_HOST={host}: sandbox URLs only work for a backend on the same host, not \
                in a container"
            ),
            "use host.docker.internal (with extra_hosts on Linux) or the node's address when the \
                backend runs in a container",
        ),
        _ if std::net::ToSocketAddrs::to_socket_addrs(&(host, 80)).is_err() => Check::warn(
            "node host",
            format!("NODE_HOST={host} does not resolve from here"),
            "check that the backend can resolve it (for host.docker.internal on Linux add \
                `extra_hosts: host.docker.internal:host-gateway`)",
        ),
        _ => Check::ok("node host", format!("NODE_HOST={host} resolves")),
    });
    if let Err(e) = Config::try_from(args.clone()) {
        if !checks.iter().any(|c| c.verdict == Verdict::Fail) {
            checks.push(Check::fail(
                "settings",
                e.to_string(),
                format!("fix {}", e.variable),
            ));
        }
    }
    checks
}

fn kubeconfig_fix(e: &client::ClientError) -> String {
    match e {
        client::ClientError::KubeconfigIsDirectory(_) => {
            "create the kubeconfig file on the host before mounting it (Docker made a directory \
                because the file was missing)"
                .into()
        }
        client::ClientError::KubeconfigUnreadable { .. } => {
            "check the file with `kubectl --kubeconfig FILE config view`".into()
        }
        _ => "mount a kubeconfig at KUBECONFIG_PATH, set KUBECONFIG, or run in a pod with a \
            service account"
            .into(),
    }
}

fn error_text(e: &kube::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

fn unreachable(server: &str, summary: &str, chain: &str) -> Check {
    let lower = chain.to_lowercase();
    let local = ["//localhost", "//127.", "//0.0.0.0", "//[::1]"]
        .iter()
        .any(|h| server.contains(h));
    let fix = if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("invalidcert")
    {
        "the API server's certificate was not accepted: check the kubeconfig's \
            certificate-authority and that the kubeconfig's server name is in the certificate \
            (K8S_INSECURE_SKIP_TLS_VERIFY=true only as a last resort)"
            .to_string()
    } else if local {
        format!(
            "{server} is this machine's own loopback address: inside a container it is the \
            container itself; set K8S_API_SERVER=https://host.docker.internal:PORT (TLS stays \
            verified against the kubeconfig's name)"
        )
    } else {
        "check that the API server runs and is reachable from here (firewall, address, port), or \
            set K8S_API_SERVER"
            .to_string()
    };
    let detail = if chain.is_empty() {
        summary.to_string()
    } else {
        format!("{server}: {chain}")
    };
    Check::fail("apiserver", detail, fix)
}

/// The report as printed: one line per check, the fix indented below failures and warnings.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    // Two spaces at least after the longest name, so that the name can be read back.
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0) + 1;
    for c in checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Section => {
                let _ = writeln!(out, "== {}: {}", c.name, c.detail);
                continue;
            }
        };
        let _ = writeln!(out, "{tag}  {:<width$} {}", c.name, c.detail);
        if let (Some(fix), true) = (&c.fix, c.verdict != Verdict::Ok) {
            let _ = writeln!(out, "      {:<width$} fix: {fix}", "");
        }
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    let _ = writeln!(
        out,
        "{}",
        if failed == 0 {
            "all checks passed".to_string()
        } else {
            format!("{failed} check(s) failed")
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["sandbox-provisioner"];
        argv.extend_from_slice(extra);
        crate::cli::Cli::try_parse_from(argv)
            .unwrap()
            .serve_args()
            .unwrap()
    }

    #[test]
    fn settings_flag_relative_paths_and_local_node_host() {
        let checks = settings(&args(&[
            "--skills-host-path",
            "rel/skills",
            "--node-host",
            "127.0.0.1",
        ]));
        let fail = checks.iter().find(|c| c.verdict == Verdict::Fail).unwrap();
        assert!(fail.detail.contains("SKILLS_HOST_PATH"), "{fail:?}");
        assert!(checks
            .iter()
            .any(|c| c.name == "node host" && c.verdict == Verdict::Warn));
    }

    #[test]
    fn loopback_server_advises_the_override() {
        let c = unreachable("https://127.0.0.1:6443/", "x", "connection refused");
        assert!(c.fix.unwrap().contains("K8S_API_SERVER"));
        let c = unreachable(
            "https://10.0.0.1:6443/",
            "x",
            "invalid peer certificate: UnknownIssuer",
        );
        assert!(c.fix.unwrap().contains("certificate"));
    }

    #[test]
    fn render_counts_failures() {
        let text = render(&[
            Check::ok("a", "fine"),
            Check::fail("b", "broken", "mend it"),
        ]);
        assert!(text.contains("ok    a"), "{text}");
        assert!(
            text.contains("fail  b") && text.contains("fix: mend it"),
            "{text}"
        );
        assert!(text.ends_with("1 check(s) failed\n"));
    }
}
