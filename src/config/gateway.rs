//! The gateway's settings: URL mode, public address, secrets, listener, limits and reach.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use super::{args::GatewayArgs, check, ConfigError};
use crate::spec::{Exposure, GatewayKeys, GatewayUrls, Reach, SandboxUrls};

/// Shortest secret accepted: 32 characters, as `openssl rand -hex 16` gives.
const MIN_SECRET_LEN: usize = 32;

/// Where the gateway listens and what it lets through.
#[derive(Debug, Clone)]
pub struct GatewaySection {
    /// On, with URLs through it (SANDBOX_URL_MODE=gateway).
    pub on: bool,
    /// Its own listener; None: on the API's.
    pub listen: Option<SocketAddr>,
    pub limits: GatewayLimits,
}

/// The gateway's limits, apart from the API's.
#[derive(Debug, Clone, Copy)]
pub struct GatewayLimits {
    /// From forwarding a request to the sandbox's answer starting (504 after it).
    pub response_timeout: Duration,
    /// Longest a proxied body or WebSocket may move no bytes.
    pub idle_timeout: Duration,
    pub max_body_bytes: usize,
    /// How long a request for a sandbox that is not ready waits for it.
    pub ready_wait: Duration,
}

/// The parsed gateway settings: the section, and what the sandbox spec takes from them.
pub(super) struct Parsed {
    pub section: GatewaySection,
    pub urls: SandboxUrls,
    pub reach: Reach,
    pub upstream_key: bool,
}

pub(super) fn parse(args: GatewayArgs) -> Result<Parsed, ConfigError> {
    let on =
        match args.sandbox_url_mode.trim() {
            "direct" => false,
            "gateway" => true,
            other => return Err(ConfigError::new(
                "SANDBOX_URL_MODE",
                other,
                "must be direct (the sandbox's Service, DeerFlow's URLs) or gateway (URLs through \
                    this service; needs PROVISIONER_PUBLIC_URL and PROVISIONER_GATEWAY_SECRET)",
            )),
        };
    let reach = Reach::parse(args.gateway_reach.trim()).ok_or_else(|| {
        ConfigError::new(
            "SANDBOX_GATEWAY_REACH",
            &args.gateway_reach,
            "must be pod-ip (the gateway shares the pod network) or apiserver (through the \
                apiserver's service proxy)",
        )
    })?;
    let upstream_key = match args.sandbox_upstream_key.trim() {
        "none" => false,
        "per-sandbox" => true,
        other => {
            return Err(ConfigError::new(
                "SANDBOX_UPSTREAM_KEY",
                other,
                "must be none or per-sandbox",
            ))
        }
    };
    let limits = GatewayLimits {
        response_timeout: check::seconds(
            "PROVISIONER_GATEWAY_TIMEOUT_SECONDS",
            args.gateway_timeout_seconds,
            24.0 * 3600.0,
        )?,
        idle_timeout: check::seconds(
            "PROVISIONER_GATEWAY_IDLE_TIMEOUT_SECONDS",
            args.gateway_idle_timeout_seconds,
            24.0 * 3600.0,
        )?,
        max_body_bytes: check::positive(
            "PROVISIONER_GATEWAY_MAX_BODY_BYTES",
            args.gateway_max_body_bytes,
        )?,
        ready_wait: check::seconds(
            "PROVISIONER_GATEWAY_READY_WAIT_SECONDS",
            args.gateway_ready_wait_seconds,
            3600.0,
        )?,
    };
    let listen = match args.gateway_listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ConfigError::new(
                "PROVISIONER_GATEWAY_LISTEN",
                text,
                "must be ADDRESS:PORT, for example 0.0.0.0:8003",
            )
        })?),
    };
    if !on {
        let only_for_gateway = [
            ("PROVISIONER_GATEWAY_LISTEN", listen.is_some()),
            ("SANDBOX_UPSTREAM_KEY", upstream_key),
            ("SANDBOX_GATEWAY_REACH", reach != Reach::PodIp),
        ];
        if let Some((variable, _)) = only_for_gateway.iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(
                variable,
                "(set)",
                "applies only with SANDBOX_URL_MODE=gateway: set that too, or unset this",
            ));
        }
        return Ok(Parsed {
            section: GatewaySection { on, listen, limits },
            urls: SandboxUrls::Direct,
            reach,
            upstream_key,
        });
    }
    let public_url = public_url(args.public_url.as_deref())?;
    let current = secret(&args)?;
    let previous = match args.gateway_previous_secret.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(checked_secret("PROVISIONER_GATEWAY_PREVIOUS_SECRET", text)?),
    };
    let keys = GatewayKeys::new(current.as_bytes(), previous.as_deref().map(str::as_bytes));
    Ok(Parsed {
        section: GatewaySection { on, listen, limits },
        urls: SandboxUrls::Gateway(Arc::new(GatewayUrls { public_url, keys })),
        reach,
        upstream_key,
    })
}

/// `http(s)://host[:port][/prefix]`, kept without a trailing slash.
fn public_url(value: Option<&str>) -> Result<String, ConfigError> {
    let text = value.map(str::trim).unwrap_or_default();
    let fail = |problem: &str| ConfigError::new("PROVISIONER_PUBLIC_URL", text, problem);
    if text.is_empty() {
        return Err(fail(
            "is required with SANDBOX_URL_MODE=gateway: the address backends reach this \
                service at, for example http://provisioner:8002",
        ));
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| fail("must be a URL such as http://provisioner:8002"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(fail(
            "must be an http:// or https:// URL with a host, for example http://provisioner:8002",
        ));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(fail(
            "must have no query or fragment: sandbox URLs are joined onto it",
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// The current secret, from the variable or the file (one of them).
fn secret(args: &GatewayArgs) -> Result<String, ConfigError> {
    let inline = args
        .gateway_secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let file = args
        .gateway_secret_file
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty());
    match (inline, file) {
        (Some(_), Some(path)) => Err(ConfigError::new(
            "PROVISIONER_GATEWAY_SECRET_FILE",
            path.display().to_string(),
            "is set together with PROVISIONER_GATEWAY_SECRET: keep one",
        )),
        (Some(text), None) => checked_secret("PROVISIONER_GATEWAY_SECRET", text),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    "PROVISIONER_GATEWAY_SECRET_FILE",
                    path.display().to_string(),
                    format!("cannot be read: {e}"),
                )
            })?;
            checked_secret("PROVISIONER_GATEWAY_SECRET_FILE", text.trim())
        }
        (None, None) => Err(ConfigError::new(
            "PROVISIONER_GATEWAY_SECRET",
            "",
            "is required with SANDBOX_URL_MODE=gateway (or PROVISIONER_GATEWAY_SECRET_FILE): \
                the same secret on every replica, for example from `openssl rand -hex 32`",
        )),
    }
}

fn checked_secret(variable: &'static str, text: &str) -> Result<String, ConfigError> {
    if text.len() < MIN_SECRET_LEN || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            variable,
            "(hidden)",
            "must be at least 32 characters without spaces, for example from `openssl rand -hex \
                32`",
        ));
    }
    Ok(text.to_string())
}

/// A cluster's exposure and reach must fit the URL mode: no Service only behind the gateway
/// with Pod-IP reach; the apiserver's service proxy needs the Service.
pub(super) fn check_cluster(
    cluster: &str,
    on: bool,
    exposure: &Exposure,
    reach: Reach,
) -> Result<(), ConfigError> {
    let problem = match (on, exposure, reach) {
        (false, Exposure::None, _) => {
            "None (no Service) works only with SANDBOX_URL_MODE=gateway: set that, or choose \
                NodePort or ClusterIP"
        }
        (true, Exposure::None, Reach::ApiServer) => {
            "None (no Service) cannot be used with apiserver reach, which goes through the \
                Service: choose ClusterIP, or reach pod-ip"
        }
        _ => return Ok(()),
    };
    Err(ConfigError::new(
        "SANDBOX_SERVICE_TYPE",
        format!("None (cluster {cluster})"),
        problem,
    ))
}
