//! The HTTP server loop: connections accepted up to a cap, each served by
//! hyper (HTTP/1.1 and HTTP/2) with the timeouts a proxy would use, and
//! shut down gracefully.
//!
//! Invariants it keeps:
//! - at most `max_connections` connections are open; one more is answered
//!   `503` (problem+json, `Retry-After`) and closed at once;
//! - a connection that has sent part of a request head, or nothing at all
//!   yet, is closed `header_read_timeout` after its first byte (or after it
//!   opened);
//! - a request body must arrive within `body_read_timeout` of its head
//!   (`408` otherwise, however slowly it trickles);
//! - a keep-alive connection with no request running is closed after
//!   `idle_timeout` (longer than a proxy's, so the proxy closes first);
//! - a request that is running (a long-poll waiting for events) is never cut
//!   by these timeouts;
//! - on shutdown, no new connection is accepted and the open ones finish
//!   their requests.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The connection limits of `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` turns true, then lets the
/// open connections finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None::<Duration>);
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        metrics::gauge!("http_connections_open").increment(1.0);
        let state = Arc::new(ConnState::new());
        let io = TokioIo::new(Deadlined::new(stream, state.clone(), limits));
        let app = app.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let request = state.start_request();
            let deadline = Instant::now() + limits.body_read_timeout;
            let mut req = req.map(|body| Body::new(DeadlineBody::new(body, deadline)));
            req.extensions_mut().insert(ConnectInfo(peer));
            super::routes::canonicalize(&mut req);
            let app = app.clone();
            async move {
                let response = app.oneshot(req).await;
                drop(request);
                response
            }
        });
        let conn = builder.serve_connection_with_upgrades(io, service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            metrics::gauge!("http_connections_open").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers a connection beyond the cap with a plain HTTP/1.1 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"type":"https://altinn.no/events/problems/service-unavailable","title":"Service unavailable","status":503,"detail":"Too many connections to this instance; retry."}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// What the timeouts of one connection look at.
struct ConnState {
    running: AtomicUsize,
    times: Mutex<Times>,
    /// The read that waits without a deadline while a request runs: woken
    /// when the last request ends, so that it arms the idle timeout (else a
    /// read polled during a request would wait for bytes for ever).
    reader: Mutex<Option<std::task::Waker>>,
}

struct Times {
    /// When the connection last had no request running (opened, or its last
    /// request ended).
    idle_since: Instant,
    /// Whether a request has ended on this connection (then it is a
    /// keep-alive connection, with the idle timeout).
    served: bool,
    /// The first byte read since then: a request head is arriving.
    first_byte: Option<Instant>,
}

/// Counts a request as running until dropped.
struct Running(Arc<ConnState>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            {
                let mut t = self.0.times.lock().expect("connection times lock");
                t.idle_since = Instant::now();
                t.served = true;
                t.first_byte = None;
            }
            if let Some(reader) = self.0.reader.lock().expect("connection reader lock").take() {
                reader.wake();
            }
        }
    }
}

impl ConnState {
    fn new() -> Self {
        Self {
            running: AtomicUsize::new(0),
            times: Mutex::new(Times { idle_since: Instant::now(), served: false, first_byte: None }),
            reader: Mutex::new(None),
        }
    }

    fn start_request(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.times.lock().expect("connection times lock").first_byte = None;
        Running(self.clone())
    }

    /// When the connection must be closed if nothing changes; `None` while a
    /// request runs.
    fn deadline(&self, limits: &ServerLimits) -> Option<Instant> {
        if self.running.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let t = self.times.lock().expect("connection times lock");
        Some(match t.first_byte {
            Some(first) => first + limits.header_read_timeout,
            None if t.served => t.idle_since + limits.idle_timeout,
            None => t.idle_since + limits.header_read_timeout,
        })
    }

    fn read_bytes(&self) {
        if self.running.load(Ordering::SeqCst) == 0 {
            let mut t = self.times.lock().expect("connection times lock");
            t.first_byte.get_or_insert_with(Instant::now);
        }
    }
}

/// A connection's stream, closed (as a read error) when its deadline passes.
struct Deadlined {
    stream: TcpStream,
    state: Arc<ConnState>,
    limits: ServerLimits,
    sleep: Pin<Box<Sleep>>,
}

impl Deadlined {
    fn new(stream: TcpStream, state: Arc<ConnState>, limits: ServerLimits) -> Self {
        Self { stream, state, limits, sleep: Box::pin(tokio::time::sleep(Duration::ZERO)) }
    }
}

impl AsyncRead for Deadlined {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let deadline = this.state.deadline(&this.limits);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.read_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if deadline.is_none() {
                    *this.state.reader.lock().expect("connection reader lock") = Some(cx.waker().clone());
                    // The request may have ended since the deadline was read.
                    if this.state.running.load(Ordering::SeqCst) == 0 {
                        cx.waker().wake_by_ref();
                    }
                }
                if let Some(deadline) = deadline {
                    if this.sleep.deadline() != deadline {
                        this.sleep.as_mut().reset(deadline);
                    }
                    if this.sleep.as_mut().poll(cx).is_ready() {
                        metrics::counter!("http_connections_timed_out_total").increment(1);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection timed out")));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Deadlined {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The request body did not arrive within `server.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Incoming,
    sleep: Pin<Box<Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, deadline: Instant) -> Self {
        Self { inner, sleep: Box::pin(tokio::time::sleep_until(deadline)) }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
