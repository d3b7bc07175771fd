//! Building the Kubernetes client from DeerFlow's provisioner's settings, with the fixes for its
//! known traps: a kubeconfig "file" that Docker made into a directory, and an API server
//! override that must not turn TLS verification off.

use std::{path::Path, time::Duration};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no client could be built; each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "KUBECONFIG_PATH={0} is a directory, not a kubeconfig file. Docker creates an empty \
        directory when the file it should mount is missing on the host: create the kubeconfig on \
        the host (e.g. ~/.kube/config) before starting, or point KUBECONFIG_PATH at the file"
    )]
    KubeconfigIsDirectory(String),
    #[error(
        "cannot read the kubeconfig at KUBECONFIG_PATH={path}: {cause}. Check that the file \
        is a valid kubeconfig (`kubectl --kubeconfig {path} config view`)"
    )]
    KubeconfigUnreadable { path: String, cause: String },
    #[error(
        "no Kubernetes configuration found: KUBECONFIG_PATH={path} does not exist, and \
        neither KUBECONFIG nor an in-cluster service account gave one ({cause}). Mount your \
        kubeconfig at {path} or set KUBECONFIG_PATH"
    )]
    NotFound { path: String, cause: String },
    #[error("cannot build the Kubernetes client: {0}")]
    Build(String),
}

/// A ready client and a description of where its configuration came from.
pub struct Connected {
    /// For requests: connect timeout set; each call is bounded by `k8s::calls`.
    pub client: kube::Client,
    /// For long-lived watches: kube's own read timeout, longer than the watches it makes.
    pub watch_client: kube::Client,
    pub source: String,
    pub server: String,
}

/// Loads the configuration (KUBECONFIG_PATH, then KUBECONFIG, then in-cluster), applies the
/// override and timeouts, and builds the client. No request is made.
/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct Connection {
    pub kubeconfig_path: std::path::PathBuf,
    /// The kubeconfig context to use; its current context when unset.
    pub context: Option<String>,
    /// Overrides the kubeconfig's server; TLS is still verified against the kubeconfig's name.
    pub api_server: Option<http::Uri>,
    pub insecure_skip_tls_verify: bool,
    /// Connect timeout of both clients (calls are bounded by `k8s::calls`).
    pub timeout: Duration,
}

pub async fn connect(config: &Connection) -> Result<Connected, ClientError> {
    let (mut kube_config, source) =
        load(&config.kubeconfig_path, config.context.as_deref()).await?;
    if let Some(server) = &config.api_server {
        override_server(&mut kube_config, server.clone());
    }
    if config.insecure_skip_tls_verify {
        tracing::warn!(
            "K8S_INSECURE_SKIP_TLS_VERIFY is set: the API server's certificate is NOT \
            verified; anyone on the path can impersonate it"
        );
        kube_config.accept_invalid_certs = true;
    }
    // Retries happen in one place, bounded by the call's time limit (k8s::calls), not also
    // inside the client (whose default waits out Retry-After without a time limit).
    kube_config.default_retry = false;
    let mut watch_config = kube_config.clone();
    watch_config.connect_timeout = Some(config.timeout);
    set_timeouts(&mut kube_config, config.timeout);
    let server = kube_config.cluster_url.to_string();
    let build =
        |c: kube::Config| kube::Client::try_from(c).map_err(|e| ClientError::Build(e.to_string()));
    let client = build(kube_config)?;
    let watch_client = build(watch_config)?;
    Ok(Connected {
        client,
        watch_client,
        source,
        server,
    })
}

async fn load(path: &Path, context: Option<&str>) -> Result<(kube::Config, String), ClientError> {
    let shown = path.display().to_string();
    if path.is_dir() {
        return Err(ClientError::KubeconfigIsDirectory(shown));
    }
    if path.exists() {
        let unreadable = |cause: String| ClientError::KubeconfigUnreadable {
            path: shown.clone(),
            cause,
        };
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| unreadable(e.to_string()))?;
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| unreadable(e.to_string()))?;
        return Ok((config, format!("kubeconfig file {shown} (KUBECONFIG_PATH)")));
    }
    tracing::info!(path = %shown, "KUBECONFIG_PATH does not exist; trying KUBECONFIG and the \
        in-cluster service account");
    let source = match std::env::var("KUBECONFIG") {
        Ok(v) if !v.is_empty() => format!("KUBECONFIG={v}"),
        _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            "in-cluster service account".to_string()
        }
        _ => "default kubeconfig location".to_string(),
    };
    let config = kube::Config::infer()
        .await
        .map_err(|e| ClientError::NotFound {
            path: shown,
            cause: e.to_string(),
        })?;
    Ok((config, source))
}

/// Points the client at another address while still verifying the certificate against the
/// host name the kubeconfig names (what the certificate was issued for).
pub fn override_server(config: &mut kube::Config, server: http::Uri) {
    let original = config
        .cluster_url
        .host()
        .map(|h| h.trim_matches(['[', ']']).to_string());
    if config.tls_server_name.is_none() && original.as_deref() != server.host() {
        config.tls_server_name = original;
    }
    tracing::info!(
        server = %server,
        tls_server_name = config.tls_server_name.as_deref().unwrap_or("(connection host)"),
        "K8S_API_SERVER overrides the kubeconfig's server; TLS verification stays on"
    );
    config.cluster_url = server;
}

/// Only the connect timeout: the time limit of a call is applied around the whole call (in
/// `k8s::calls`). A read timeout on the connection would be a trap: its timer also runs while
/// the connection sits idle in the pool, so every connection left idle for that long dies, and
/// a request handed one at that moment fails at once ("client error (SendRequest)") after
/// having reached the apiserver.
fn set_timeouts(config: &mut kube::Config, timeout: Duration) {
    config.connect_timeout = Some(timeout);
    config.read_timeout = None;
    config.write_timeout = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> kube::Config {
        kube::Config::new(url.parse().unwrap())
    }

    #[test]
    fn override_keeps_verifying_the_original_name() {
        let mut c = config("https://127.0.0.1:6443");
        override_server(&mut c, "https://host.docker.internal:6443".parse().unwrap());
        assert_eq!(
            c.cluster_url.to_string(),
            "https://host.docker.internal:6443/"
        );
        assert_eq!(c.tls_server_name.as_deref(), Some("127.0.0.1"));
        assert!(!c.accept_invalid_certs);
    }

    #[test]
    fn override_respects_an_explicit_tls_server_name() {
        let mut c = config("https://127.0.0.1:6443");
        c.tls_server_name = Some("kubernetes".into());
        override_server(&mut c, "https://host.docker.internal:6443".parse().unwrap());
        assert_eq!(c.tls_server_name.as_deref(), Some("kubernetes"));
    }

    #[test]
    fn same_host_needs_no_server_name() {
        let mut c = config("https://localhost:6443");
        override_server(&mut c, "https://localhost:7443".parse().unwrap());
        assert_eq!(c.tls_server_name, None);
    }

    #[tokio::test]
    async fn directory_kubeconfig_is_named() {
        let dir = std::env::temp_dir();
        let Err(e) = load(&dir, None).await else {
            panic!("a directory must be refused")
        };
        assert!(matches!(e, ClientError::KubeconfigIsDirectory(_)));
        assert!(e.to_string().contains("is a directory"));
    }

    #[tokio::test]
    async fn garbage_kubeconfig_is_unreadable() {
        let path = std::env::temp_dir().join(format!("garbage-kubeconfig-{}", std::process::id()));
        std::fs::write(&path, "{{{ not yaml").unwrap();
        let result = load(&path, None).await;
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            result,
            Err(ClientError::KubeconfigUnreadable { .. })
        ));
    }
}
