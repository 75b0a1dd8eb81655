//! One upstream's connections. HTTP/1.1 connections wait idle between requests (the most
//! recently used goes first); when ALPN takes `h2`, requests share an HTTP/2 connection,
//! as many at once as its server allows (`settings.rs` reads the limit, `streams.rs`
//! counts), and another is opened when every one is full. Idle connections close after
//! [`IDLE_TIMEOUT`], before common server and load-balancer idle timeouts (60 s and up),
//! so azgate never reuses one the other side is closing.
//!
//! A route holds its upstream's pool directly (found once, when the route is built), so a
//! request takes a connection with one short lock and no lookup.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::connect::{ConnectError, Endpoint};
use super::settings::SettingsReader;
use super::streams::{StreamSlot, Streams};
use crate::proxy::body::{Guarded, ProxyBody};

/// How long a connection stays unused in the pool at least (checked every [`REAP_EVERY`],
/// so it goes within one more check).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const REAP_EVERY: Duration = Duration::from_secs(5);
const IDLE_TICKS: u64 = IDLE_TIMEOUT.as_secs() / REAP_EVERY.as_secs();
/// The most of one response azgate holds unread for a slow client (HTTP/2); also what a
/// single download may have in flight: 1 MiB is 100 MB/s at a 10 ms round trip.
const H2_STREAM_WINDOW: u32 = 1 << 20;
/// 256 streams' windows: servers allow 100 to 128 streams at a time.
const H2_CONNECTION_WINDOW: u32 = 256 << 20;
/// A request the upstream closed a reused connection under before it was sent goes on
/// another connection, at most this many times (then on a new one, or it fails).
const MAX_UNSENT_RETRIES: u32 = 3;

pub(super) struct HostPool {
    endpoint: Endpoint,
    /// `Host` for HTTP/1.1 requests, from the upstream URI (without a default port).
    host: HeaderValue,
    h2: http2::Builder<TokioExecutor>,
    state: Mutex<State>,
    /// Held while an HTTP/2 connection is being opened: the requests that arrive
    /// meanwhile wait to share it (if it has room) instead of opening their own.
    opening_h2: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    idle: Vec<Idle>,
    /// Live HTTP/2 connections; a request takes the first with a stream to spare.
    shared: Vec<Shared>,
    /// The upstream took h2 the last time it was asked (assumed for `https://`).
    prefers_h2: bool,
    /// The reaper's clock: one tick per [`REAP_EVERY`] while it runs.
    tick: u64,
    /// HTTP/2 connections opened so far.
    generations: u64,
    reaping: bool,
}

struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: u64,
}

struct Shared {
    sender: http2::SendRequest<ProxyBody>,
    streams: Arc<Streams>,
    last_used: u64,
    /// Tells this connection from the one that replaces it.
    generation: u64,
}

enum Conn {
    H1(http1::SendRequest<ProxyBody>),
    /// With the connection's generation and the request's stream on it.
    H2(http2::SendRequest<ProxyBody>, u64, StreamSlot),
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    Connect(ConnectError),
    Http(hyper::Error),
    /// The upstream refused the request before processing it: an HTTP/2 stream refused
    /// (`REFUSED_STREAM`) or left out by a graceful GOAWAY (RFC 9113, 8.7). Safe to send
    /// again whatever the method; the connection is not used for new requests.
    Unprocessed(hyper::Error),
}

impl HostPool {
    pub(super) fn new(endpoint: Endpoint, uri: &Uri) -> Self {
        let host = uri
            .authority()
            .and_then(|authority| {
                let default_port = if endpoint.is_https() { 443 } else { 80 };
                let text = match authority.port_u16() {
                    Some(port) if port != default_port => authority.as_str(),
                    _ => authority.host(),
                };
                HeaderValue::from_str(text).ok()
            })
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        // A response is read as fast as its client takes it, so each stream keeps up to its
        // window of unread data. The connection's window holds every stream's: slow
        // clients cannot use up the window the other responses need (an adaptive window
        // sets both to one size, and one unread response then stalls the connection).
        h2.timer(TokioTimer::new())
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW);
        let state = State {
            prefers_h2: endpoint.is_https(),
            ..State::default()
        };
        Self {
            endpoint,
            host,
            h2,
            state: Mutex::new(state),
            opening_h2: tokio::sync::Mutex::new(()),
        }
    }

    /// Sends `request` (absolute URI) on a pooled or new connection. A request the
    /// upstream never received because a reused connection had closed is sent again; one
    /// it refused unprocessed is reported so, for the retry policy to send again.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let uri = request.uri().clone();
        let mut unsent_retries = 0;
        loop {
            let (conn, reused) = self.checkout().await.map_err(SendError::Connect)?;
            let mut added_host = false;
            let mut error: TrySendError<Request<ProxyBody>> = match conn {
                Conn::H2(mut sender, generation, stream) => {
                    let err = match sender.try_send_request(request).await {
                        Ok(response) => return Ok(held(response, Lease::Http2(stream))),
                        Err(err) => err,
                    };
                    let refused = match err.message() {
                        None => refusal(err.error()),
                        // Never sent on a new connection whose server said GOAWAY first.
                        Some(_) if !reused && stream.going_away() => Some(Refusal::GoingAway),
                        // Never sent otherwise: sent again below if the connection was reused.
                        Some(_) => None,
                    };
                    match refused {
                        Some(refusal) => {
                            if refusal == Refusal::GoingAway {
                                self.retire_h2(generation);
                            }
                            return Err(SendError::Unprocessed(err.into_error()));
                        }
                        None => err,
                    }
                }
                Conn::H1(mut sender) => {
                    added_host = self.to_origin_form(&mut request);
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            let lease = Lease::Http1(Http1Lease {
                                sender: Some(sender),
                                pool: Arc::downgrade(self),
                            });
                            return Ok(held(response, lease));
                        }
                        Err(err) => err,
                    }
                }
            };
            match error.take_message() {
                Some(unsent) if reused && unsent_retries < MAX_UNSENT_RETRIES => {
                    unsent_retries += 1;
                    request = unsent;
                    *request.uri_mut() = uri.clone();
                    if added_host {
                        request.headers_mut().remove(HOST);
                    }
                }
                _ => return Err(SendError::Http(error.into_error())),
            }
        }
    }

    /// HTTP/1.1 wants `GET /path` and a `Host` header (unless a route set its own);
    /// returns whether `Host` was added.
    fn to_origin_form(&self, request: &mut Request<ProxyBody>) -> bool {
        let origin = match request.uri().path_and_query() {
            Some(path) => Uri::from(path.clone()),
            None => Uri::from_static("/"),
        };
        *request.uri_mut() = origin;
        let headers = request.headers_mut();
        if headers.contains_key(HOST) {
            return false;
        }
        headers.insert(HOST, self.host.clone());
        true
    }

    /// A live pooled connection, or a new one; and whether it was reused.
    async fn checkout(self: &Arc<Self>) -> Result<(Conn, bool), ConnectError> {
        let prefers_h2 = {
            let mut state = self.lock();
            if let Some(conn) = state.reuse() {
                return Ok((conn, true));
            }
            state.prefers_h2
        };
        // One HTTP/2 connection opened at a time; those who waited share it if it has room.
        let _opening = if prefers_h2 {
            let opening = self.opening_h2.lock().await;
            let mut state = self.lock();
            if let Some(conn) = state.reuse() {
                return Ok((conn, true));
            }
            // Unless the one just opened took HTTP/1.1: each request then opens its own.
            state.prefers_h2.then_some(opening)
        } else {
            None
        };
        // Boxed: a new connection is rare, and its future (connect, TLS and HTTP
        // handshakes, ~1.2 KiB) held inline would be part of every request's future.
        Ok((Box::pin(self.open()).await?, false))
    }

    async fn open(self: &Arc<Self>) -> Result<Conn, ConnectError> {
        let connected = self.endpoint.connect().await?;
        if connected.h2 {
            let streams = Streams::new();
            let io = TokioIo::new(SettingsReader::new(connected.stream, streams.clone()));
            let (sender, connection) = self
                .h2
                .handshake(io)
                .await
                .map_err(|err| ConnectError::handshake(err.into()))?;
            let ended = streams.clone();
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("upstream HTTP/2 connection ended: {err}");
                }
                ended.settle();
            });
            // Those waiting to share the connection learn its limit first: sent before the
            // server's SETTINGS arrive, a burst would go past it (waiting or refused).
            streams.settled().await;
            let stream = streams.force();
            let mut state = self.lock();
            state.prefers_h2 = true;
            // Kept for the next requests even if another one has room again by now (its
            // requests ended meanwhile): the reaper closes whichever goes unused.
            state.generations += 1;
            let generation = state.generations;
            let last_used = state.tick;
            state.shared.push(Shared {
                sender: sender.clone(),
                streams,
                last_used,
                generation,
            });
            self.reap_while_pooled(&mut state);
            Ok(Conn::H2(sender, generation, stream))
        } else {
            let (sender, connection) = http1::Builder::new()
                .handshake(TokioIo::new(connected.stream))
                .await
                .map_err(|err| ConnectError::handshake(err.into()))?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!("upstream HTTP/1.1 connection ended: {err}");
                }
            });
            self.lock().prefers_h2 = false;
            Ok(Conn::H1(sender))
        }
    }

    /// An HTTP/2 connection that is going away takes no new requests: the next ones open
    /// a new connection (its open streams finish on the old one).
    fn retire_h2(&self, generation: u64) {
        self.lock().shared.retain(|s| s.generation != generation);
    }

    /// Pools an HTTP/1.1 connection again.
    fn release(self: &Arc<Self>, sender: http1::SendRequest<ProxyBody>) {
        let mut state = self.lock();
        let since = state.tick;
        state.idle.push(Idle { sender, since });
        self.reap_while_pooled(&mut state);
    }

    /// Starts the reaper unless it runs; it stops when nothing is pooled.
    fn reap_while_pooled(self: &Arc<Self>, state: &mut State) {
        if !state.reaping {
            state.reaping = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever a panicking holder did: every change is
        // a single push, pop or assignment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Idle HTTP/1.1 connections and shared HTTP/2 ones.
    #[cfg(test)]
    pub(super) fn pooled(&self) -> (usize, usize) {
        let state = self.lock();
        (state.idle.len(), state.shared.len())
    }
}

impl State {
    fn reuse(&mut self) -> Option<Conn> {
        if !self.shared.is_empty() {
            self.shared
                .retain(|s| !s.sender.is_closed() && !s.streams.going_away());
            for shared in &mut self.shared {
                if let Some(stream) = shared.streams.take() {
                    shared.last_used = self.tick;
                    return Some(Conn::H2(shared.sender.clone(), shared.generation, stream));
                }
            }
        }
        while let Some(idle) = self.idle.pop() {
            if idle.sender.is_ready() {
                return Some(Conn::H1(idle.sender));
            }
        }
        None
    }
}

async fn reap(pool: Weak<HostPool>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(pool) = pool.upgrade() else { return };
        let mut state = pool.lock();
        state.tick += 1;
        let now = state.tick;
        // Unused for more than IDLE_TICKS whole ticks: closed 50 to 55 s after its last use.
        state
            .idle
            .retain(|idle| now - idle.since <= IDLE_TICKS && !idle.sender.is_closed());
        for shared in &mut state.shared {
            // In use while it carries a request (a long download, say): idle from its end.
            if shared.streams.open() > 0 {
                shared.last_used = now;
            }
        }
        state
            .shared
            .retain(|s| now - s.last_used <= IDLE_TICKS && !s.sender.is_closed());
        if state.idle.is_empty() && state.shared.is_empty() {
            state.reaping = false;
            return;
        }
    }
}

/// An upstream response's body, holding its request's share of the connection until
/// dropped.
pub type UpstreamBody = Guarded<Incoming, Lease>;

/// The response with its body holding `lease`.
fn held(response: Response<Incoming>, lease: Lease) -> Response<UpstreamBody> {
    response.map(|incoming| Guarded::new(incoming, lease))
}

/// The most of an unwanted response's body [`discard`] reads to keep its connection, and
/// for how long: the answers azgate retries (429, 504, a refused credential) are short.
const DISCARD_AT_MOST: u64 = 64 << 10;
const DISCARD_WITHIN: Duration = Duration::from_secs(1);

/// Lets go of a response azgate does not pass on (it tries again instead). An HTTP/1.1
/// connection whose response is dropped before its end closes, and the next attempt would
/// open a new one (with a TLS handshake) just when the upstream is struggling; so the rest
/// of a short body is read first, in the background (at most 64 KiB, within 1 s), and its
/// connection goes back to the pool. A longer or slower body still closes it. Over HTTP/2
/// the response is simply dropped: that ends its stream alone.
pub fn discard(response: Response<UpstreamBody>) {
    let mut body = response.into_body();
    let http1 = matches!(body.guard(), Lease::Http1(_));
    if !http1 || body.is_end_stream() || body.size_hint().lower() > DISCARD_AT_MOST {
        return;
    }
    tokio::spawn(async move {
        let read_to_end = async {
            let mut read = 0;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > DISCARD_AT_MOST {
                    return;
                }
            }
        };
        // Whether it ended or not, `body` is dropped now: pooled if it ended, else closed.
        let _ = tokio::time::timeout(DISCARD_WITHIN, read_to_end).await;
    });
}

/// What a response body holds of its connection.
pub enum Lease {
    /// A whole HTTP/1.1 connection, pooled again when the body is dropped.
    Http1(Http1Lease),
    /// The request's stream on a shared HTTP/2 connection.
    Http2(StreamSlot),
}

/// An HTTP/1.1 connection lent to one response. The body is dropped once it has been sent
/// on (or abandoned); the connection then goes back to the pool, at once if it has read
/// the response to the end, which is the usual case, or else when it has (hyper reads
/// what is left of an abandoned body if it can, and closes the connection otherwise).
pub struct Http1Lease {
    sender: Option<http1::SendRequest<ProxyBody>>,
    pool: Weak<HostPool>,
}

impl Drop for Http1Lease {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                pool.release(sender);
            }
            return;
        }
        if sender.is_closed() {
            return;
        }
        // Dropped outside the runtime (as it shuts down): the connection just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = self.pool.clone();
        runtime.spawn(async move {
            if sender.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.release(sender);
            }
        });
    }
}

#[derive(PartialEq)]
enum Refusal {
    /// `REFUSED_STREAM`: this stream only (too many at once, say).
    Stream,
    /// A graceful GOAWAY (`NO_ERROR`) left the stream out: the connection takes no more.
    GoingAway,
}

/// How the upstream said it did not process the request, if it did.
fn refusal(err: &hyper::Error) -> Option<Refusal> {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return match h2.reason() {
                Some(h2::Reason::REFUSED_STREAM) => Some(Refusal::Stream),
                Some(h2::Reason::NO_ERROR) if h2.is_go_away() && h2.is_remote() => {
                    Some(Refusal::GoingAway)
                }
                _ => None,
            };
        }
        source = cause.source();
    }
    None
}
