//! Request bodies that can be sent more than once. A body up to the route's buffer limit
//! is read fully before the first attempt and replayed byte for byte (after an upstream
//! 401 with a refreshed token, and for retries); a larger body streams straight through
//! once and its request is not replayed. Memory stays bounded by the limit per request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::{self, BoxError, Prefixed, ProxyBody};
use super::error::ProxyError;
use super::inbound::body::client_body_error;

/// A request body, held for replay or passed through once.
pub enum ReplayBody {
    /// Read in full; every attempt sends the same bytes (and trailers).
    Buffered {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Too large to hold: streams on the first attempt only.
    Streaming(Option<ProxyBody>),
}

impl ReplayBody {
    /// Reads the client's body up to `limit` bytes.
    pub async fn read(mut incoming: ProxyBody, limit: u64) -> Result<Self, ProxyError> {
        if incoming.is_end_stream() {
            return Ok(ReplayBody::Buffered {
                data: Bytes::new(),
                trailers: None,
            });
        }
        // A declared length above the limit streams without reading a byte first.
        if incoming.size_hint().lower() > limit {
            return Ok(ReplayBody::Streaming(Some(incoming)));
        }
        let mut chunks: VecDeque<Bytes> = VecDeque::new();
        let mut total: u64 = 0;
        let mut trailers = None;
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                client_body_error(e.as_ref()).unwrap_or_else(|| {
                    ProxyError::BadRequest(format!("the request body could not be read: {e}"))
                })
            })?;
            match frame.into_data() {
                Ok(data) => {
                    total += data.len() as u64;
                    chunks.push_back(data);
                    if total > limit {
                        // Too big after all: send what was read, then the rest, once.
                        return Ok(ReplayBody::Streaming(Some(body::boxed(Prefixed::new(
                            chunks, incoming,
                        )))));
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        let mut data = BytesMut::with_capacity(total as usize);
        for chunk in chunks {
            data.extend_from_slice(&chunk);
        }
        Ok(ReplayBody::Buffered {
            data: data.freeze(),
            trailers,
        })
    }

    /// Whether another attempt can send this body again.
    pub fn replayable(&self) -> bool {
        matches!(self, ReplayBody::Buffered { .. })
    }

    /// The body for the next attempt; `None` if a streamed body was already sent.
    pub fn attempt(&mut self) -> Option<ProxyBody> {
        match self {
            ReplayBody::Buffered { data, trailers } => Some(body::boxed(Replay {
                data: (!data.is_empty()).then(|| data.clone()),
                trailers: trailers.clone(),
            })),
            ReplayBody::Streaming(body) => body.take(),
        }
    }
}

/// One pass over buffered bytes (sharing them, not copying) and their trailers.
struct Replay {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
