//! How many requests one HTTP/2 upstream connection may carry at once, so the pool opens
//! another connection instead of piling more on a full one.
//!
//! A server says how many streams it allows (`SETTINGS_MAX_CONCURRENT_STREAMS`, 100 for
//! most, some fewer) in the SETTINGS frame that must open its side of the connection.
//! hyper's client keeps that to itself: a request beyond the limit then either waits in
//! the connection until a stream ends (a long download holds its place for minutes) or,
//! sent before the client saw the SETTINGS, is refused. So [`SettingsReader`] reads the
//! limit from that first frame as the bytes go by, and each request takes a
//! [`StreamSlot`] of its connection's [`Streams`] for as long as its response body lives.
//! A limit the server changes in a later SETTINGS frame is not followed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection allows until its server's SETTINGS arrive: hyper's client sends no
/// more before it knows (its `initial_max_send_streams`), and RFC 9113 asks servers to
/// allow at least this many.
const ASSUMED_LIMIT: usize = 100;

/// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113, 6.5.2).
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_FRAME: u8 = 0x4;
const FRAME_HEADER_LEN: usize = 9;
const SETTING_LEN: usize = 6;

/// One HTTP/2 connection's streams: how many requests it carries and how many it may.
pub(super) struct Streams {
    open: AtomicUsize,
    limit: AtomicUsize,
}

impl Streams {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(ASSUMED_LIMIT),
        })
    }

    /// A stream for one request, unless the connection has none to spare.
    pub(super) fn take(self: &Arc<Self>) -> Option<StreamSlot> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()
            .map(|_| StreamSlot(self.clone()))
    }

    /// A stream for one request whether or not the connection has one to spare (the
    /// first request on a connection opened for it).
    pub(super) fn force(self: &Arc<Self>) -> StreamSlot {
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamSlot(self.clone())
    }

    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Whether [`take`](Self::take) would give a stream now.
    pub(super) fn has_room(&self) -> bool {
        self.open() < self.limit.load(Ordering::Relaxed)
    }

    fn set_limit(&self, limit: u32) {
        // A server at 0 takes no streams for now; counted as 1 so that the pool does not
        // open a connection per request meanwhile.
        let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
        self.limit.store(limit, Ordering::Relaxed);
    }

    fn set_unlimited(&self) {
        self.limit.store(usize::MAX, Ordering::Relaxed);
    }
}

/// One request's place on an HTTP/2 connection, given back when dropped.
pub(super) struct StreamSlot(Arc<Streams>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An upstream response's body; over HTTP/2 it holds its request's stream until dropped.
pub struct UpstreamBody {
    incoming: Incoming,
    _stream: Option<StreamSlot>,
}

impl UpstreamBody {
    pub(super) fn new(incoming: Incoming, stream: Option<StreamSlot>) -> Self {
        Self {
            incoming,
            _stream: stream,
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("incoming", &self.incoming)
            .field("holds_a_stream", &self._stream.is_some())
            .finish()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.incoming).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// An upstream connection's stream that notes the stream limit in the server's first
/// frame. Past that frame each read costs one comparison.
pub(super) struct SettingsReader<S> {
    inner: S,
    streams: Arc<Streams>,
    first_frame: FirstFrame,
}

impl<S> SettingsReader<S> {
    pub(super) fn new(inner: S, streams: Arc<Streams>) -> Self {
        Self {
            inner,
            streams,
            first_frame: FirstFrame::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SettingsReader<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.first_frame.done() {
            match this.first_frame.feed(&buf.filled()[before..]) {
                Some(Learned::Limit(limit)) => this.streams.set_limit(limit),
                Some(Learned::Unlimited) => this.streams.set_unlimited(),
                None => {}
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SettingsReader<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the server's first frame said.
#[derive(Debug, PartialEq)]
enum Learned {
    Limit(u32),
    /// SETTINGS without a limit: unlimited (RFC 9113, 6.5.2).
    Unlimited,
}

/// Reads the server's first frame, in whatever pieces it arrives: its header, then (for
/// SETTINGS) its parameters, six bytes each.
#[derive(Default)]
struct FirstFrame {
    header: [u8; FRAME_HEADER_LEN],
    /// Bytes of the frame seen so far, header included.
    seen: usize,
    setting: [u8; SETTING_LEN],
    limit: Option<u32>,
    done: bool,
}

impl FirstFrame {
    fn done(&self) -> bool {
        self.done
    }

    /// Takes the next bytes of the stream; once a SETTINGS frame has been read whole,
    /// returns what it said.
    fn feed(&mut self, bytes: &[u8]) -> Option<Learned> {
        for &byte in bytes {
            if self.seen < FRAME_HEADER_LEN {
                self.header[self.seen] = byte;
                self.seen += 1;
                if self.seen == FRAME_HEADER_LEN && self.header[3] != SETTINGS_FRAME {
                    // Not a server preface: nothing to learn, nothing assumed.
                    self.done = true;
                    return None;
                }
            } else {
                let at = (self.seen - FRAME_HEADER_LEN) % SETTING_LEN;
                self.setting[at] = byte;
                self.seen += 1;
                if at == SETTING_LEN - 1 {
                    let [id0, id1, v0, v1, v2, v3] = self.setting;
                    if u16::from_be_bytes([id0, id1]) == MAX_CONCURRENT_STREAMS {
                        self.limit = Some(u32::from_be_bytes([v0, v1, v2, v3]));
                    }
                }
            }
            if self.seen >= FRAME_HEADER_LEN && self.seen - FRAME_HEADER_LEN == self.length() {
                self.done = true;
                return Some(self.limit.map_or(Learned::Unlimited, Learned::Limit));
            }
        }
        None
    }

    fn length(&self) -> usize {
        let [a, b, c, ..] = self.header;
        usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SETTINGS frame with `params` (id, value).
    fn settings(params: &[(u16, u32)]) -> Vec<u8> {
        let len = params.len() * SETTING_LEN;
        let mut frame = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            0x4,
            0,
            0,
            0,
            0,
            0,
        ];
        for (id, value) in params {
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&value.to_be_bytes());
        }
        frame
    }

    fn read_in_pieces(bytes: &[u8], piece: usize) -> Option<Learned> {
        let mut first = FirstFrame::default();
        for chunk in bytes.chunks(piece) {
            if let Some(found) = first.feed(chunk) {
                assert!(first.done());
                return Some(found);
            }
            if first.done() {
                return None;
            }
        }
        None
    }

    #[test]
    fn the_limit_is_read_from_the_first_settings_frame_in_any_pieces() {
        // Initial window 1 MiB, max streams 2, max frame size 16384; then the next frame.
        let mut bytes = settings(&[(0x4, 1 << 20), (0x3, 2), (0x5, 16384)]);
        bytes.extend_from_slice(&[0, 0, 4, 0x8, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        for piece in [1, 2, 5, 6, 7, 9, 10, 64] {
            assert_eq!(
                read_in_pieces(&bytes, piece),
                Some(Learned::Limit(2)),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn settings_without_a_limit_or_empty_say_unlimited() {
        let unlimited = Some(Learned::Unlimited);
        assert_eq!(read_in_pieces(&settings(&[(0x4, 65535)]), 3), unlimited);
        assert_eq!(read_in_pieces(&settings(&[]), 4), unlimited);
    }

    #[test]
    fn a_first_frame_that_is_not_settings_teaches_nothing() {
        // A GOAWAY first (a broken server): no limit learned, the reader stops looking.
        let goaway = [0, 0, 8, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(read_in_pieces(&goaway, 4), None);
    }

    #[test]
    fn a_slot_is_taken_up_to_the_limit_and_given_back_on_drop() {
        let streams = Streams::new();
        streams.set_limit(2);
        let first = streams.take().unwrap();
        let second = streams.take().unwrap();
        assert!(streams.take().is_none());
        drop(first);
        assert_eq!(streams.open(), 1);
        let third = streams.take().unwrap();
        let forced = streams.force();
        assert_eq!(streams.open(), 3);
        drop((second, third, forced));
        assert_eq!(streams.open(), 0);
        // 0 (no streams for now) counts as one.
        streams.set_limit(0);
        let only = streams.take().unwrap();
        assert!(streams.take().is_none());
        drop(only);
    }
}
