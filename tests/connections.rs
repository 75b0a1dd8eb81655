//! Client connections: the keep-alive idle timeout apart from the header timeout, the
//! listen backlog, the open-files limit, and what a failing accept does.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use http::Response;
use support::binary::Serve;
use support::{Azgate, MockUpstream, full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn azgate(upstream: &str, server: &str) -> Azgate {
    let text = support::config_text(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n"
    ))
    .replace("[server]\n", &format!("[server]\n{server}\n"));
    Azgate::start_with(&text, Path::new("."), &HashMap::new()).await
}

/// Sends `GET path` and reads the answer up to its (Content-Length) body; returns the
/// status line.
async fn get(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                return head.lines().next().unwrap_or_default().to_string();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
        data.extend_from_slice(&chunk[..n]);
    }
}

/// How long until the server closes `stream`, if it does within `limit`.
async fn closes_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => None,
    }
}

#[tokio::test]
async fn keep_alive_connections_close_after_the_idle_timeout_not_the_header_timeout() {
    let upstream = MockUpstream::start(|_| async { Response::new(full("ok")) }).await;

    // A short idle timeout closes an idle keep-alive connection, long before the header
    // timeout would.
    let gw = azgate(
        &upstream.url,
        "idle_timeout = \"300ms\"\nheader_timeout = \"10s\"",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut conn, "/one").await, "http/1.1 200 ok");
    let closed = closes_after(&mut conn, Duration::from_secs(3))
        .await
        .expect("an idle keep-alive connection outlived idle_timeout");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
    gw.stop().await;

    // A short header timeout no longer closes an idle keep-alive connection...
    let gw = azgate(
        &upstream.url,
        "idle_timeout = \"10s\"\nheader_timeout = \"300ms\"",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut conn, "/one").await, "http/1.1 200 ok");
    assert_eq!(
        closes_after(&mut conn, Duration::from_secs(1)).await,
        None,
        "the keep-alive wait was cut at header_timeout"
    );
    assert_eq!(get(&mut conn, "/two").await, "http/1.1 200 ok");
    // ...but still bounds a request head, from its first byte.
    conn.write_all(b"GET /three HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let closed = closes_after(&mut conn, Duration::from_secs(3))
        .await
        .expect("a stalled request head was not cut");
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_response_is_not_idle() {
    let upstream = MockUpstream::start(|request| async move {
        if request.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        Response::new(full("ok"))
    })
    .await;
    let gw = azgate(
        &upstream.url,
        "idle_timeout = \"300ms\"\nheader_timeout = \"300ms\"",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut conn, "/slow").await, "http/1.1 200 ok");
    assert_eq!(get(&mut conn, "/fast").await, "http/1.1 200 ok");
    gw.stop().await;
}

#[tokio::test]
async fn idle_http2_connections_get_goaway_after_the_idle_timeout() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let upstream = MockUpstream::start(|_| async { Response::new(full("ok")) }).await;
    let gw = azgate(&upstream.url, "idle_timeout = \"300ms\"").await;
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{}/x", gw.addr))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), connection)
        .await
        .expect("an idle HTTP/2 connection outlived idle_timeout")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    gw.stop().await;
}

/// How many of `n` new connections the kernel completes while azgate accepts none.
async fn queued_connections(addr: std::net::SocketAddr, n: usize) -> (usize, Vec<TcpStream>) {
    let mut open = Vec::new();
    for _ in 0..n {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            open.push(stream);
        }
    }
    (open.len(), open)
}

#[tokio::test]
async fn the_listen_backlog_is_configurable() {
    let upstream = MockUpstream::echo().await;
    // At max_connections azgate accepts nothing more: the kernel queues up to the backlog
    // (Linux: backlog + 1) and drops further handshakes.
    let gw = azgate(&upstream.url, "max_connections = 1\nbacklog = 2").await;
    let mut held = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut held, "/held").await, "http/1.1 200 ok");
    let (queued, _open) = queued_connections(gw.addr, 10).await;
    assert!(
        (2..=4).contains(&queued),
        "{queued} queued with backlog = 2"
    );
    drop(held);
    gw.stop().await;

    // The default follows net.core.somaxconn, far above what this test opens.
    let gw = azgate(&upstream.url, "max_connections = 1").await;
    let mut held = TcpStream::connect(gw.addr).await.unwrap();
    assert_eq!(get(&mut held, "/held").await, "http/1.1 200 ok");
    let (queued, _open) = queued_connections(gw.addr, 10).await;
    assert_eq!(queued, 10);
    drop(held);
    gw.stop().await;
}

fn write_config(dir: &Path, upstream: &str, server: &str) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n[admin]\nlisten = \"\"\n\
             [log]\nformat = \"json\"\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_files_limit_is_raised_to_the_hard_limit_and_checked() {
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &upstream.url, "max_connections = 100");

    // A low soft limit under a higher hard one is raised.
    let hard: u64 = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(u64::MAX);
    assert!(
        hard > 300,
        "this test needs a hard open-files limit above 300"
    );
    let mut serve = Serve::start_under(&path, Some("ulimit -Sn 256"));
    let line = serve.wait_for_line("open-files limit raised", Duration::from_secs(5));
    assert!(line.contains("from 256 to"), "{line}");
    drop(serve);

    // A hard limit too low for max_connections is reported at start.
    let path = write_config(dir.path(), &upstream.url, "max_connections = 1000");
    let mut serve = Serve::start_under(&path, Some("ulimit -n 256"));
    let line = serve.wait_for_line("open-files limit is 256", Duration::from_secs(5));
    assert!(
        line.contains("\"level\":\"WARN\"") && line.contains("2064"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_quietly_and_recovers() {
    let upstream = MockUpstream::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &upstream.url, "max_connections = 1000");
    let mut serve = Serve::start_under(&path, Some("ulimit -n 48"));
    let addr: std::net::SocketAddr = serve.proxy.trim_start_matches("http://").parse().unwrap();

    // More connections than descriptors: accept fails with EMFILE.
    let mut open = Vec::new();
    for _ in 0..60 {
        open.push(TcpStream::connect(addr).await.unwrap());
    }
    serve.wait_for_line("accept failed", Duration::from_secs(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports = serve
        .drain_lines()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert_eq!(reports, 1, "one report per 5 s, not one per attempt");

    // Descriptors come back: the waiting connections are accepted and served.
    let mut waiting = open.pop().unwrap();
    drop(open);
    let started = Instant::now();
    assert_eq!(get(&mut waiting, "/x").await, "http/1.1 200 ok");
    assert!(started.elapsed() < Duration::from_secs(3));
}
