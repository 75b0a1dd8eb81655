//! The accept loop of the proxy listener, and the drain that ends it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use std::sync::Arc;

use crate::proxy::{ConnInfo, Proxy};

/// HTTP/2 pings keep idle client connections alive through NATs and detect dead peers.
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// TCP keep-alive on accepted sockets, for the same reason over HTTP/1.1.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Connections being served; drained on shutdown.
pub struct Connections {
    graceful: GracefulShutdown,
    tasks: JoinSet<()>,
}

impl Connections {
    /// Asks every connection to finish its in-flight requests and close, waiting at most
    /// `grace`; connections still open after that are closed.
    pub async fn drain(mut self, grace: Duration) {
        let open = self.tasks.len();
        tracing::info!(
            open,
            "draining connections (grace {})",
            humantime::format_duration(grace)
        );
        let finished = tokio::time::timeout(grace, async {
            self.graceful.shutdown().await;
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        match finished {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => {
                tracing::warn!(
                    open = self.tasks.len(),
                    "grace period over; closing the remaining connections"
                );
                self.tasks.abort_all();
            }
        }
    }
}

/// Accepts and serves connections until `stopped` turns true; then stops accepting
/// (the listener is dropped) and returns the connections still open.
pub async fn accept_until(
    listener: TcpListener,
    proxy: Proxy,
    header_timeout: Duration,
    mut stopped: watch::Receiver<bool>,
) -> Connections {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
        .adaptive_window(true);

    let mut connections = Connections {
        graceful: GracefulShutdown::new(),
        tasks: JoinSet::new(),
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => serve(stream, peer, &builder, &proxy, &mut connections),
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.tasks.join_next(), if !connections.tasks.is_empty() => {}
            () = crate::admin::stopped(&mut stopped) => break,
        }
    }
    tracing::info!("stopped accepting connections");
    connections
}

fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    proxy: &Proxy,
    connections: &mut Connections,
) {
    // Small responses must not wait for Nagle's algorithm.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY: {err}");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(err) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, "cannot set TCP keep-alive: {err}");
    }
    let proxy = proxy.clone();
    let conn = Arc::new(ConnInfo::plain(peer));
    let service = service_fn(move |request| {
        let (proxy, conn) = (proxy.clone(), conn.clone());
        async move { Ok::<_, Infallible>(proxy.handle(request, &conn).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .into_owned();
    let conn = connections.graceful.watch(conn);
    connections.tasks.spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%peer, "connection ended: {err}");
        }
    });
}
