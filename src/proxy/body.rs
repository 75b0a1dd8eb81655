//! Body types of the request path. Bodies are streamed frame by frame and never collected:
//! `ResponseBody` counts response
//! bytes on their way to the client, bounds idle pauses, and writes the access log line
//! when the response is finished (or abandoned by the client).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::{Instant, Sleep};

use super::access_log::AccessLog;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Any body on the request path, type-erased.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Wraps any body into a `ProxyBody`.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A body holding `guard` for as long as it lives: what the guard stands for (a request
/// counted busy, a stream on an upstream connection) ends when the body is finished and
/// dropped, or abandoned.
pub struct Guarded<B, G> {
    inner: B,
    guard: G,
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self { inner, guard }
    }

    pub fn guard(&self) -> &G {
        &self.guard
    }
}

impl<B: Body + Unpin, G: Unpin> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: std::fmt::Debug, G> std::fmt::Debug for Guarded<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// The upstream went quiet in the middle of a response body for longer than the route's
/// timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {} in the middle of the response body", humantime::format_duration(*.0))]
pub struct BodyIdleTimeout(pub Duration);

/// The body sent to the client.
pub struct ResponseBody {
    inner: ProxyBody,
    idle: Option<IdleTimer>,
    bytes: u64,
    finished: bool,
    failed: bool,
    log: Option<AccessLog>,
}

/// Bounds a pause in a body. The clock runs only while azgate waits for the other side,
/// not while azgate itself is not reading (backpressure), and the timer is created on the
/// first wait: most small bodies arrive whole and never need one.
pub(crate) struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl IdleTimer {
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            waiting: false,
        }
    }

    /// Data arrived: the next wait starts a new pause.
    pub(crate) fn data(&mut self) {
        self.waiting = false;
    }

    /// Called when the body is pending: starts the clock on the first wait after data,
    /// then reports whether the pause ran out.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.limit;
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if !self.waiting {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.waiting = true;
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl ResponseBody {
    /// `idle_limit` bounds the pause between two frames (upstream bodies only).
    pub fn new(inner: ProxyBody, idle_limit: Option<Duration>, log: AccessLog) -> Self {
        let idle = idle_limit.map(IdleTimer::new);
        Self {
            inner,
            idle,
            bytes: 0,
            finished: false,
            failed: false,
            log: Some(log),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if let Some(idle) = &mut this.idle {
                    idle.data();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.failed = true;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(idle) = &mut this.idle
                    && idle.expired(cx)
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(idle.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            let complete = !self.failed && (self.finished || self.inner.is_end_stream());
            log.emit(self.bytes, complete);
        }
    }
}

/// Chunks already read, then the rest of the body.
pub struct Prefixed {
    prefix: VecDeque<Bytes>,
    rest: ProxyBody,
}

impl Prefixed {
    pub fn new(prefix: VecDeque<Bytes>, rest: ProxyBody) -> Self {
        Self { prefix, rest }
    }
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|c| c.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}
