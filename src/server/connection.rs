//! One client connection after accept (and the TLS handshake): HTTP/1.1 (`http1.rs`) or
//! HTTP/2, told apart by the first bytes as hyper-util's auto builder does; the deadlines
//! hyper does not keep the way azgate needs them (`deadlines.rs`: the wait for a request,
//! the request head, keep-alive idle), and the connection's part in the drain (go away
//! when the server drains, stop when cut).
//!
//! Nothing of hyper's is built until the first bytes arrive, and HTTP/1.1 connections
//! drop it again between requests: an idle connection costs its task and socket only.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use http::{HeaderValue, Request, Response, Version, header};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::{Notify, watch};
use tokio_util::task::TaskTracker;

use super::deadlines::{Deadlines, ReadReady};
use super::lifecycle::{Phase, reached};
use super::listener::Shared;
use super::woken::WhenWoken;
use crate::proxy::body::Guarded;
use crate::proxy::{BodyReadGuard, ConnInfo, ResponseBody};

/// What the service answers a request with. Boxed: hyper's HTTP/1.1 connection can only
/// hand back its stream (`http1.rs`) with a service whose future is `Unpin`.
pub(super) type Answer =
    Pin<Box<dyn Future<Output = Result<Response<Tracked<ResponseBody>>, Infallible>> + Send>>;

/// The first bytes of an HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection until it closes, the drain closes it, or the server is cut (the
/// caller drops this future then).
pub(super) async fn serve_http<S>(
    stream: S,
    conn: ConnInfo,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
) where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let activity = Arc::new(Activity::default());
    let mut io = Deadlines::new(
        stream,
        activity.clone(),
        shared.handshake_timeout,
        shared.idle_timeout,
    );
    let service = {
        let proxy = shared.proxy.clone();
        let conn = Arc::new(conn);
        let (activity, phase) = (activity.clone(), phase.clone());
        service_fn(move |mut request: Request<Incoming>| {
            let (proxy, conn, phase) = (proxy.clone(), conn.clone(), phase.clone());
            let http1 = request.version() < Version::HTTP_2;
            let busy = activity.begin(request.version());
            // hyper reads an HTTP/1.1 body for as long as the proxy does, which may outlast
            // the response: the connection is busy (not to be parked) until it ends.
            if http1 && !request.body().is_end_stream() {
                let reading = activity.reading();
                request
                    .extensions_mut()
                    .insert(BodyReadGuard(Arc::new(reading)));
            }
            Box::pin(proxy.handle(request, conn, move |mut response| {
                // From SIGTERM on, every HTTP/1.1 response tells the client to reconnect
                // (to a replica that stays). The connection loop also asks hyper to close,
                // but a response built at once may be written before that lands.
                if http1 && *phase.borrow() >= Phase::Draining {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response.map(|inner| Guarded::new(inner, busy)))
            })) as Answer
        })
    };
    let sniffed = {
        let _idle = shared.telemetry.idle_connection();
        tokio::select! {
            sniffed = sniff(&mut io) => sniffed,
            // Closing before the first request: nothing to finish.
            () = go_away_due(&mut phase, &activity, None) => return,
        }
    };
    let h2 = match sniffed {
        Ok(Some(h2)) => h2,
        // Closed before sending anything.
        Ok(None) => return,
        Err(err) => return connection_failed(shared, peer, &err),
    };
    if !h2 {
        return super::http1::serve(io, service, shared, peer, phase, &activity).await;
    }
    // Boxed: the task keeps its (small) size for the connection's whole life.
    let connection = Box::pin(shared.http2.serve_connection(TokioIo::new(io), service));
    let mut connection = connection;
    let mut asked_to_go = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    connection_failed(shared, peer, &err);
                }
                return;
            }
            () = WhenWoken::new(go_away_due(&mut phase, &activity, Some(shared.idle_timeout))), if !asked_to_go => {
                // GOAWAY: open streams finish.
                connection.as_mut().graceful_shutdown();
                asked_to_go = true;
            }
        }
    }
}

/// The most the protocol sniff reads at once: more than a usual request head, and less
/// than hyper's first read of a connection (8 KiB). A first read that filled hyper's
/// buffer would change how the buffer grows: a head arriving in one burst could then be
/// read to up to three times `max_header_bytes` before the parser stops it, not twice
/// (`listener::parser_head_limit`).
const FIRST_READ: usize = 4 * 1024;

/// Reads what the client has sent so far (at least the length of HTTP/2's preface, unless
/// a byte differs from it first), and puts it back to be read again. `Some(true)` for
/// HTTP/2 with prior knowledge, `Some(false)` for HTTP/1.1, `None` when the client closed
/// without a byte. Bounded by the deadline for a first request (`Deadlines`).
///
/// It waits for the first bytes holding no buffer, then takes all that has arrived in one
/// read: a usual request head reaches hyper whole. Reading only the preface's 24 bytes cost
/// each new connection a second read from the socket, and hyper a parse of a partial head
/// and a larger buffer (bench/README.md, "Sixth round").
async fn sniff<S: AsyncRead + ReadReady + Unpin>(
    io: &mut Deadlines<S>,
) -> std::io::Result<Option<bool>> {
    let mut first = BytesMut::new();
    let h2 = loop {
        std::future::poll_fn(|cx| io.poll_request(cx)).await?;
        if first.capacity() == 0 {
            first.reserve(FIRST_READ);
        }
        // One try: tokio may call a new socket readable before anything arrived, and the
        // buffer must not be held while waiting (a silent connection costs only its task).
        let n = match futures_util::poll!(std::pin::pin!(io.read_buf(&mut first))) {
            Poll::Ready(read) => read?,
            Poll::Pending if first.is_empty() => {
                first = BytesMut::new();
                continue;
            }
            Poll::Pending => continue,
        };
        let seen = first.len().min(H2_PREFACE.len());
        if n == 0 || first[..seen] != H2_PREFACE[..seen] {
            break false;
        }
        if seen == H2_PREFACE.len() {
            break true;
        }
    };
    if first.is_empty() {
        return Ok(None);
    }
    io.unread(first.freeze());
    Ok(Some(h2))
}

/// How a connection's error is reported: a head hyper's parser refused (it answered 431
/// itself; HTTP/1.1 only, HTTP/2 refuses per stream, unseen) is counted and summarised,
/// anything else (a reset, a deadline) is a debug line.
pub(super) fn connection_failed(
    shared: &Shared,
    peer: std::net::SocketAddr,
    err: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let head_too_large = err
        .downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_parse_too_large);
    if head_too_large {
        shared.telemetry.record_refused_head(431);
        shared.refused_heads.record("headers_too_large", peer, err);
    } else {
        tracing::debug!(%peer, "connection ended: {err}");
    }
}

/// Resolves when this connection should be asked to go: the server is draining and the
/// connection has carried a request (one that has not, e.g. just accepted, is asked right
/// after its first request arrives, so that request is still served); the server is
/// closing; or, given `h2_idle` (an HTTP/2 connection's `idle_timeout`), the connection
/// has had no stream open for that long.
pub(super) async fn go_away_due(
    phase: &mut watch::Receiver<Phase>,
    activity: &Activity,
    h2_idle: Option<Duration>,
) {
    loop {
        let now = *phase.borrow_and_update();
        if now >= Phase::Closing || (now == Phase::Draining && activity.protocol() != UNKNOWN) {
            return;
        }
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    // The server is gone; nothing more will be asked.
                    std::future::pending::<()>().await;
                }
            }
            () = activity.until(|a| a.protocol() != UNKNOWN), if now == Phase::Draining => {}
            () = activity.h2_idle_for(h2_idle) => return,
        }
    }
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
pub(super) const HTTP2: u8 = 2;

/// What a connection is doing, shared by its service (which sees requests start and
/// responses end), its deadlines and its drain.
#[derive(Default)]
pub(super) struct Activity {
    /// Requests whose response has not finished, and HTTP/1.1 request bodies still read.
    pub(super) busy: AtomicUsize,
    /// Requests finished so far; a change tells the deadlines a new wait began.
    pub(super) finished: AtomicU64,
    /// UNKNOWN until the first request, then HTTP1 or HTTP2.
    protocol: AtomicU8,
    /// Woken on the first request and, for HTTP/2, when it turns busy or idle.
    changed: Notify,
    /// The reader that last saw the connection busy: it has no deadline running, so it is
    /// woken when the connection turns idle, to start one (hyper may poll the read side
    /// before it drops the finished response body).
    pub(super) reader: AtomicWaker,
}

impl Activity {
    pub(super) fn protocol(&self) -> u8 {
        self.protocol.load(Ordering::Acquire)
    }

    fn begin(self: &Arc<Self>, version: Version) -> BusyGuard {
        let was_idle = self.busy.fetch_add(1, Ordering::AcqRel) == 0;
        let first = self.protocol() == UNKNOWN;
        if first {
            let protocol = if version == Version::HTTP_2 {
                HTTP2
            } else {
                HTTP1
            };
            self.protocol.store(protocol, Ordering::Release);
        }
        // Waiters exist only for the first request and for HTTP/2 idleness: HTTP/1.1
        // requests after the first wake nobody (no lock on the hot path).
        if first || (was_idle && self.protocol() == HTTP2) {
            self.changed.notify_waiters();
        }
        BusyGuard {
            activity: self.clone(),
            response: true,
        }
    }

    /// Counts an HTTP/1.1 request body as busy until the guard drops (see the service).
    fn reading(self: &Arc<Self>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard {
            activity: self.clone(),
            response: false,
        }
    }

    /// Resolves once `done` holds; checked again on every change.
    async fn until(&self, done: impl Fn(&Self) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once an HTTP/2 connection has had no stream open for `limit`; without
    /// one (an HTTP/1.1 connection, or one whose protocol is not known yet), never: it
    /// then waits on nothing, so a new connection's wait costs no `Notify` registration.
    async fn h2_idle_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            self.until(|a| a.protocol() == HTTP2 && a.busy.load(Ordering::Acquire) == 0)
                .await;
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.busy.load(Ordering::Acquire) != 0 {
                continue;
            }
            if tokio::time::timeout(limit, changed).await.is_err() {
                return;
            }
        }
    }
}

/// Held by a response body (or an HTTP/1.1 request body): the request counts as busy
/// until its response is finished (and its body read).
pub(super) struct BusyGuard {
    activity: Arc<Activity>,
    /// A response's guard: its end ends an exchange.
    response: bool,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let activity = &self.activity;
        if self.response {
            activity.finished.fetch_add(1, Ordering::AcqRel);
        }
        let now_idle = activity.busy.fetch_sub(1, Ordering::AcqRel) == 1;
        if now_idle {
            if activity.protocol() == HTTP2 {
                activity.changed.notify_waiters();
            } else {
                activity.reader.wake();
            }
        }
    }
}

/// A response body that keeps its request counted as busy until it is finished (or
/// dropped), so a long download is not mistaken for an idle connection.
pub(super) type Tracked<B> = Guarded<B, BusyGuard>;

/// HTTP/2 streams run as tasks of their own (hyper spawns them); this executor keeps them
/// owned by the server: counted in the drain's task tracker and dropped when the server is
/// cut, so a cut request still writes its access-log line before the process exits.
#[derive(Clone)]
pub(super) struct StreamExecutor {
    pub(super) tasks: TaskTracker,
    pub(super) phase: watch::Receiver<Phase>,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, stream: F) {
        let mut phase = self.phase.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stream => {}
                () = reached(&mut phase, Phase::Cut) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::task::{Context, Poll};
    use tokio::io::ReadBuf;

    /// A client that has sent `chunks`, each arriving as one read, then closes. An empty
    /// chunk is a read that finds nothing yet, though the socket was called readable.
    struct Arrived(VecDeque<&'static [u8]>);

    impl AsyncRead for Arrived {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.pop_front() {
                Some([]) => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Some(chunk) => buf.put_slice(chunk),
                None => {}
            }
            Poll::Ready(Ok(()))
        }
    }

    impl ReadReady for Arrived {
        fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Sniffs a connection whose client sent `chunks`; returns the verdict and what the
    /// connection's next read (hyper's first, with its 8 KiB buffer) gives.
    async fn sniffed(chunks: &[&'static [u8]]) -> (Option<bool>, Vec<u8>) {
        let activity = Arc::new(Activity::default());
        let timeout = Duration::from_secs(5);
        let arrived = Arrived(chunks.iter().copied().collect());
        let mut io = Deadlines::new(arrived, activity, timeout, timeout);
        let verdict = sniff(&mut io).await.unwrap();
        let mut first_read = vec![0; 8192];
        let n = io.read(&mut first_read).await.unwrap();
        first_read.truncate(n);
        (verdict, first_read)
    }

    #[tokio::test]
    async fn a_request_head_reaches_hyper_whole_in_its_first_read() {
        let head: &[u8] =
            b"GET /videos/v1/index?api-version=1 HTTP/1.1\r\nhost: azgate\r\naccept: */*\r\n\r\n";
        assert_eq!(sniffed(&[head]).await, (Some(false), head.to_vec()));
        // Called readable before anything arrived: the sniff waits again.
        assert_eq!(
            sniffed(&[b"", b"", head]).await,
            (Some(false), head.to_vec())
        );
    }

    #[tokio::test]
    async fn http2_s_preface_is_told_apart_even_when_it_arrives_in_pieces() {
        let settings: &[u8] = b"\0\0\0\x04\0\0\0\0\0";
        let (verdict, first_read) =
            sniffed(&[&H2_PREFACE[..10], &H2_PREFACE[10..], settings]).await;
        assert_eq!(verdict, Some(true));
        // Read until the preface was whole; the SETTINGS frame is the socket's next read.
        assert_eq!(first_read, H2_PREFACE.to_vec());

        let (verdict, first_read) = sniffed(&[&H2_PREFACE[..10], b"HTTP/1.1\r\n"]).await;
        assert_eq!(
            verdict,
            Some(false),
            "PRI with another version is not HTTP/2"
        );
        assert_eq!(first_read, b"PRI * HTTPHTTP/1.1\r\n".to_vec());

        assert_eq!(
            sniffed(&[]).await,
            (None, Vec::new()),
            "closed without a byte"
        );
    }

    #[test]
    fn a_request_body_keeps_the_connection_busy_until_it_is_read() {
        let activity = Arc::new(Activity::default());
        let response = activity.begin(Version::HTTP_11);
        let body = activity.reading();
        assert_eq!(activity.busy.load(Ordering::Acquire), 2);
        drop(response);
        // The exchange is over, but hyper may still read the body: not idle, no new wait.
        assert_eq!(activity.finished.load(Ordering::Acquire), 1);
        assert_eq!(activity.busy.load(Ordering::Acquire), 1);
        drop(body);
        assert_eq!(activity.finished.load(Ordering::Acquire), 1);
        assert_eq!(activity.busy.load(Ordering::Acquire), 0);
    }
}
