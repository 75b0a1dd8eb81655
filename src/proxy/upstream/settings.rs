//! The server's side of an HTTP/2 upstream connection, watched as its bytes go by for what
//! hyper's client does not tell: the stream limit in each SETTINGS frame
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`) and a GOAWAY, noted in the connection's [`Streams`]
//! (`streams.rs`) for the pool.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::streams::Streams;

/// `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113, 6.5.2).
const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_FRAME: u8 = 0x4;
const SETTINGS_ACK: u8 = 0x1;
const GOAWAY_FRAME: u8 = 0x7;
const FRAME_HEADER_LEN: usize = 9;
const SETTING_LEN: usize = 6;

/// An upstream connection's stream that notes the stream limit in the server's SETTINGS
/// frames, and a GOAWAY, as they go by (a few comparisons per frame; payloads are skipped
/// by length).
pub(super) struct SettingsReader<S> {
    inner: S,
    streams: Arc<Streams>,
    watch: SettingsWatch,
}

impl<S> SettingsReader<S> {
    pub(super) fn new(inner: S, streams: Arc<Streams>) -> Self {
        Self {
            inner,
            streams,
            watch: SettingsWatch::default(),
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
        if !this.watch.gave_up() {
            let learned = this.watch.feed(&buf.filled()[before..]);
            match learned {
                Some(Learned::Limit(limit)) => this.streams.set_limit(limit),
                Some(Learned::Unlimited) => this.streams.set_unlimited(),
                None => {}
            }
            if learned.is_some() || this.watch.gave_up() {
                this.streams.settle();
            }
            if this.watch.going_away() && !this.streams.going_away() {
                this.streams.go_away();
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

/// What a SETTINGS frame from the server said about the stream limit.
#[derive(Debug, PartialEq)]
enum Learned {
    Limit(u32),
    /// The first SETTINGS frame set none: unlimited (RFC 9113, 6.5.2).
    Unlimited,
}

/// Follows the server's frames, in whatever pieces they arrive, for the stream limit and a
/// GOAWAY: each frame's header is read, a SETTINGS payload parameter by parameter (six
/// bytes each), any other payload skipped by its length.
#[derive(Default)]
struct SettingsWatch {
    header: [u8; FRAME_HEADER_LEN],
    header_seen: usize,
    /// Bytes of the current frame's payload still to come.
    payload_left: usize,
    /// The current frame is SETTINGS (not an acknowledgement): its payload is read.
    in_settings: bool,
    setting: [u8; SETTING_LEN],
    setting_seen: usize,
    /// The limit set by the SETTINGS frame being read, if it sets one.
    limit: Option<u32>,
    /// A SETTINGS frame has been read: the connection's preface is over.
    settled: bool,
    /// The server's first frame was not SETTINGS: not HTTP/2 as expected, nothing assumed.
    gave_up: bool,
    /// The server sent GOAWAY.
    going_away: bool,
}

impl SettingsWatch {
    fn gave_up(&self) -> bool {
        self.gave_up
    }

    fn going_away(&self) -> bool {
        self.going_away
    }

    /// Takes the next bytes from the server; returns what the last SETTINGS frame they
    /// complete said about the limit, if anything.
    fn feed(&mut self, mut bytes: &[u8]) -> Option<Learned> {
        let mut learned = None;
        while !bytes.is_empty() && !self.gave_up {
            if self.header_seen < FRAME_HEADER_LEN {
                let n = (FRAME_HEADER_LEN - self.header_seen).min(bytes.len());
                self.header[self.header_seen..self.header_seen + n].copy_from_slice(&bytes[..n]);
                self.header_seen += n;
                bytes = &bytes[n..];
                if self.header_seen < FRAME_HEADER_LEN {
                    break;
                }
                self.start_frame();
            } else {
                let n = self.payload_left.min(bytes.len());
                if self.in_settings {
                    self.read_settings(&bytes[..n]);
                }
                self.payload_left -= n;
                bytes = &bytes[n..];
            }
            if self.header_seen == FRAME_HEADER_LEN && self.payload_left == 0 && !self.gave_up {
                if self.in_settings {
                    learned = match self.limit {
                        Some(limit) => Some(Learned::Limit(limit)),
                        // Later SETTINGS leave out what they do not change.
                        None if !self.settled => Some(Learned::Unlimited),
                        None => learned,
                    };
                    self.settled = true;
                }
                self.header_seen = 0;
            }
        }
        learned
    }

    fn start_frame(&mut self) {
        let [a, b, c, kind, flags, ..] = self.header;
        if kind == GOAWAY_FRAME {
            self.going_away = true;
        }
        if !self.settled && kind != SETTINGS_FRAME {
            self.gave_up = true;
            return;
        }
        self.payload_left = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        self.in_settings = kind == SETTINGS_FRAME && flags & SETTINGS_ACK == 0;
        self.setting_seen = 0;
        self.limit = None;
    }

    fn read_settings(&mut self, payload: &[u8]) {
        for &byte in payload {
            self.setting[self.setting_seen] = byte;
            self.setting_seen += 1;
            if self.setting_seen == SETTING_LEN {
                self.setting_seen = 0;
                let [id0, id1, v0, v1, v2, v3] = self.setting;
                if u16::from_be_bytes([id0, id1]) == MAX_CONCURRENT_STREAMS {
                    self.limit = Some(u32::from_be_bytes([v0, v1, v2, v3]));
                }
            }
        }
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

    /// What the watch learned last from `bytes` fed in pieces of `piece`.
    fn read_in_pieces(bytes: &[u8], piece: usize) -> Option<Learned> {
        let mut watch = SettingsWatch::default();
        let mut last = None;
        for chunk in bytes.chunks(piece) {
            if let Some(found) = watch.feed(chunk) {
                last = Some(found);
            }
        }
        last
    }

    /// A frame of `kind` with `flags` and a payload of `len` bytes.
    fn frame(kind: u8, flags: u8, len: usize) -> Vec<u8> {
        let mut frame = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        frame.resize(FRAME_HEADER_LEN + len, 0xab);
        frame
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
        // A GOAWAY first (a broken server): no limit learned, the watch stops looking.
        let mut bytes = frame(0x7, 0, 8);
        bytes.extend(settings(&[(0x3, 5)]));
        assert_eq!(read_in_pieces(&bytes, 4), None);
    }

    #[test]
    fn a_later_settings_frame_changes_the_limit_between_other_frames() {
        let mut bytes = settings(&[(0x3, 100)]);
        bytes.extend(frame(0x4, SETTINGS_ACK, 0));
        bytes.extend(frame(0x1, 0x4, 300)); // HEADERS
        bytes.extend(frame(0x0, 0, 20_000)); // DATA, larger than a read
        bytes.extend(settings(&[(0x3, 10)]));
        bytes.extend(frame(0x0, 0x1, 5));
        for piece in [1, 7, 9, 100, 16_384] {
            let mut watch = SettingsWatch::default();
            let learned: Vec<Learned> = bytes.chunks(piece).filter_map(|c| watch.feed(c)).collect();
            assert_eq!(
                learned,
                [Learned::Limit(100), Learned::Limit(10)],
                "pieces of {piece}"
            );
        }
        // All in one read: the last word counts.
        assert_eq!(
            read_in_pieces(&bytes, bytes.len()),
            Some(Learned::Limit(10))
        );
    }

    #[test]
    fn a_goaway_is_noticed_after_the_settings_or_in_their_place() {
        let mut bytes = settings(&[(0x3, 2)]);
        bytes.extend(frame(0x0, 0, 40));
        let mut watch = SettingsWatch::default();
        watch.feed(&bytes);
        assert!(!watch.going_away());
        watch.feed(&frame(GOAWAY_FRAME, 0, 8)[..5]);
        assert!(!watch.going_away(), "not before its header is whole");
        watch.feed(&frame(GOAWAY_FRAME, 0, 8)[5..]);
        assert!(watch.going_away());
        let mut first = SettingsWatch::default();
        first.feed(&frame(GOAWAY_FRAME, 0, 8));
        assert!(first.going_away() && first.gave_up());
    }

    #[test]
    fn a_later_settings_frame_without_the_limit_changes_nothing() {
        let mut bytes = settings(&[(0x3, 2)]);
        bytes.extend(frame(0x0, 0, 40));
        bytes.extend(settings(&[(0x4, 1 << 20)]));
        let mut watch = SettingsWatch::default();
        let learned: Vec<Learned> = bytes.chunks(5).filter_map(|c| watch.feed(c)).collect();
        assert_eq!(learned, [Learned::Limit(2)]);
    }
}
