//! Read-side deadlines of a client connection, between accept (or the TLS handshake) and
//! hyper: how long a connection may wait for a request, and how long a request head may
//! take. Wraps the stream that `connection.rs` hands to hyper.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::connection::{Activity, HTTP2};

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
pub(super) struct Deadlines<S> {
    inner: S,
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
            activity,
            header_timeout,
            idle_timeout,
            waiting_since: Instant::now(),
            head_since: None,
            finished: 0,
            first: true,
            sleep: None,
        }
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
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got_data = matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before;
        let deadline = self.deadline(got_data, cx);
        if polled.is_ready() {
            return polled;
        }
        let Some(deadline) = deadline else {
            return polled;
        };
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
        if sleep.as_mut().poll(cx).is_ready() {
            let what = if self.head_since.is_some() {
                "the client did not finish its request head within the header timeout"
            } else {
                "the connection sat idle past its timeout"
            };
            return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what)));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deadlines<S> {
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
