//! The accept loop of the proxy listener, each connection's life (TLS handshake when
//! configured, then HTTP/1.1 or HTTP/2), and the drain that ends it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Sleep;

use super::failures::FailureLog;
use super::tls::{self, TlsTerminator};
use crate::proxy::{ConnInfo, Proxy};
use crate::telemetry::Telemetry;

/// HTTP/2 pings keep idle client connections alive through NATs and detect dead peers.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// TCP keep-alive on accepted sockets, for the same reason over HTTP/1.1.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How the proxy listener serves connections, from `[server]`.
pub struct ListenerSettings {
    /// HTTPS when set.
    pub tls: Option<Arc<TlsTerminator>>,
    /// Bounds the TLS handshake and the wait for each request's headers (slowloris).
    pub header_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// azgate answers heads over this with its own 431; hyper's parser stops at twice it.
    pub max_header_bytes: usize,
    /// Counts open connections.
    pub telemetry: Arc<Telemetry>,
    /// Request heads hyper's parser refused, summarised in the log.
    pub refused_heads: Arc<FailureLog>,
}

/// Connections being served; drained on shutdown.
pub struct Connections {
    graceful: GracefulShutdown,
    tasks: JoinSet<()>,
}

impl Connections {
    /// Asks every connection to finish its in-flight requests and close, waiting at most
    /// `grace`; connections still open after that are closed.
    pub async fn drain(mut self, grace: Duration) {
        let open = self.tasks.len();
        tracing::info!(
            open,
            "draining connections (grace {})",
            humantime::format_duration(grace)
        );
        let finished = tokio::time::timeout(grace, async {
            self.graceful.shutdown().await;
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        match finished {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => {
                tracing::warn!(
                    open = self.tasks.len(),
                    "grace period over; closing the remaining connections"
                );
                self.tasks.abort_all();
            }
        }
    }
}

/// What a connection task needs, shared by all of them.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    proxy: Proxy,
    tls: Option<Arc<TlsTerminator>>,
    handshake_timeout: Duration,
    telemetry: Arc<Telemetry>,
    refused_heads: Arc<FailureLog>,
}

/// Accepts and serves connections until `stopped` turns true; then stops accepting
/// (the listener is dropped) and returns the connections still open.
pub async fn accept_until(
    listener: TcpListener,
    proxy: Proxy,
    settings: ListenerSettings,
    mut stopped: watch::Receiver<bool>,
) -> Connections {
    let head_limit = parser_head_limit(settings.max_header_bytes);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(head_limit)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .max_header_list_size(u32::try_from(head_limit).unwrap_or(u32::MAX))
        .adaptive_window(true);
    let shared = Arc::new(Shared {
        builder,
        proxy,
        tls: settings.tls,
        handshake_timeout: settings.header_timeout,
        telemetry: settings.telemetry,
        refused_heads: settings.refused_heads,
    });
    let limit = Arc::new(Semaphore::new(
        settings.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));

    let mut connections = Connections {
        graceful: GracefulShutdown::new(),
        tasks: JoinSet::new(),
    };
    loop {
        tokio::select! {
            accepted = accept(&listener, &limit) => match accepted {
                Ok((stream, peer, permit)) => {
                    let task = serve(
                        stream,
                        peer,
                        permit,
                        shared.clone(),
                        connections.graceful.watcher(),
                    );
                    connections.tasks.spawn(task);
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.tasks.join_next(), if !connections.tasks.is_empty() => {}
            () = crate::admin::stopped(&mut stopped) => break,
        }
    }
    tracing::info!("stopped accepting connections");
    connections
}

/// Takes a connection slot, then a connection. The slot comes first so that, at the limit,
/// new clients wait in the kernel's listen backlog rather than in azgate's memory.
async fn accept(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = limit
        .clone()
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// One connection, from the TLS handshake (when configured) until it closes. Runs in its
/// own task so a slow handshake never holds up the accept loop; the connection slot is
/// released when it ends.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    watcher: Watcher,
) {
    let _open = shared.telemetry.connection();
    // Small responses must not wait for Nagle's algorithm.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {err}");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(err) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, "cannot set TCP keep-alive: {err}");
    }
    let Some(terminator) = &shared.tls else {
        let stream = FirstByteDeadline::new(stream, shared.handshake_timeout);
        return serve_http(
            TokioIo::new(stream),
            ConnInfo::plain(peer),
            &shared,
            watcher,
        )
        .await;
    };
    let handshake = terminator.acceptor().accept(stream);
    let stream = match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            terminator.handshake_failed(peer, &err);
            return;
        }
        Err(_) => {
            terminator.handshake_timed_out(peer);
            return;
        }
    };
    let conn = ConnInfo {
        peer,
        tls: true,
        client_subject: tls::client_subject(stream.get_ref().1),
    };
    let stream = FirstByteDeadline::new(stream, shared.handshake_timeout);
    serve_http(TokioIo::new(stream), conn, &shared, watcher).await;
}

/// A connection that sends nothing at all is closed after the header timeout. hyper's own
/// header timeout starts only once it knows the protocol, which takes a first byte (the
/// auto builder reads the preface to choose HTTP/1.1 or HTTP/2), so without this a silent
/// client would hold a connection slot forever.
struct FirstByteDeadline<S> {
    inner: S,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FirstByteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(_) if buf.filled().len() > before => self.deadline = None,
            Poll::Pending => {
                if let Some(deadline) = &mut self.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client sent nothing within the header timeout",
                    )));
                }
            }
            Poll::Ready(_) => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// HTTP/1.1 or HTTP/2 (by ALPN, or by the client's preface without TLS) until the
/// connection closes or the drain closes it.
async fn serve_http<I>(io: I, conn: ConnInfo, shared: &Shared, watcher: Watcher)
where
    I: Read + Write + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let proxy = shared.proxy.clone();
    let conn = Arc::new(conn);
    let service = service_fn(move |request| {
        let (proxy, conn) = (proxy.clone(), conn.clone());
        async move { Ok::<_, Infallible>(proxy.handle(request, &conn).await) }
    });
    let connection = shared.builder.serve_connection(io, service);
    if let Err(err) = watcher.watch(connection).await {
        // hyper answered 431 itself (HTTP/1.1 only: HTTP/2 refuses per stream, unseen).
        let head_too_large = err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large);
        if head_too_large {
            shared.telemetry.record_refused_head(431);
            shared.refused_heads.record("headers_too_large", peer, &err);
        } else {
            tracing::debug!(%peer, "connection ended: {err}");
        }
    }
}

/// The request head size at which hyper's parser refuses a request itself (a plain 431,
/// and over HTTP/1.1 a closed connection), before azgate sees it. Twice azgate's own limit,
/// so heads up to twice `server.max_header_bytes` still get azgate's JSON 431 with an
/// access-log line, while what a connection can buffer for a head stays bounded (hyper's
/// default is ~400 KiB for HTTP/1.1). hyper's HTTP/1.1 buffer cannot be under 8 KiB.
fn parser_head_limit(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(2).max(8192)
}
