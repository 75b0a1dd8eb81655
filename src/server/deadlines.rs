//! Read-side deadlines of a client connection, between accept (or the TLS handshake) and
//! hyper: how long a connection may wait for a request, and how long a request head may
//! take; and the moment an HTTP/1.1 connection may be parked (`http1.rs`). Wraps the
//! stream that `connection.rs` hands to hyper, and keeps it between hyper connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::connection::{Activity, HTTP2};

/// How long an HTTP/1.1 connection waits for its next request before hyper lets it go.
/// Parking and unparking cost about as much as a request (hyper's connection and buffers
/// are built again): a client sending request after request never waits this long, while
/// an idle connection gives its buffers back almost at once.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// The deadlines of an HTTP/1.1 connection (and of any connection before its first
/// request), kept on its reads, because hyper's header timeout starts when the connection
/// turns idle and so cannot tell a keep-alive wait from a slow request head:
///
/// - waiting for a request: `header_timeout` for the first one on a connection,
///   `idle_timeout` between keep-alive requests;
/// - a request head, from its first byte: `header_timeout` (slowloris).
///
/// While a request is busy no deadline runs (the body has its own idle limit). Once the
/// connection is known to be HTTP/2 these stop; its idleness is handled by GOAWAY.
///
/// It also tells hyper's HTTP/1.1 connection when to let go of the stream (`parkable`):
/// once an exchange is over, hyper has flushed all it wrote, no request head has begun and
/// the socket has had nothing to read for `PARK_AFTER`, a read returns end-of-stream. hyper
/// then ends that connection cleanly (or, with part of a pipelined head in its buffer,
/// with an incomplete-message error) and hands back the stream and its unread bytes, and
/// the wait for the next request holds none of its buffers.
pub(super) struct Deadlines<S> {
    inner: S,
    /// Bytes a previous hyper connection (or the protocol sniff) read but did not use,
    /// returned before the stream's own.
    unread: Bytes,
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// When the current wait for a request began.
    waiting_since: Instant,
    /// When the current request head's first byte arrived.
    head_since: Option<Instant>,
    /// `activity.finished` when the current wait began.
    finished: u64,
    /// No request has been served yet.
    first: bool,
    sleep: Option<Pin<Box<Sleep>>>,
    /// The reader is hyper's HTTP/1.1 connection, which may be let go between requests.
    pub(super) parkable: bool,
    /// A read returned the end-of-stream that lets hyper go.
    pub(super) parked: bool,
    /// Written since the last completed flush: hyper may still hold bytes to send.
    unflushed: bool,
}

impl<S> Deadlines<S> {
    pub(super) fn new(
        inner: S,
        activity: Arc<Activity>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            inner,
            unread: Bytes::new(),
            activity,
            header_timeout,
            idle_timeout,
            waiting_since: Instant::now(),
            head_since: None,
            finished: 0,
            first: true,
            sleep: None,
            parkable: false,
            parked: false,
            unflushed: false,
        }
    }

    /// Returns `bytes` before the stream's own on the next reads.
    pub(super) fn unread(&mut self, bytes: Bytes) {
        debug_assert!(self.unread.is_empty());
        self.unread = bytes;
    }

    /// Closes the stream the way hyper would after a clean end (TLS close_notify, FIN).
    pub(super) async fn shut_down(&mut self)
    where
        S: AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        if let Err(err) = self.inner.shutdown().await {
            tracing::debug!("closing a client connection: {err}");
        }
    }

    /// Resolves when the stream has something to read (a new connection's first bytes, a
    /// parked connection's next request), or fails when the connection's deadline passes
    /// first. Reads nothing, so the wait holds no buffer.
    pub(super) fn poll_request(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>
    where
        S: ReadReady,
    {
        if !self.unread.is_empty() || self.inner.poll_read_ready(cx)?.is_ready() {
            return Poll::Ready(Ok(()));
        }
        match self.deadline(false, cx) {
            Some(deadline) => match self.poll_timer(deadline, cx) {
                Poll::Ready(()) => Poll::Ready(Err(self.timed_out())),
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }

    /// Polls the timer for `deadline`: ready once it has passed.
    fn poll_timer(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }

    fn timed_out(&self) -> std::io::Error {
        let what = if self.head_since.is_some() {
            "the client did not finish its request head within the header timeout"
        } else {
            "the connection sat idle past its timeout"
        };
        std::io::Error::new(std::io::ErrorKind::TimedOut, what)
    }

    /// The deadline now in force, if any, after a read that returned `got_data`.
    fn deadline(&mut self, got_data: bool, cx: &Context<'_>) -> Option<Instant> {
        if self.activity.protocol() == HTTP2 {
            return None;
        }
        if self.activity.busy.load(Ordering::Acquire) > 0 {
            self.activity.reader.register(cx.waker());
            // Turned idle meanwhile: the wake may have gone to the previous waker.
            if self.activity.busy.load(Ordering::Acquire) > 0 {
                return None;
            }
        }
        let finished = self.activity.finished.load(Ordering::Acquire);
        if finished != self.finished {
            // A response finished since the last look: a new keep-alive wait begins.
            self.finished = finished;
            self.first = false;
            self.waiting_since = Instant::now();
            self.head_since = None;
        }
        if got_data && self.head_since.is_none() {
            self.head_since = Some(Instant::now());
        }
        Some(match self.head_since {
            Some(head) => head + self.header_timeout,
            None if self.first => self.waiting_since + self.header_timeout,
            None => self.waiting_since + self.idle_timeout,
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deadlines<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = if self.unread.is_empty() {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        } else {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            if self.unread.is_empty() {
                // An emptied `Bytes` still holds its buffer (the sniff's is 4 KiB).
                self.unread = Bytes::new();
            }
            Poll::Ready(Ok(()))
        };
        let got_data = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        let deadline = self.deadline(got_data, cx);
        if polled.is_ready() {
            return polled;
        }
        let Some(deadline) = deadline else {
            return polled;
        };
        // Between requests, with nothing of hyper's left to send, and quiet for a while:
        // let hyper go (see above). The same timer serves both deadlines.
        let park_at =
            (self.parkable && !self.first && self.head_since.is_none() && !self.unflushed)
                .then(|| self.waiting_since + PARK_AFTER)
                .filter(|park_at| *park_at < deadline);
        match self.poll_timer(park_at.unwrap_or(deadline), cx) {
            Poll::Ready(()) if park_at.is_some() => {
                self.parked = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(()) => Poll::Ready(Err(self.timed_out())),
            Poll::Pending => polled,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // hyper flushes after writing all it holds: a completed flush means it holds none.
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.unflushed = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client stream that can tell it has bytes to read without reading them.
pub(super) trait ReadReady {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// rustls decrypts all it reads from the socket at once, so the next bytes are either
/// plaintext it holds (a client's first request often arrives with the handshake's last
/// message) or still in the socket.
impl ReadReady for Box<tokio_rustls::server::TlsStream<TcpStream>> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let (socket, tls) = self.get_ref();
        // `wants_read` is false while decrypted bytes wait (or the peer said close_notify).
        if !tls.wants_read() {
            return Poll::Ready(Ok(()));
        }
        socket.poll_read_ready(cx)
    }
}
