//! Idle client connections hold no HTTP state: an HTTP/1.1 connection is parked between
//! requests (hyper's buffers freed, `azgate_connections_idle` counts it) and served again
//! when bytes arrive, without losing pipelined bytes or a request body still being read.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use http::Response;
use support::{Azgate, MockUpstream, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn azgate(upstream: &str) -> Azgate {
    // One attempt: a request body is streamed to the upstream, not held for a retry first.
    let text = support::config_text(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n[routes.retry]\nmax_attempts = 1\n"
    ));
    Azgate::start_with(&text, Path::new("."), &HashMap::new()).await
}

async fn idle(gw: &Azgate) -> f64 {
    let samples = support::metrics::scrape(gw.admin_url.as_deref().unwrap()).await;
    samples[&("azgate_connections_idle".to_string(), vec![])]
}

/// Waits (up to 3 s) until `azgate_connections_idle` is `want`.
async fn idle_becomes(gw: &Azgate, want: f64) {
    for _ in 0..60 {
        if idle(gw).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(idle(gw).await, want, "azgate_connections_idle");
}

/// Reads answers until `n` complete ones (Content-Length bodies) have arrived; returns
/// their status lines and bodies.
async fn answers(stream: &mut TcpStream, n: usize) -> Vec<(String, String)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut found = Vec::new();
    loop {
        while let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() < end + 4 + length {
                break;
            }
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).to_string();
            found.push((head.lines().next().unwrap_or_default().to_string(), body));
            data.drain(..end + 4 + length);
        }
        if found.len() >= n {
            return found;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(read > 0, "closed after {found:?}");
        data.extend_from_slice(&chunk[..read]);
    }
}

fn echo_path()
-> impl Fn(http::Request<hyper::body::Incoming>) -> std::future::Ready<Response<support::Body>>
+ Send
+ Sync
+ 'static {
    |request| std::future::ready(Response::new(full(request.uri().path().to_string())))
}

#[tokio::test]
async fn keep_alive_connections_are_parked_between_requests_and_served_again() {
    let upstream = MockUpstream::start(echo_path()).await;
    let gw = azgate(&upstream.url).await;

    // A connection that has sent nothing holds no HTTP state either.
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    idle_becomes(&gw, 1.0).await;
    for path in ["/one", "/two"] {
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let got = answers(&mut conn, 1).await;
        assert_eq!(got, [("http/1.1 200 ok".to_string(), path.to_string())]);
        // Parked after each answer, served again on the next request.
        idle_becomes(&gw, 1.0).await;
    }
    drop(conn);
    idle_becomes(&gw, 0.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_not_lost_across_parking() {
    let upstream = MockUpstream::start(echo_path()).await;
    let gw = azgate(&upstream.url).await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();

    // Two whole requests and the start of a third in one write: hyper reads them together,
    // and the third's first bytes must survive the connection being let go.
    conn.write_all(
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHo",
    )
    .await
    .unwrap();
    let got = answers(&mut conn, 2).await;
    assert_eq!(
        got,
        [
            ("http/1.1 200 ok".to_string(), "/a".to_string()),
            ("http/1.1 200 ok".to_string(), "/b".to_string()),
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.write_all(b"st: a\r\n\r\n").await.unwrap();
    let got = answers(&mut conn, 1).await;
    assert_eq!(got, [("http/1.1 200 ok".to_string(), "/c".to_string())]);
    idle_becomes(&gw, 1.0).await;
    gw.stop().await;
}

#[tokio::test]
async fn the_rest_of_a_body_answered_early_is_never_read_as_a_request() {
    // The upstream answers at once, without waiting for the body azgate streams to it.
    let upstream = MockUpstream::start(|_| async { Response::new(full("early")) }).await;
    let gw = azgate(&upstream.url).await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n0123456789")
        .await
        .unwrap();
    let got = answers(&mut conn, 1).await;
    assert_eq!(got, [("http/1.1 200 ok".to_string(), "early".to_string())]);
    // The rest of the body after a pause, then a request: the body's bytes must not be
    // taken for a request head once the connection sat quiet (hyper closes it instead).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = conn
        .write_all(b"abcdefghij\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), conn.read_to_end(&mut rest)).await;
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("HTTP/1.1 400"), "{rest}");
    gw.stop().await;
}
