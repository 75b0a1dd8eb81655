//! The accept loop of the proxy listener, each connection's start (TLS handshake when
//! configured; `connection.rs` serves it from there), and the drain that ends them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::connection::{StreamExecutor, serve_http};
use super::failures::FailureLog;
use super::lifecycle::{Lifecycle, Phase, reached};
use super::tls::{self, TlsTerminator};
use crate::proxy::{ConnInfo, Proxy};
use crate::telemetry::Telemetry;

/// HTTP/2 pings keep idle client connections alive through NATs and detect dead peers.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// TCP keep-alive on accepted sockets, for the same reason over HTTP/1.1.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The TCP options of every accepted connection: small responses must not wait for
/// Nagle's algorithm, and keep-alive probes find dead peers. Set on the listening socket
/// before it listens, as Linux copies them into each connection it accepts: three
/// `setsockopt` calls fewer per connection. Other systems also get them per connection
/// (`serve`).
pub(super) fn set_connection_options(socket: socket2::SockRef<'_>) -> std::io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))
}

/// How the proxy listener serves connections, from `[server]`.
pub struct ListenerSettings {
    /// HTTPS when set.
    pub tls: Option<Arc<TlsTerminator>>,
    /// Bounds the TLS handshake, the wait for a new connection's first request, and each
    /// request head from its first byte (slowloris).
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// azgate answers heads over this with its own 431; hyper's parser stops at twice it.
    pub max_header_bytes: usize,
    /// Counts open connections and requests in flight.
    pub telemetry: Arc<Telemetry>,
    /// Request heads hyper's parser refused, summarised in the log.
    pub refused_heads: Arc<FailureLog>,
}

/// Connections (and their HTTP/2 streams) being served; drained on shutdown.
pub struct Connections {
    tasks: TaskTracker,
    telemetry: Arc<Telemetry>,
}

impl Connections {
    /// Waits for the connections to finish their requests and close (the lifecycle is
    /// `Closing`, so each has been asked to), at most `grace`, or until a second signal
    /// hurries it. What is still open then is cut: each cut request writes its
    /// access-log line with `complete=false`. Returns how many requests were cut.
    pub async fn drain(self, grace: Duration, lifecycle: &Lifecycle) -> i64 {
        self.tasks.close();
        let in_flight = self.telemetry.inflight_requests();
        tracing::info!(
            in_flight,
            "draining: waiting up to {} for requests in flight",
            humantime::format_duration(grace)
        );
        let finished = tokio::select! {
            () = self.tasks.wait() => true,
            () = tokio::time::sleep(grace) => false,
            () = lifecycle.hurried() => false,
        };
        if finished {
            tracing::info!("all connections closed");
            return 0;
        }
        let cut = self.telemetry.inflight_requests();
        lifecycle.advance(Phase::Cut);
        // Every connection and stream task stops at `Cut`; their requests log as they drop.
        self.tasks.wait().await;
        if cut > 0 {
            tracing::warn!(
                cut,
                "shutdown: {cut} request(s) still in flight were cut (grace {}; see the \
                 access-log lines with complete=false)",
                humantime::format_duration(grace)
            );
        } else {
            tracing::info!("closed the remaining idle connections");
        }
        cut
    }
}

/// What a connection task needs, shared by all of them.
pub(super) struct Shared {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<StreamExecutor>,
    pub(super) proxy: Proxy,
    tls: Option<Arc<TlsTerminator>>,
    pub(super) handshake_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) refused_heads: Arc<FailureLog>,
}

/// Accepts and serves connections until the lifecycle reaches `Closing`; then stops
/// accepting (the listener is dropped) and returns the connections still open.
pub async fn accept_until(
    listener: TcpListener,
    proxy: Proxy,
    settings: ListenerSettings,
    mut phase: watch::Receiver<Phase>,
) -> Connections {
    let head_limit = parser_head_limit(settings.max_header_bytes);
    let tasks = TaskTracker::new();
    let mut http1 = http1::Builder::new();
    // The header and idle deadlines are kept by `connection::Deadlines`: hyper's own
    // header timer starts when a connection turns idle, so it would make the keep-alive
    // idle timeout equal to the header timeout.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(head_limit)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(StreamExecutor {
        tasks: tasks.clone(),
        phase: phase.clone(),
    });
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .max_header_list_size(u32::try_from(head_limit).unwrap_or(u32::MAX))
        .adaptive_window(true);
    let shared = Arc::new(Shared {
        http1,
        http2,
        proxy,
        tls: settings.tls,
        handshake_timeout: settings.header_timeout,
        idle_timeout: settings.idle_timeout,
        telemetry: settings.telemetry.clone(),
        refused_heads: settings.refused_heads,
    });
    let limit = Arc::new(Semaphore::new(
        settings.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));

    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = accept(&listener, &limit) => match accepted {
                Ok((stream, peer, permit)) => {
                    backoff.succeeded();
                    let (shared, phase, mut cut) = (shared.clone(), phase.clone(), phase.clone());
                    // Dropped when the server is cut, handshake included. The connection
                    // future is made inside `select!`: a future made before it would take
                    // its (several KiB) space twice in the task. Boxed: a future not yet
                    // started is as large as its largest state (1.6 KiB), and tokio moves
                    // a task's future three times as it spawns it; the box moves once.
                    tasks.spawn(Box::pin(async move {
                        tokio::select! {
                            () = serve(stream, peer, permit, shared, phase) => {}
                            () = reached(&mut cut, Phase::Cut) => {}
                        }
                    }));
                }
                Err(err) => {
                    let (pause, report) = backoff.failed(&err, Instant::now());
                    if let Some(report) = report {
                        tracing::warn!("{report}");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = reached(&mut phase, Phase::Closing) => break,
                    }
                }
            },
            () = reached(&mut phase, Phase::Closing) => break,
        }
    }
    tracing::info!("stopped accepting connections");
    Connections {
        tasks,
        telemetry: settings.telemetry,
    }
}

/// First pause after a failed accept.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause: the listener is retried at least this often.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// At most one log line about failed accepts per this interval.
const ACCEPT_REPORT_EVERY: Duration = Duration::from_secs(5);

/// Failed accepts (usually EMFILE: out of file descriptors) pause the loop instead of
/// spinning, longer each time up to a second, and are logged as a count at most every
/// few seconds instead of once per attempt. Pending clients wait in the backlog meanwhile.
#[derive(Default)]
struct AcceptBackoff {
    pause: Duration,
    failures: u64,
    last_report: Option<Instant>,
}

impl AcceptBackoff {
    /// Records a failure at `now`; returns the pause before the next attempt and the
    /// line to log, if one is due.
    fn failed(&mut self, err: &std::io::Error, now: Instant) -> (Duration, Option<String>) {
        self.failures += 1;
        self.pause = (self.pause * 2).clamp(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX);
        let due = self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_REPORT_EVERY);
        let report = due.then(|| {
            let line = format!(
                "accept failed {} time(s) since the last report: {err}; new connections wait \
                 in the backlog (retrying at least every {})",
                self.failures,
                humantime::format_duration(ACCEPT_PAUSE_MAX)
            );
            self.failures = 0;
            self.last_report = Some(now);
            line
        });
        (self.pause, report)
    }

    fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// Takes a connection slot, then a connection. The slot comes first so that, at the limit,
/// new clients wait in the kernel's listen backlog rather than in azgate's memory.
async fn accept(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = limit
        .clone()
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// One connection, from the TLS handshake (when configured) until it closes. Runs in its
/// own task so a slow handshake never holds up the accept loop; the connection slot is
/// released when it ends.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
) {
    let _open = shared.telemetry.connection();
    #[cfg(not(target_os = "linux"))]
    if let Err(err) = set_connection_options(socket2::SockRef::from(&stream)) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY or TCP keep-alive: {err}");
    }
    let Some(terminator) = &shared.tls else {
        return serve_http(stream, ConnInfo::plain(peer), &shared, phase).await;
    };
    // Boxed, as the TLS stream is below: the task's size is that of its largest state for
    // its whole life, and rustls' connection state (about 1.2 KiB) would otherwise be
    // counted twice in it, once in the handshake and once in the connection.
    let handshake = Box::pin(tokio::time::timeout(
        shared.handshake_timeout,
        terminator.acceptor().accept(stream),
    ));
    let stream = match handshake.await {
        Ok(Ok(stream)) => Box::new(stream),
        Ok(Err(err)) => {
            terminator.handshake_failed(peer, &err);
            return;
        }
        Err(_) => {
            terminator.handshake_timed_out(peer);
            return;
        }
    };
    let conn = ConnInfo {
        peer,
        tls: true,
        client_subject: tls::client_subject(stream.get_ref().1),
    };
    serve_http(stream, conn, &shared, phase).await;
}

/// The request head size at which hyper's parser refuses a request itself (a plain 431,
/// and over HTTP/1.1 a closed connection), before azgate sees it. Twice azgate's own limit,
/// so heads up to twice `server.max_header_bytes` still get azgate's JSON 431 with an
/// access-log line, while what a connection can buffer for a head stays bounded (hyper's
/// default is ~400 KiB for HTTP/1.1). hyper's HTTP/1.1 buffer cannot be under 8 KiB.
fn parser_head_limit(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_mul(2).max(8192)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off_and_are_reported_every_few_seconds() {
        let mut backoff = AcceptBackoff::default();
        let emfile = std::io::Error::from_raw_os_error(24);
        let started = Instant::now();
        let mut pauses = Vec::new();
        let mut reports = Vec::new();
        // Twelve seconds of a listener failing every time.
        while started.elapsed() < Duration::from_secs(12) {
            let (pause, report) = backoff.failed(&emfile, Instant::now());
            pauses.push(pause);
            reports.extend(report);
            tokio::time::advance(pause).await;
        }
        assert_eq!(pauses[0], ACCEPT_PAUSE_MIN);
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), ACCEPT_PAUSE_MAX);
        assert!(pauses.len() < 30, "{} attempts in 12 s", pauses.len());
        assert_eq!(reports.len(), 3, "{reports:#?}");
        assert!(
            reports[0].starts_with("accept failed 1 time(s)"),
            "{}",
            reports[0]
        );
        assert!(
            reports[1].contains("too many open files")
                || reports[1].contains("Too many open files"),
            "{}",
            reports[1]
        );
        // The second report counts what happened in between.
        assert!(
            !reports[1].starts_with("accept failed 1 time(s)"),
            "{}",
            reports[1]
        );

        backoff.succeeded();
        let (pause, _) = backoff.failed(&emfile, Instant::now());
        assert_eq!(pause, ACCEPT_PAUSE_MIN, "a success resets the backoff");
    }
}
