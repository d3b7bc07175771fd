//! The sandbox gateway: one authenticated door to every sandbox, in every cluster.
//!
//! ```text
//!  caller ── /sandboxes/{id}/{token}/v1/... ──► route ─► token check (no I/O)
//!                                                 │        against the watch cache's record
//!                                                 ▼
//!                           wait for Ready (watch-driven, bounded) ─► forward /v1/...
//!                                                 │        to the Pod, pooled by its UID
//!                                                 ▼
//!                          stream the answer back (or splice the WebSocket), noting activity
//! ```
//!
//! The gateway reads the same watch cache as the API: it is not a second source of truth.
//! The proxying itself is hyper's (the pooled client kube uses too, and its connection
//! upgrades); this module is routing, authorisation and accounting.

mod body;
mod route;
mod upstream;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{atomic::AtomicBool, Arc, RwLock},
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    Json, Router,
};
use hyper_util::rt::TokioIo;

use crate::{
    cluster::{Cluster, ResumeTrigger},
    config::GatewayLimits,
    fleet::{Fleet, FleetError, Scope},
    k8s::record::{creation_key, PodRecord},
    metrics::GatewayHandles,
    spec::{GatewayUrls, Reach, SandboxUrls},
};
use body::{Metered, OpenTraffic, Watched};
pub use route::PREFIX;
use upstream::{Forwarded, UpstreamClient};

/// Every way a gateway request fails, each one JSON `{"detail": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A wrong token, another tenant's sandbox and an unknown id all look the same.
    #[error(
        "no such sandbox: the URL is wrong, or its sandbox was deleted (a sandbox created again \
        under the same id has a new URL; ask the provisioner for it)"
    )]
    NotFound,
    #[error(
        "the gateway cannot tell yet whether this sandbox exists: its cluster's watch is not \
        synced; retry shortly"
    )]
    Syncing,
    #[error("the sandbox did not become ready within {0:?} (PROVISIONER_GATEWAY_READY_WAIT_SECONDS); retry shortly")]
    NotReady(Duration),
    #[error("the sandbox was deleted or replaced while this request was on its way")]
    Gone,
    #[error("the sandbox did not accept the connection: {0}")]
    Connect(String),
    #[error("the sandbox's connection broke: {0}")]
    Broken(String),
    #[error(
        "the sandbox did not start answering within {0:?} (PROVISIONER_GATEWAY_TIMEOUT_SECONDS)"
    )]
    Timeout(Duration),
    #[error("the request body is larger than {0} bytes (PROVISIONER_GATEWAY_MAX_BODY_BYTES)")]
    TooLarge(usize),
    #[error(
        "cluster {0:?} is reached through its apiserver (reach: apiserver), which does not carry \
        WebSockets here: use reach pod-ip for it"
    )]
    ReachUnavailable(String),
    #[error("cannot reach cluster {0:?} through its apiserver: {1}")]
    ClusterUnreachable(String, String),
    /// Waking the suspended sandbox is refused by its tenant's quota.
    #[error("the sandbox is suspended, and waking it was refused: {0}")]
    Quota(String, u64),
    #[error("the sandbox is suspended and could not be woken: {0}")]
    Wake(String),
}

impl GatewayError {
    fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::Syncing
            | GatewayError::NotReady(_)
            | GatewayError::Wake(_)
            | GatewayError::ClusterUnreachable(..) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Quota(..) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::ReachUnavailable(_) => StatusCode::NOT_IMPLEMENTED,
            GatewayError::Gone | GatewayError::Connect(_) | GatewayError::Broken(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The upstream error kind the metrics count (None: not the sandbox's side).
    fn kind(&self) -> Option<&'static str> {
        Some(match self {
            GatewayError::NotReady(_) => "not-ready",
            GatewayError::Gone => "gone",
            GatewayError::Connect(_) => "connect",
            GatewayError::Broken(_) => "broken",
            GatewayError::Timeout(_) => "timeout",
            GatewayError::TooLarge(_) => "body-limit",
            GatewayError::ClusterUnreachable(..) => "cluster",
            GatewayError::Wake(_) => "wake",
            _ => return None,
        })
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            GatewayError::Quota(_, seconds) => Some(HeaderValue::from(*seconds)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(HeaderValue::from_static("1")),
            _ => None,
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "detail": self.to_string() })),
        )
            .into_response();
        if let Some(value) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// How long a request for a sandbox the cache does not hold waits for the watch to deliver
/// it (a create's answer can reach the caller before the watch reaches this replica).
const JUST_CREATED_WAIT: Duration = Duration::from_secs(2);

/// One cluster's metric handles, by tenant.
type HandlesByTenant = RwLock<HashMap<Box<str>, Arc<GatewayHandles>>>;

/// What every gateway request shares (behind one Arc, as the router's state).
pub struct Gateway {
    fleet: Fleet,
    limits: GatewayLimits,
    client: UpstreamClient,
    traffic: OpenTraffic,
    /// Metric handles by cluster index and tenant, so that a request allocates no labels.
    handles: Arc<[HandlesByTenant]>,
}

impl Gateway {
    pub fn new(fleet: Fleet, limits: GatewayLimits) -> Gateway {
        Gateway {
            fleet: fleet.clone(),
            limits,
            client: upstream::client(),
            traffic: OpenTraffic::default(),
            handles: fleet.clusters().iter().map(|_| RwLock::default()).collect(),
        }
    }

    fn handles(&self, cluster: usize, tenant: &str) -> Arc<GatewayHandles> {
        let map = &self.handles[cluster];
        if let Some(found) = map.read().unwrap_or_else(|e| e.into_inner()).get(tenant) {
            return found.clone();
        }
        let made = Arc::new(
            self.fleet.clusters()[cluster]
                .metrics()
                .gateway_handles(tenant),
        );
        map.write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.into())
            .or_insert(made)
            .clone()
    }

    /// The gateway's routes: everything below `/sandboxes/`.
    pub fn router(self) -> Router {
        // Shared, not cloned per request (the fleet and the client hold dozens of handles).
        Router::new()
            .route("/sandboxes/{*rest}", any(proxy))
            .with_state(Arc::new(self))
    }

    /// The cluster holding the sandbox, its Pod's record (a suspended sandbox's: as its Pod
    /// was), and whether it is suspended. While a cluster's watch has not synced (a replica
    /// that just started), a miss waits for it, up to the readiness wait.
    async fn locate(&self, id: &str) -> Result<(usize, Arc<PodRecord>, bool), GatewayError> {
        let clusters = self.fleet.clusters();
        let found = || {
            clusters.iter().enumerate().find_map(|(i, c)| {
                if let Some(record) = c.cached_suspended(id) {
                    return Some((i, Arc::new(record.pod.clone()), true));
                }
                c.cached_pod(id).map(|pod| (i, pod, false))
            })
        };
        if let Some(hit) = found() {
            return Ok(hit);
        }
        let deadline = tokio::time::Instant::now() + self.limits.ready_wait;
        for cluster in clusters.iter().filter(|c| !c.cache_usable()) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            cluster
                .wait_for_pod(id, left, |pod| pod.is_some() || cluster.cache_usable())
                .await;
        }
        if found().is_none() {
            // A sandbox created a moment ago (its URL handed out with the create's answer) may
            // not have reached the watch yet: give it a moment before saying it does not exist.
            let waits = clusters
                .iter()
                .map(|c| Box::pin(c.wait_for_pod(id, JUST_CREATED_WAIT, |pod| pod.is_some())));
            futures::future::select_all(waits).await;
        }
        match found() {
            Some(hit) => Ok(hit),
            None if clusters.iter().all(Cluster::cache_usable) => Err(GatewayError::NotFound),
            None => Err(GatewayError::Syncing),
        }
    }
}

/// One proxied request (see the module).
async fn proxy(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(route) = route::route(&path_and_query) else {
        return GatewayError::NotFound.into_response();
    };
    let (index, pod, suspended) = match gateway.locate(route.id).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let cluster = &gateway.fleet.clusters()[index];
    let SandboxUrls::Gateway(urls) = &cluster.spec().urls else {
        return GatewayError::NotFound.into_response();
    };
    let creation = creation_key(&pod);
    if !urls
        .keys
        .check(route.token, &pod.tenant, route.id, &creation)
    {
        return GatewayError::NotFound.into_response();
    }
    let metrics = cluster.metrics();
    let handles = gateway.handles(index, &pod.tenant);
    let method = request.method().clone();
    let answer = match suspended {
        true => wake(&gateway, index, route.id).await,
        false => Ok(pod),
    };
    let answer = match answer {
        Ok(pod) => {
            forward(
                &gateway, index, urls, pod, &route, &creation, request, &handles,
            )
            .await
        }
        Err(e) => Err(e),
    };
    let response = match answer {
        Ok(response) => response,
        Err(e) => {
            if let Some(kind) = e.kind() {
                metrics.gateway_upstream_error(kind);
            }
            e.into_response()
        }
    };
    let status = response.status().as_u16();
    handles.answered(status, started.elapsed());
    // The token never reaches the log: only the id.
    if tracing::enabled!(tracing::Level::INFO) {
        let path = format!("{PREFIX}{}/…", route.id);
        let latency_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
        tracing::info!(%method, path, target_len = route.target.len(), status, latency_ms,
            "proxied");
    }
    response
}

/// Resumes a suspended sandbox for a request (one resume for concurrent requests: see
/// `Cluster::resume`) and returns its new Pod's record. The resume runs to completion even
/// when the request gives up; the request waits for it at most the readiness wait.
async fn wake(gateway: &Gateway, index: usize, id: &str) -> Result<Arc<PodRecord>, GatewayError> {
    let limit = gateway.limits.ready_wait;
    let sandbox_id = crate::sandbox::SandboxId::parse(id).map_err(|_| GatewayError::NotFound)?;
    let fleet = gateway.fleet.clone();
    let resuming = tokio::spawn(async move {
        fleet
            .resume(&sandbox_id, &Scope::All, ResumeTrigger::Traffic)
            .await
    });
    match tokio::time::timeout(limit, resuming).await {
        Err(_) => return Err(GatewayError::NotReady(limit)),
        Ok(Err(e)) => return Err(GatewayError::Wake(e.to_string())),
        Ok(Ok(Err(FleetError::Quota(refusal)))) => {
            return Err(GatewayError::Quota(
                refusal.to_string(),
                refusal.retry_after,
            ))
        }
        Ok(Ok(Err(e))) => return Err(GatewayError::Wake(e.to_string())),
        Ok(Ok(Ok(_))) => {}
    }
    let cluster = &gateway.fleet.clusters()[index];
    let awake = |p: Option<&PodRecord>| p.is_some_and(|p| !p.terminating);
    cluster.wait_for_pod(id, JUST_CREATED_WAIT, awake).await;
    cluster
        .cached_pod(id)
        .filter(|p| !p.terminating)
        .ok_or(GatewayError::Gone)
}

/// Waits for the sandbox to be ready, forwards the request and streams the answer back.
#[allow(clippy::too_many_arguments)]
async fn forward(
    gateway: &Gateway,
    index: usize,
    urls: &GatewayUrls,
    pod: Arc<PodRecord>,
    route: &route::Route<'_>,
    creation: &str,
    mut request: Request,
    handles: &GatewayHandles,
) -> Result<Response, GatewayError> {
    let limits = gateway.limits;
    let id = route.id;
    let cluster = &gateway.fleet.clusters()[index];
    cluster.note_traffic(id);
    let heartbeat = gateway.traffic.open(&gateway.fleet, index, id);
    let pod = ready_pod(cluster, id, pod, limits.ready_wait).await?;
    let via_apiserver = cluster.spec().reach == Reach::ApiServer;
    let upgrade = upstream::is_upgrade(request.headers());
    if via_apiserver && upgrade {
        return Err(GatewayError::ReachUnavailable(cluster.name().to_string()));
    }
    let ip: IpAddr = pod
        .ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .ok_or(GatewayError::Gone)?;
    let port = cluster.spec().port;
    let too_large = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limits.max_body_bytes as u64);
    if too_large {
        return Err(GatewayError::TooLarge(limits.max_body_bytes));
    }
    let key = cluster
        .spec()
        .upstream_key
        .then(|| urls.keys.upstream_key(&pod.tenant, id, creation));
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let proto = urls.public_url.split("://").next().unwrap_or("http");
    let host = SocketAddr::new(ip, port).to_string();
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, incoming) = request.into_parts();
    upstream::rewrite_request_headers(
        &mut parts.headers,
        &Forwarded {
            client,
            proto,
            prefix: route.prefix,
            host: &host,
            key: key.as_deref(),
        },
    );
    if via_apiserver {
        let answer =
            through_apiserver(cluster, &pod, id, route, parts, incoming, limits, handles).await?;
        let (parts, body) = answer.into_parts();
        let back = Watched::new(body, limits.idle_timeout, handles.downstream.clone())
            .with_heartbeat(heartbeat);
        return Ok(Response::from_parts(parts, Body::new(back)));
    }
    parts.uri = format!(
        "http://{}{}",
        upstream::pod_authority(&pod.uid, ip, port),
        route::upstream_target(route)
    )
    .parse()
    .map_err(|e| GatewayError::Broken(format!("the request's path cannot be forwarded: {e}")))?;
    parts.version = http::Version::HTTP_11;
    let metrics = cluster.metrics();
    let body_broken = Arc::new(AtomicBool::new(false));
    let outgoing = Watched::new(incoming, limits.idle_timeout, handles.upstream.clone())
        .capped(limits.max_body_bytes, body_broken.clone());
    let sent = gateway
        .client
        .request(http::Request::from_parts(parts, Body::new(outgoing)));
    let answered = tokio::select! {
        answered = tokio::time::timeout(limits.response_timeout, sent) => answered,
        true = gone(cluster, id, &pod.uid, limits.response_timeout) => {
            return Err(GatewayError::Gone)
        }
    };
    let mut answer = match answered {
        Err(_) => return Err(GatewayError::Timeout(limits.response_timeout)),
        Ok(Err(e)) => {
            return Err(upstream_failure(
                cluster,
                id,
                &pod,
                &e,
                &body_broken,
                limits,
            ))
        }
        Ok(Ok(answer)) => answer,
    };
    upstream::strip_hop_by_hop(answer.headers_mut());
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(downstream)) =
        (answer.status(), downstream_upgrade)
    {
        let upstream_side = hyper::upgrade::on(&mut answer);
        let (bytes_up, bytes_down) = (handles.upstream.clone(), handles.downstream.clone());
        let open = metrics.open("websocket");
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let (Ok(client_io), Ok(sandbox_io)) = tokio::join!(downstream, upstream_side) else {
                return;
            };
            open.inc();
            let epoch = tokio::time::Instant::now();
            let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let mut client_io =
                Metered::new(TokioIo::new(client_io), bytes_up, last.clone(), epoch);
            let mut sandbox_io =
                Metered::new(TokioIo::new(sandbox_io), bytes_down, last.clone(), epoch);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client_io, &mut sandbox_io) => {}
                _ = body::idle_for(last, epoch, idle) => {}
            }
            open.dec();
            drop(heartbeat);
        });
        let (parts, _) = answer.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (parts, incoming) = answer.into_parts();
    let back = Watched::new(incoming, limits.idle_timeout, handles.downstream.clone())
        .with_heartbeat(heartbeat);
    Ok(Response::from_parts(parts, Body::new(back)))
}

/// Sends a request through the cluster's apiserver (its service proxy to the sandbox's
/// Service). kube's client sends whole bodies, so the request body is read first (within the
/// cap); the answer streams back.
#[allow(clippy::too_many_arguments)]
async fn through_apiserver(
    cluster: &Cluster,
    pod: &PodRecord,
    id: &str,
    route: &route::Route<'_>,
    mut parts: http::request::Parts,
    incoming: Body,
    limits: GatewayLimits,
    handles: &GatewayHandles,
) -> Result<http::Response<kube::client::Body>, GatewayError> {
    use http_body_util::BodyExt;
    // The apiserver's own host, which the client sets.
    parts.headers.remove(header::HOST);
    parts.uri = format!(
        "/api/v1/namespaces/{}/services/{}:{}/proxy{}",
        cluster.namespace(),
        crate::k8s::manifests::service_name(id),
        cluster.spec().port,
        route::upstream_target(route)
    )
    .parse()
    .map_err(|e| GatewayError::Broken(format!("the request's path cannot be forwarded: {e}")))?;
    let broken = Arc::new(AtomicBool::new(false));
    let body = Watched::new(incoming, limits.idle_timeout, handles.upstream.clone())
        .capped(limits.max_body_bytes, broken.clone())
        .collect()
        .await
        .map_err(
            |e| match broken.load(std::sync::atomic::Ordering::Relaxed) {
                true => GatewayError::TooLarge(limits.max_body_bytes),
                false => GatewayError::Broken(e.to_string()),
            },
        )?
        .to_bytes();
    let request = http::Request::from_parts(parts, kube::client::Body::from(body));
    let client = cluster.kube_client();
    let sent = client.send(request);
    let answered = tokio::select! {
        answered = tokio::time::timeout(limits.response_timeout, sent) => answered,
        true = gone(cluster, id, &pod.uid, limits.response_timeout) => {
            return Err(GatewayError::Gone)
        }
    };
    match answered {
        Err(_) => Err(GatewayError::Timeout(limits.response_timeout)),
        Ok(Ok(answer)) => {
            let mut answer = answer;
            upstream::strip_hop_by_hop(answer.headers_mut());
            Ok(answer)
        }
        Ok(Err(e)) => {
            let same_pod = cluster
                .cached_pod(id)
                .is_some_and(|now| now.uid == pod.uid && !now.terminating);
            Err(match same_pod {
                false => GatewayError::Gone,
                true => {
                    GatewayError::ClusterUnreachable(cluster.name().to_string(), error_chain(&e))
                }
            })
        }
    }
}

/// Completes with true once the watch shows the Pod gone, replaced or terminating (false after
/// `limit`): a request waiting in a deleted sandbox is answered at once, not when the node
/// gets round to killing the container.
async fn gone(cluster: &Cluster, id: &str, uid: &str, limit: Duration) -> bool {
    cluster
        .wait_for_pod(id, limit, |p| {
            p.is_none_or(|p| &*p.uid != uid || p.terminating)
        })
        .await
}

/// The sandbox's Pod once it is ready (watch-driven, up to `limit`); the same Pod, or the
/// sandbox is gone.
async fn ready_pod(
    cluster: &Cluster,
    id: &str,
    pod: Arc<PodRecord>,
    limit: Duration,
) -> Result<Arc<PodRecord>, GatewayError> {
    let usable = |p: &PodRecord| p.status.ready && p.ip.is_some() && !p.terminating;
    if usable(&pod) {
        return Ok(pod);
    }
    let uid = pod.uid.clone();
    cluster
        .wait_for_pod(id, limit, |p| p.is_none_or(|p| p.uid != uid || usable(p)))
        .await;
    match cluster.cached_pod(id) {
        Some(now) if now.uid == uid && usable(&now) => Ok(now),
        Some(now) if now.uid == uid => Err(GatewayError::NotReady(limit)),
        _ => Err(GatewayError::Gone),
    }
}

/// What a failed upstream call means for the caller.
fn upstream_failure(
    cluster: &Cluster,
    id: &str,
    pod: &PodRecord,
    error: &hyper_util::client::legacy::Error,
    body_broken: &AtomicBool,
    limits: GatewayLimits,
) -> GatewayError {
    if body_broken.load(std::sync::atomic::Ordering::Relaxed) {
        return GatewayError::TooLarge(limits.max_body_bytes);
    }
    let same_pod = cluster
        .cached_pod(id)
        .is_some_and(|now| now.uid == pod.uid && !now.terminating);
    if !same_pod {
        return GatewayError::Gone;
    }
    let cause = error_chain(error);
    if error.is_connect() {
        GatewayError::Connect(cause)
    } else {
        GatewayError::Broken(cause)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
