//! Proxied bodies and upgraded connections, streamed as they come: counted, cut when no bytes
//! move for the idle timeout, capped where the request body has a limit, and keeping their
//! sandbox's activity fresh while they stay open.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

use std::{collections::HashMap, sync::Mutex};

use crate::{cluster::Cluster, fleet::Fleet};

/// Why a proxied body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no bytes moved for {0:?} (PROVISIONER_GATEWAY_IDLE_TIMEOUT_SECONDS)")]
    Idle(Duration),
    #[error("the request body is larger than {0} bytes (PROVISIONER_GATEWAY_MAX_BODY_BYTES)")]
    TooLarge(usize),
    #[error("{0}")]
    Inner(Box<dyn std::error::Error + Send + Sync>),
}

/// Open traffic by (cluster index, sandbox id).
type OpenCounts = Arc<Mutex<HashMap<(usize, Arc<str>), usize>>>;

/// The sandboxes with requests, streams or WebSockets open through this gateway, by cluster
/// (its index in the fleet) and id, and how many each has. One ticker notes activity on all of
/// them every heartbeat, so that a request costs a counter, not a task of its own.
#[derive(Clone, Default)]
pub struct OpenTraffic {
    open: OpenCounts,
    ticker: Arc<std::sync::OnceLock<()>>,
}

impl OpenTraffic {
    /// Counts traffic open on the sandbox until the returned heartbeat is dropped.
    pub fn open(&self, fleet: &Fleet, cluster: usize, id: &str) -> Heartbeat {
        let key = (cluster, Arc::<str>::from(id));
        *self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        self.ticker.get_or_init(|| self.start_ticker(fleet.clone()));
        Heartbeat {
            open: self.open.clone(),
            key,
        }
    }

    /// Every heartbeat, notes activity on every sandbox with traffic open; ends when the
    /// gateway is gone.
    fn start_ticker(&self, fleet: Fleet) {
        let open = Arc::downgrade(&self.open);
        let every = fleet
            .clusters()
            .iter()
            .map(Cluster::activity_heartbeat)
            .min()
            .unwrap_or(Duration::from_secs(30));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                ticks.tick().await;
                let Some(open) = open.upgrade() else { return };
                let keys: Vec<(usize, Arc<str>)> = open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect();
                drop(open);
                for (cluster, id) in keys {
                    if let Some(cluster) = fleet.clusters().get(cluster) {
                        cluster.note_traffic(&id);
                    }
                }
            }
        });
    }
}

/// One open request, stream or WebSocket: counted as open traffic until dropped.
pub struct Heartbeat {
    open: OpenCounts,
    key: (usize, Arc<str>),
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A body passed through: counted, idle-limited, optionally capped.
pub struct Watched<B> {
    inner: B,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    bytes: Counter,
    /// The cap and whether it was broken (the handler answers 413 then).
    limit: Option<(usize, Arc<AtomicBool>)>,
    seen: usize,
    _heartbeat: Option<Heartbeat>,
}

impl<B> Watched<B> {
    pub fn new(inner: B, idle_timeout: Duration, bytes: Counter) -> Watched<B> {
        Watched {
            inner,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            bytes,
            limit: None,
            seen: 0,
            _heartbeat: None,
        }
    }

    /// Fails the body past `max` bytes and raises `broken`.
    pub fn capped(mut self, max: usize, broken: Arc<AtomicBool>) -> Self {
        self.limit = Some((max, broken));
        self
    }

    /// Keeps the heartbeat going until the body ends or is dropped.
    pub fn with_heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self._heartbeat = Some(heartbeat);
        self
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len();
                    this.seen += n;
                    this.bytes.inc_by(n as u64);
                    if let Some((max, broken)) = &this.limit {
                        if this.seen > *max {
                            broken.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(BodyError::TooLarge(*max))));
                        }
                    }
                }
                let deadline = Instant::now() + this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Inner(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Idle(this.idle_timeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One side of an upgraded connection: counts the bytes read from it and when they moved.
pub struct Metered<T> {
    inner: T,
    bytes: Counter,
    /// Milliseconds since `epoch` of the last bytes moved, shared by both sides.
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Metered<T> {
    pub fn new(inner: T, bytes: Counter, last: Arc<AtomicU64>, epoch: Instant) -> Self {
        Metered {
            inner,
            bytes,
            last,
            epoch,
        }
    }

    fn moved(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.bytes.inc_by(n as u64);
            self.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once no bytes have moved for `idle` (as `last` records them).
pub async fn idle_for(last: Arc<AtomicU64>, epoch: Instant, idle: Duration) {
    loop {
        let since = epoch + Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = since + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn counter() -> Counter {
        Counter::default()
    }

    #[tokio::test]
    async fn a_body_passes_through_counted() {
        let bytes = counter();
        let body = Watched::new(
            axum::body::Body::from("hello world"),
            Duration::from_secs(5),
            bytes.clone(),
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello world");
        assert_eq!(bytes.get(), 11);
    }

    #[tokio::test]
    async fn a_body_over_its_cap_fails_and_says_so() {
        let broken = Arc::new(AtomicBool::new(false));
        let body = Watched::new(
            axum::body::Body::from(vec![0u8; 100]),
            Duration::from_secs(5),
            counter(),
        )
        .capped(99, broken.clone());
        let error = body.collect().await.err().unwrap();
        assert!(matches!(error, BodyError::TooLarge(99)), "{error}");
        assert!(broken.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_body_that_moves_nothing_is_cut_after_the_idle_timeout() {
        let (mut sender, body) = {
            let (tx, rx) =
                futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            (tx, http_body_util::StreamBody::new(rx))
        };
        use futures::SinkExt;
        sender
            .send(Ok(Frame::data(Bytes::from("a"))))
            .await
            .unwrap();
        let mut watched = Watched::new(body, Duration::from_millis(200), counter());
        let first = watched.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        let started = Instant::now();
        let error = watched.frame().await.unwrap().err().unwrap();
        assert!(matches!(error, BodyError::Idle(_)), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(sender);
    }
}
