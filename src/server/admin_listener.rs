//! The admin listener: accepts on `admin.listen`, terminates `[admin.tls]` when set, and
//! serves each request with `admin::respond`. Stops when the server's file watchers do,
//! after the proxy's drain, so `/readyz` can report the drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::lifecycle::stopped;
use super::tls::TlsTerminator;
use crate::admin::{self, AdminState};

/// A client must finish its TLS handshake and request head within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head the admin endpoints read (hyper answers 431 beyond it): room
/// for a browser's cookies on the status page, and a bound on what a connection can hold.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The admin listener and what it serves.
pub(super) struct AdminListener {
    pub(super) listener: Option<TcpListener>,
    /// `[admin.tls]`, when set.
    pub(super) tls: Option<Arc<TlsTerminator>>,
    pub(super) state: Arc<AdminState>,
}

/// Serves admin requests until `stop` turns true.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    tls: Option<Arc<TlsTerminator>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!("admin listener accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        tokio::spawn(serve_connection(stream, peer, state.clone(), tls.clone()));
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AdminState>,
    tls: Option<Arc<TlsTerminator>>,
) {
    let service = {
        let state = state.clone();
        service_fn(move |request| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(admin::respond(&request, peer, &state)) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    builder.http2().max_header_list_size(MAX_HEAD_BYTES as u32);
    let result = match &tls {
        Some(tls) => {
            let handshake = tls.acceptor().accept(stream);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(stream)) => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Ok(Err(err)) => {
                    tls.handshake_failed(peer, &err);
                    return;
                }
                Err(_) => {
                    tls.handshake_timed_out(peer);
                    return;
                }
            }
        }
        None => {
            builder
                .serve_connection(TokioIo::new(stream), service)
                .await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, "admin connection ended: {err}");
    }
}
