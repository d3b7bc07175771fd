//! Serving a listener with bounded connections: a connection must send its first request's
//! head within the header timeout, an idle keep-alive connection is closed after the keep-alive
//! timeout, and past the per-listener maximum new connections are closed at once (and counted)
//! instead of queueing without bound. Requests in flight, streaming bodies and upgraded
//! connections (WebSockets) are never cut by these: their own limits apply.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tower_service::Service;

use crate::metrics::Metrics;

/// The bounds of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From accepting a connection to its first request's complete head.
    pub header_read: Duration,
    /// How long a connection may wait for its next request (and that request's head).
    pub keep_alive: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
}

/// Open connections of a listener; `drained` wakes when the last one closes.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    drained: tokio::sync::Notify,
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets open connections finish
/// their requests (each closed after its current one); returns once they all closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    name: &'static str,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(Open::default());
    let gauge = metrics.open(name);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait a moment instead of spinning.
                tracing::warn!(listener = name, error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.count.load(Ordering::Relaxed) >= limits.max_connections {
            metrics.connection_refused(name);
            drop(stream);
            continue;
        }
        open.count.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        let (router, open, gauge, shutdown) = (
            router.clone(),
            open.clone(),
            gauge.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            serve_one(stream, peer, router, limits, shutdown).await;
            gauge.dec();
            if open.count.fetch_sub(1, Ordering::Relaxed) == 1 {
                open.drained.notify_waiters();
            }
        });
    }
    drop(listener);
    loop {
        let drained = open.drained.notified();
        if open.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        drained.await;
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let first_request = Arc::new(AtomicBool::new(false));
    let seen = first_request.clone();
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        // A Router is always ready, and never fails.
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(request).await.into_response_infallible()) }
    });
    let mut builder = http1::Builder::new();
    // hyper's header timer runs whenever the connection waits for a request head, idle
    // keep-alive included: it is the keep-alive timeout, and the first head has its own below.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.keep_alive)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let first_head = tokio::time::sleep(limits.header_read);
    tokio::pin!(first_head);
    let (mut draining, mut first_seen) = (false, false);
    loop {
        tokio::select! {
            _ = &mut connection => return,
            _ = &mut first_head, if !first_seen => {
                if !first_request.load(Ordering::Relaxed) {
                    return;
                }
                first_seen = true;
            }
            _ = shutdown.wait_for(|stop| *stop), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// `Router::oneshot` cannot fail; this names that.
trait Infallibly {
    fn into_response_infallible(self) -> axum::response::Response;
}

impl Infallibly for Result<axum::response::Response, Infallible> {
    fn into_response_infallible(self) -> axum::response::Response {
        match self {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}
