//! An HTTP/1.1 client connection (after `connection.rs` has told it from HTTP/2), served by
//! one hyper connection per busy spell and parked in between: while the client is quiet
//! between requests the stream waits on its own, and hyper's read and write buffers, its
//! parser state and the boxed service future (together about 30 KiB) are freed.
//!
//! `Deadlines` decides when hyper lets go (the exchange is over, everything written is
//! flushed, no head has begun, the client quiet for 100 ms) and keeps the deadlines across the
//! handover: the keep-alive idle timeout runs on while parked, the header timeout from a
//! head's first byte. Bytes hyper read but did not parse (part of a pipelined request)
//! come back with the stream and are read again first.

use std::future::poll_fn;
use std::net::SocketAddr;

use http_body::Body;
use hyper::body::Incoming;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::connection::{Activity, connection_failed, go_away_due};
use super::deadlines::{Deadlines, ReadReady};
use super::lifecycle::Phase;
use super::listener::Shared;
use super::woken::WhenWoken;

/// Serves the connection until it closes, goes away (drain) or fails.
pub(super) async fn serve<S, Svc, B>(
    mut io: Deadlines<S>,
    mut service: Svc,
    shared: &Shared,
    peer: SocketAddr,
    mut phase: watch::Receiver<Phase>,
    activity: &Activity,
) where
    S: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
    Svc: HttpService<Incoming, ResBody = B> + Unpin,
    Svc::Future: Unpin,
    Svc::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        io.parkable = true;
        io.parked = false;
        // Boxed: freed while parked, and the task keeps its (small) size meanwhile.
        let mut connection = Box::new(shared.http1.serve_connection(TokioIo::new(io), service));
        let mut asked_to_go = false;
        let result = loop {
            tokio::select! {
                result = poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
                () = WhenWoken::new(go_away_due(&mut phase, activity, None)), if !asked_to_go => {
                    // An idle connection closes now, a busy one after its response (with
                    // `Connection: close`).
                    std::pin::Pin::new(&mut *connection).graceful_shutdown();
                    asked_to_go = true;
                }
            }
        };
        let hyper::server::conn::http1::Parts {
            io: returned,
            read_buf,
            service: returned_service,
            ..
        } = connection.into_parts();
        (io, service) = (returned.into_inner(), returned_service);
        io.parkable = false;
        // Let go on purpose: hyper ended cleanly, or saw the end of a pipelined head's
        // first part (which it hands back unparsed).
        let parked = io.parked
            && result
                .as_ref()
                .map_or_else(|e| e.is_incomplete_message(), |()| true);
        if !parked {
            match result {
                Ok(()) => io.shut_down().await,
                Err(err) => connection_failed(shared, peer, &err),
            }
            return;
        }
        if !read_buf.is_empty() {
            io.unread(read_buf);
            continue;
        }
        // Even empty, it holds hyper's read buffer.
        drop(read_buf);
        let _idle = shared.telemetry.idle_connection();
        tokio::select! {
            ready = poll_fn(|cx| io.poll_request(cx)) => match ready {
                Ok(()) => {}
                // The keep-alive idle timeout: closed as hyper closes an idle connection.
                Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                    return io.shut_down().await;
                }
                Err(err) => return connection_failed(shared, peer, &err),
            },
            () = WhenWoken::new(go_away_due(&mut phase, activity, None)) => {
                return io.shut_down().await;
            }
        }
    }
}
