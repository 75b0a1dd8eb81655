//! Graceful shutdown: stop accepting, let in-flight requests finish within the grace
//! period, report draining on /readyz, and give up on requests that outlive the grace.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use support::{Azgate, MockUpstream, client, full, status};
use tokio::sync::{Notify, mpsc};

/// An upstream that reports each request and answers only when `release` is notified.
async fn held_upstream() -> (MockUpstream, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (arrived_tx, arrived) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let upstream = {
        let release = release.clone();
        MockUpstream::start(move |_req| {
            let release = release.clone();
            let arrived_tx = arrived_tx.clone();
            async move {
                let _ = arrived_tx.send(());
                release.notified().await;
                Response::new(full("finished after shutdown began"))
            }
        })
        .await
    };
    (upstream, arrived, release)
}

async fn refuses_connections(addr: std::net::SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn in_flight_request_finishes_after_shutdown_begins() {
    let (upstream, mut arrived, release) = held_upstream().await;
    let gw = Azgate::start(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    ))
    .await;
    let admin = gw.admin_url.clone().unwrap();
    let c = client();
    assert_eq!(status(c.get(format!("{admin}/readyz"))).await, 200);

    let in_flight = tokio::spawn(c.get(format!("{}/slow", gw.url)).send());
    arrived.recv().await.unwrap();

    let addr = gw.addr;
    gw.shutdown();
    assert!(
        refuses_connections(addr).await,
        "still accepting after shutdown"
    );
    let ready = c.get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("draining"));
    assert_eq!(status(c.get(format!("{admin}/healthz"))).await, 200);

    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "finished after shutdown began"
    );
    tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("drained once the request finished");
}

#[tokio::test]
async fn requests_outliving_the_grace_period_are_cut_off() {
    let (upstream, mut arrived, _release) = held_upstream().await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"300ms\"\n[admin]\nlisten = \"\"\n\
         [[routes]]\nprefix = \"/\"\nupstream = \"{}\"\n",
        upstream.url
    );
    let gw = Azgate::start_with(&text, std::path::Path::new("."), &Default::default()).await;
    assert!(gw.admin_url.is_none());
    let in_flight = tokio::spawn(client().get(format!("{}/never", gw.url)).send());
    arrived.recv().await.unwrap();

    let started = std::time::Instant::now();
    gw.stop().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the cut-off request must fail, not succeed"
    );
}

/// Sends `GET path` on `stream` and reads the answer (its body has a Content-Length).
/// Returns the head, lower-cased, and the body.
async fn exchange(stream: &mut tokio::net::TcpStream, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.1\r\nHost: azgate\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
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
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closes `stream` within `limit` (EOF or reset).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn draining_config(upstream: &str, drain_delay: &str) -> String {
    support::config_text(&format!(
        "[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n"
    ))
    .replace(
        "[server]\n",
        &format!("[server]\ndrain_delay = \"{drain_delay}\"\n"),
    )
}

#[tokio::test]
async fn from_sigterm_http1_keep_alive_clients_are_told_to_reconnect() {
    let upstream = MockUpstream::start(|_| async { Response::new(full("ok")) }).await;
    let gw = Azgate::start_with(
        &draining_config(&upstream.url, "3s"),
        std::path::Path::new("."),
        &Default::default(),
    )
    .await;
    let addr = gw.addr;
    // Served one request, now an idle keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (head, _) = exchange(&mut idle, "/before").await;
    assert!(!head.contains("connection: close"), "{head}");
    // Connected before SIGTERM, no request sent yet.
    let mut fresh = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    gw.shutdown();
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)).await,
        "an idle keep-alive connection stays open after SIGTERM"
    );
    // Its first request is still served, and told to go.
    let (head, body) = exchange(&mut fresh, "/during").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut fresh, Duration::from_secs(1)).await);
    // drain_delay is not over: new connections are accepted, served, and told to go too.
    let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (head, _) = exchange(&mut late, "/late").await;
    assert!(
        head.starts_with("http/1.1 200") && head.contains("connection: close"),
        "{head}"
    );
    // So a pooled client's next request simply goes on a new connection.
    let c = client();
    for _ in 0..3 {
        assert_eq!(status(c.get(format!("{}/pooled", gw.url))).await, 200);
    }
    tokio::time::timeout(Duration::from_secs(10), gw.stop())
        .await
        .expect("stopped");
}

#[tokio::test]
async fn from_sigterm_http2_connections_get_goaway() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let upstream = MockUpstream::start(|_| async { Response::new(full("ok")) }).await;
    let gw = Azgate::start_with(
        &draining_config(&upstream.url, "3s"),
        std::path::Path::new("."),
        &Default::default(),
    )
    .await;
    let addr = gw.addr;
    let open = || async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        (sender, tokio::spawn(connection))
    };
    let get = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    let (mut before, before_connection) = open().await;
    let response = before.send_request(get("/before")).await.unwrap();
    assert_eq!(response.status(), 200);

    gw.shutdown();
    // GOAWAY with no stream open ends the client's connection, long before drain_delay.
    tokio::time::timeout(Duration::from_secs(1), before_connection)
        .await
        .expect("no GOAWAY after SIGTERM")
        .unwrap()
        .unwrap();
    // A client that connects during the drain is served, then sent away as well.
    let (mut during, during_connection) = open().await;
    let response = during.send_request(get("/during")).await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::timeout(Duration::from_secs(1), during_connection)
        .await
        .expect("no GOAWAY for a connection made during the drain")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), gw.stop())
        .await
        .expect("stopped");
}

/// `azgate serve` (JSON logs, no admin listener) in front of `upstream`.
fn serve_with_grace(upstream: &str, grace: &str) -> (tempfile::TempDir, support::binary::Serve) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"{grace}\"\n[admin]\nlisten = \"\"\n\
             [log]\nformat = \"json\"\n[[routes]]\nprefix = \"/\"\nupstream = \"{upstream}\"\n"
        ),
    )
    .unwrap();
    let serve = support::binary::Serve::start(&path);
    (dir, serve)
}

/// The access-log lines of the requests to `paths` (JSON, parsed).
fn access_lines(lines: &[String], paths: &[&str]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["target"] == "azgate::access")
        .filter(|e| paths.contains(&e["path"].as_str().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_at_the_grace_period_are_logged_and_counted() {
    let (upstream, mut arrived, _release) = held_upstream().await;
    let (_dir, mut serve) = serve_with_grace(&upstream.url, "300ms");
    let http1 = tokio::spawn(client().get(format!("{}/http1", serve.proxy)).send());
    let http2 = tokio::spawn(
        support::h2c_client()
            .get(format!("{}/http2", serve.proxy))
            .send(),
    );
    arrived.recv().await.unwrap();
    arrived.recv().await.unwrap();

    serve.signal("TERM");
    let status = serve
        .exit_within(Duration::from_secs(5))
        .expect("exited after the grace period");
    assert_eq!(status.code(), Some(1), "cut requests make a failed exit");
    assert!(http1.await.unwrap().is_err());
    assert!(http2.await.unwrap().is_err());
    let lines = serve.drain_lines().to_vec();
    let cut = access_lines(&lines, &["/http1", "/http2"]);
    assert_eq!(
        cut.len(),
        2,
        "one line per cut request:\n{}",
        lines.join("\n")
    );
    for event in &cut {
        assert_eq!(event["complete"], false, "{event}");
        assert_eq!(event["status"], 0, "no response was sent: {event}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("2 request(s) still in flight were cut") && l.contains("WARN")),
        "{}",
        lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_logs_what_it_cut() {
    let (upstream, mut arrived, _release) = held_upstream().await;
    let (_dir, mut serve) = serve_with_grace(&upstream.url, "60s");
    let in_flight = tokio::spawn(client().get(format!("{}/held", serve.proxy)).send());
    arrived.recv().await.unwrap();

    serve.signal("TERM");
    serve.wait_for_line("draining: waiting up to 1m", Duration::from_secs(5));
    let second = std::time::Instant::now();
    serve.signal("TERM");
    let status = serve
        .exit_within(Duration::from_secs(5))
        .expect("still running 5 s after the second SIGTERM (grace is 60 s)");
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(1), "cut requests make a failed exit");
    assert!(in_flight.await.unwrap().is_err());
    let lines = serve.drain_lines().to_vec();
    let cut = access_lines(&lines, &["/held"]);
    assert_eq!(cut.len(), 1, "{}", lines.join("\n"));
    assert_eq!(cut[0]["complete"], false, "{}", cut[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("1 request(s) still in flight were cut")),
        "{}",
        lines.join("\n")
    );
}
