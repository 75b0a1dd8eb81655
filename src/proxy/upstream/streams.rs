//! How many requests one HTTP/2 upstream connection may carry at once, so the pool opens
//! another connection instead of piling more on a full one.
//!
//! A server says how many streams it allows (`SETTINGS_MAX_CONCURRENT_STREAMS`, 100 for
//! most, some fewer) in the SETTINGS frame that must open its side of the connection.
//! hyper's client keeps that to itself: a request beyond the limit then either waits in
//! the connection until a stream ends (a long download holds its place for minutes) or,
//! sent before the client saw the SETTINGS, is refused. So `settings.rs` reads the limit
//! from the server's SETTINGS frames as the bytes go by (the first one, and any later one
//! that changes it) into the connection's [`Streams`], the pool lets nobody share a new
//! connection before its first SETTINGS frame has arrived, and each request takes a
//! [`StreamSlot`] of them for as long as its response body lives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// What a connection is taken to allow if its server's first frame is not SETTINGS: what
/// hyper's client assumes before it knows (its `initial_max_send_streams`), and RFC 9113
/// asks servers to allow at least this many.
const ASSUMED_LIMIT: usize = 100;

/// One HTTP/2 connection's streams: how many requests it carries and how many it may.
pub(super) struct Streams {
    open: AtomicUsize,
    limit: AtomicUsize,
    /// The server's first frame has been read (or the connection is gone).
    settled: AtomicBool,
    on_settled: Notify,
    /// The server sent GOAWAY: the connection takes no new requests.
    going_away: AtomicBool,
}

impl Streams {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(ASSUMED_LIMIT),
            settled: AtomicBool::new(false),
            on_settled: Notify::new(),
            going_away: AtomicBool::new(false),
        })
    }

    /// Waits until the server's first frame has been read (or the connection has ended).
    pub(super) async fn settled(&self) {
        loop {
            let notified = self.on_settled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.settled.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// The server's first frame has been read, or the connection has ended.
    pub(super) fn settle(&self) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.on_settled.notify_waiters();
        }
    }

    /// A stream for one request, unless the connection has none to spare (or is going
    /// away).
    pub(super) fn take(self: &Arc<Self>) -> Option<StreamSlot> {
        if self.going_away() {
            return None;
        }
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

    pub(super) fn going_away(&self) -> bool {
        self.going_away.load(Ordering::Relaxed)
    }

    pub(super) fn set_limit(&self, limit: u32) {
        // A server at 0 takes no streams for now; counted as 1 so that the pool does not
        // open a connection per request meanwhile.
        let limit = usize::try_from(limit).unwrap_or(usize::MAX).max(1);
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub(super) fn set_unlimited(&self) {
        self.limit.store(usize::MAX, Ordering::Relaxed);
    }

    /// The server has sent GOAWAY.
    pub(super) fn go_away(&self) {
        self.going_away.store(true, Ordering::Relaxed);
    }
}

/// One request's place on an HTTP/2 connection, given back when dropped.
pub struct StreamSlot(Arc<Streams>);

impl StreamSlot {
    /// The connection's server has sent GOAWAY.
    pub(super) fn going_away(&self) -> bool {
        self.0.going_away()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_going_away_gives_no_stream() {
        let streams = Streams::new();
        let slot = streams.take().unwrap();
        streams.go_away();
        assert!(slot.going_away());
        assert!(streams.take().is_none());
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
