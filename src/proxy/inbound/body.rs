//! The client's request body as azgate reads it: counted, limited to the route's
//! `max_body` while it streams (a missing or lying Content-Length cannot get past it), and
//! cut off when the client stalls for longer than `body_idle_timeout`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::proxy::body::{BoxError, IdleTimer};
use crate::proxy::error::ProxyError;

/// The body went past the route's `max_body`.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the route's limit of {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// The client sent nothing for too long in the middle of its body.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {}", humantime::format_duration(*.0))]
pub struct BodyStalled(pub Duration);

/// The client's connection failed while its body was being read.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body could not be read: {0}")]
pub struct ClientBodyFailed(#[source] hyper::Error);

/// Put in a request's extensions by the client connection, and held by the request's
/// body until the body ends or is dropped: an HTTP/1.1 connection is not parked while
/// hyper may still read the body (the proxy can still be streaming it after the response).
/// `Clone` because extensions must be; azgate moves it, never clones it.
#[derive(Clone)]
pub struct BodyReadGuard(pub Arc<dyn Send + Sync>);

pub struct InboundBody {
    inner: Incoming,
    /// Dropped at the body's end.
    reading: Option<BodyReadGuard>,
    counted: Arc<AtomicU64>,
    seen: u64,
    limit: u64,
    idle_limit: Duration,
    idle: IdleTimer,
}

impl InboundBody {
    pub fn new(
        inner: Incoming,
        reading: Option<BodyReadGuard>,
        counted: Arc<AtomicU64>,
        limit: u64,
        idle_limit: Duration,
    ) -> Self {
        Self {
            inner,
            reading,
            counted,
            seen: 0,
            limit,
            idle_limit,
            idle: IdleTimer::new(idle_limit),
        }
    }
}

impl Body for InboundBody {
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
                    this.seen += data.len() as u64;
                    this.counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                }
                this.idle.data();
                if this.inner.is_end_stream() {
                    this.reading = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                this.reading = None;
                Poll::Ready(Some(Err(Box::new(ClientBodyFailed(err)))))
            }
            Poll::Ready(None) => {
                this.reading = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.expired(cx) {
                    return Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle_limit)))));
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

/// When an error (from reading the body, or from an upstream request that was streaming
/// it) was caused by the client's body, the error azgate answers with.
pub fn client_body_error(err: &(dyn std::error::Error + 'static)) -> Option<ProxyError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return Some(ProxyError::PayloadTooLarge {
                limit: too_large.limit,
            });
        }
        if let Some(stalled) = e.downcast_ref::<BodyStalled>() {
            return Some(ProxyError::RequestTimeout(stalled.to_string()));
        }
        if let Some(failed) = e.downcast_ref::<ClientBodyFailed>() {
            return Some(ProxyError::BadRequest(failed.to_string()));
        }
        source = e.source();
    }
    None
}
